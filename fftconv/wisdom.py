"""FFTW wisdom persisted in the per-user cache directory.

FFTW_MEASURE planning costs up to seconds per shape; its result ("wisdom") is
imported once per process before the first plan, so a second process plans
the same shapes instantly.  New wisdom is saved in batches: the first new plan
saves at once, later ones at most once per :data:`SAVE_INTERVAL`, and what is
left at exit (or on :func:`flush`).  Each save re-reads and merges the whole
file, so saving after every plan made planning cost more as the cache grew.

The file is ``fftw-wisdom.json`` in ``cachefile.cache_dir()``.  It is JSON
(never pickle), tagged with a format version and the pyFFTW version, and
holds FFTW's three wisdom strings (double, single, long double precision).
It is validated when read: a file that is unreadable, corrupt or from another
version is ignored, and a string that is not text or that FFTW rejects is
dropped; either way one :class:`WisdomWarning` says so and the file is
rewritten with what is usable.  Saving merges: under the file's lock the
wisdom already in the file is imported into FFTW (which merges it with its
own) and the union is written back, so processes planning at the same time
lose nothing.  Nothing here is fatal.
"""
from __future__ import annotations

import atexit
import logging
import math
import threading
import time
import warnings

from . import cachefile

FORMAT_VERSION = 1
FILE_NAME = "fftw-wisdom.json"
#: FFTW's wisdom strings, in ``pyfftw.export_wisdom()`` order.
PRECISIONS = ("double", "single", "long double")

log = logging.getLogger(__name__)
#: Held around every FFTW planning call and every wisdom import/export: FFTW's
#: planner and wisdom are not thread-safe, and pyFFTW plans without the GIL.
planner_lock = threading.RLock()
_lock = planner_lock
_imported = False

#: Seconds between two saves of new wisdom (the first new plan saves at once).
SAVE_INTERVAL = 30.0
_unsaved = False             # FFTW holds wisdom the file does not have yet
_last_save = -math.inf       # time.monotonic() of the last save


class WisdomWarning(UserWarning):
    """The wisdom cache could not be read or written; planning goes on without it."""


def wisdom_path():
    return cachefile.cache_dir() / FILE_NAME


def _pyfftw_version() -> str:
    import pyfftw
    return str(getattr(pyfftw, "__version__", "unknown"))


def _entries(data) -> list:
    """The wisdom strings of a file's JSON ``data`` as bytes, ``None`` for one that
    is not ASCII text.  Raises ``ValueError`` for a file that is not ours or
    is from another version."""
    if not isinstance(data, dict):
        raise ValueError("not a wisdom file")
    if data.get("format") != FORMAT_VERSION or data.get("pyfftw") != _pyfftw_version():
        raise ValueError(f"written by another version (format {data.get('format')!r}, "
                         f"pyfftw {data.get('pyfftw')!r})")
    strings = data.get("wisdom")
    if not isinstance(strings, list) or len(strings) != len(PRECISIONS):
        raise ValueError(f"expected a list of {len(PRECISIONS)} wisdom strings")
    return [s.encode("ascii") if isinstance(s, str) and s.isascii() else None for s in strings]


def _import(entries) -> list:
    """Import the usable ``entries`` into FFTW; the precisions it could not use."""
    import pyfftw
    ok = pyfftw.import_wisdom(tuple(e or b"" for e in entries))
    return [name for name, entry, good in zip(PRECISIONS, entries, ok) if not good]


def _warn(message: str) -> None:
    """Warn from one place in this module: Python's default filter then shows
    each message once per process, however many plans run into it."""
    warnings.warn(message, WisdomWarning, stacklevel=1)


def load_once() -> bool:
    """Import the stored wisdom into FFTW, the first time only; True if some was
    imported.  An unusable file or entry is dropped with one warning, and the
    file rewritten with what FFTW could use."""
    global _imported
    with _lock:
        if _imported:
            return False
        _imported = True
        path = wisdom_path()
        try:
            data = cachefile.read_json(path)
            if data is None:
                return False
            rejected = _import(_entries(data))
        except (OSError, ValueError) as exc:  # unreadable, not JSON, not ours
            _warn(f"fftconv: ignoring FFTW wisdom file {path}: {cachefile.reason(exc)}")
            _rewrite()
            return False
        if rejected:
            _warn(f"fftconv: dropped the {', '.join(rejected)} precision FFTW wisdom in {path}, "
                  f"which this FFTW rejects; the file is rewritten without it")
            _rewrite()
        return len(rejected) < len(PRECISIONS)


def _merged(current) -> dict:
    """The file's JSON after merging: its usable wisdom imported into FFTW, then
    FFTW's whole wisdom exported."""
    import pyfftw
    try:
        if current is not None:
            _import(_entries(current))
    except ValueError:
        pass  # another version's or a corrupt file: replaced by ours
    return {"format": FORMAT_VERSION, "pyfftw": _pyfftw_version(),
            "wisdom": [w.decode("ascii") for w in pyfftw.export_wisdom()]}


def _rewrite() -> bool:
    """Merge FFTW's wisdom into the file; False (with one warning) if it cannot."""
    path = wisdom_path()
    try:
        cachefile.update(path, _merged)
    except OSError as exc:
        _warn(f"fftconv: could not save FFTW wisdom to {path}: {cachefile.reason(exc)}")
        return False
    return True


def _save_locked() -> None:
    """Save, keeping the batch pending when the file cannot be written."""
    global _unsaved, _last_save
    _last_save = time.monotonic()
    _unsaved = not _rewrite()


def planned() -> None:
    """Note that FFTW planned something new: save it now if the last save is at
    least :data:`SAVE_INTERVAL` seconds old, else with the next batch."""
    global _unsaved
    with _lock:
        _unsaved = True
        if time.monotonic() - _last_save >= SAVE_INTERVAL:
            _save_locked()


def flush() -> None:
    """Merge the wisdom planned since the last save into the cache file now; warn
    on failure (the batch then stays pending)."""
    with _lock:
        if _unsaved:
            _save_locked()


#: Seconds the exit hook waits for a planner that another thread holds.
EXIT_WAIT = 5.0


def _flush_at_exit() -> None:
    """:func:`flush` at a normal exit, unless another thread holds the planner
    past :data:`EXIT_WAIT` (a daemon thread mid-plan must not hang the exit).  A
    process killed by a signal runs no exit hook: call :func:`flush` first."""
    if _lock.acquire(timeout=EXIT_WAIT):
        try:
            flush()
        finally:
            _lock.release()


atexit.register(_flush_at_exit)


def forget_loaded_state() -> None:
    """Let the next :func:`load_once` read the file again and the next new plan
    save at once (for tests)."""
    global _imported, _last_save
    with _lock:
        _imported, _last_save = False, -math.inf
