"""FFTW wisdom persisted in a per-user cache directory.

FFTW_MEASURE planning costs up to seconds per shape; its result ("wisdom") is
exported after each new plan and imported once per process before the first
one, so a second process plans the same shapes instantly.

The file lives in ``$FFTCONV_CACHE_DIR``, else ``$XDG_CACHE_HOME/fftconv``,
else ``~/.cache/fftconv``.  It is JSON (never pickle), tagged with a format
version and the pyFFTW version; a file that is unreadable, corrupt or from
another version is ignored with a :class:`WisdomWarning`, never fatal.
Writes go to a temporary file first and are moved into place atomically.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import warnings
from pathlib import Path

FORMAT_VERSION = 1
FILE_NAME = "fftw-wisdom.json"

log = logging.getLogger(__name__)
#: Held around every FFTW planning call and every wisdom import/export: FFTW's
#: planner and wisdom are not thread-safe, and pyFFTW plans without the GIL.
planner_lock = threading.RLock()
_lock = planner_lock
_imported = False


class WisdomWarning(UserWarning):
    """The wisdom cache could not be read or written; planning goes on without it."""


def cache_dir() -> Path:
    """The per-user cache directory fftconv writes to (not created here)."""
    if os.environ.get("FFTCONV_CACHE_DIR"):
        return Path(os.environ["FFTCONV_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fftconv"


def wisdom_path() -> Path:
    return cache_dir() / FILE_NAME


def _pyfftw_version() -> str:
    import pyfftw
    return str(getattr(pyfftw, "__version__", "unknown"))


def _read(path: Path):
    """The wisdom tuple stored at ``path``, or ``None`` (with a warning) if unusable."""
    try:
        data = json.loads(path.read_text(encoding="ascii"))
        if data.get("format") != FORMAT_VERSION or data.get("pyfftw") != _pyfftw_version():
            raise ValueError(f"written by another version ({data.get('format')}, "
                             f"pyfftw {data.get('pyfftw')})")
        wisdom = tuple(s.encode("ascii") for s in data["wisdom"])
        if len(wisdom) != 3:
            raise ValueError("expected 3 wisdom strings")
        return wisdom
    except FileNotFoundError:
        return None
    except Exception as exc:  # corrupt, unreadable, wrong types: all the same to us
        warnings.warn(f"fftconv: ignoring FFTW wisdom file {path}: {exc}", WisdomWarning,
                      stacklevel=3)
        return None


def load_once() -> bool:
    """Import the stored wisdom into FFTW, the first time only; True if some was imported."""
    global _imported
    with _lock:
        if _imported:
            return False
        _imported = True
        wisdom = _read(wisdom_path())
        if wisdom is None:
            return False
        import pyfftw
        ok = pyfftw.import_wisdom(wisdom)
        if not all(ok):
            log.debug("FFTW rejected part of the stored wisdom: %s", ok)
        return any(ok)


def write_json(path: Path, data) -> None:
    """Write ``data`` as JSON to ``path`` atomically (temporary file, then rename),
    so a reader never sees half a file.  Raises ``OSError``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save() -> None:
    """Export FFTW's current wisdom to the cache file (atomically); warn on failure."""
    import pyfftw
    path = wisdom_path()
    with _lock:
        data = {"format": FORMAT_VERSION, "pyfftw": _pyfftw_version(),
                "wisdom": [w.decode("ascii") for w in pyfftw.export_wisdom()]}
        try:
            write_json(path, data)
        except OSError as exc:
            warnings.warn(f"fftconv: could not save FFTW wisdom to {path}: {exc}", WisdomWarning,
                          stacklevel=3)


def forget_loaded_state() -> None:
    """Let the next :func:`load_once` read the file again (for tests)."""
    global _imported
    with _lock:
        _imported = False
