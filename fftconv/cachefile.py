"""The per-user cache directory and the JSON files in it (FFTW wisdom, choices).

Several processes may use one cache at once (a process pool, two notebooks),
so every write is a merge: under an exclusive lock on a sidecar file
(``.<name>.lock``, ``fcntl.flock``), the writer reads the file's current
contents, merges its own into them (the caller's ``merge``) and replaces the
file atomically (a temporary file, then ``os.replace``), so a reader never
sees half a file and no process loses another's entries.  Where ``fcntl``
does not exist (Windows) the merge still happens, without the lock.

Nothing here is fatal to the caller's computation: failures are ``OSError``
for the caller to turn into one warning.  :func:`reason` words them without
the temporary file's random name, so that Python's default warning filter,
which shows a given message once per place, shows each kind of failure once.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Optional

fcntl: Optional[ModuleType]
try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

#: Seconds a writer waits for another process's lock before giving up (and
#: warning): writes take milliseconds, so this only fires when a process died
#: in an odd state or the file system does not support locks.
LOCK_TIMEOUT = 10.0


def cache_dir() -> Path:
    """The per-user cache directory fftconv writes to (not created here):
    ``$FFTCONV_CACHE_DIR``, else ``$XDG_CACHE_HOME/fftconv``, else
    ``~/.cache/fftconv``."""
    if os.environ.get("FFTCONV_CACHE_DIR"):
        return Path(os.environ["FFTCONV_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fftconv"


def reason(exc: BaseException) -> str:
    """A short, stable description of why reading or writing failed: an
    ``OSError``'s ``strerror`` (never the file name it carries), else the
    exception's own text."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def read_json(path: Path):
    """The JSON value stored at ``path``; ``None`` if there is no file.  Raises
    ``OSError`` (unreadable) or ``ValueError`` (not JSON, not UTF-8)."""
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        return None
    return json.loads(text)


def _write_json(path: Path, data) -> None:
    """Write ``data`` as JSON to ``path`` atomically (temporary file, then rename)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def locked(path: Path, timeout: float = LOCK_TIMEOUT):
    """Hold the exclusive lock of ``path`` (on ``.<name>.lock`` beside it).

    ``flock`` locks belong to an open file, so threads of one process exclude
    each other as processes do.  Raises ``OSError`` if the lock file cannot be
    created (a read-only cache) and ``TimeoutError`` after ``timeout`` seconds.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o666)
    try:
        deadline = time.monotonic() + timeout
        while fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"timed out after {timeout:g} s waiting for the lock "
                                       f"of {path.name}") from None
                time.sleep(0.005)
        yield
    finally:
        os.close(fd)  # releases the lock


def update(path: Path, merge):
    """Replace ``path``'s JSON with ``merge(current)`` under its lock, where
    ``current`` is what the file holds now (``None`` if it is missing,
    unreadable or not JSON: ``merge`` decides what to keep).  Returns what was
    written.  Raises ``OSError`` if the file cannot be locked or written."""
    with locked(path):
        try:
            current = read_json(path)
        except (OSError, ValueError):
            current = None
        data = merge(current)
        _write_json(path, data)
    return data
