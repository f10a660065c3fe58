"""Process-wide settings: FFT backend, threads, FFTW planner effort, memory.

Every setting can be given by environment variable at start-up and changed
at run time with :func:`configure` (process-wide) or temporarily with
:func:`using` (for the current thread or asyncio task only, via a
``contextvars.ContextVar``, so concurrent ``using`` blocks never leak into
each other).
Plans are cached per setting value, so changing a setting never reuses a plan
built under another one.

* ``backend`` (``FFTCONV_BACKEND``): ``"pyfftw"`` if importable, else
  ``"scipy"``.
* ``threads`` (``FFTCONV_THREADS``): all cores this process may use.  It is
  the knob for FFTW and pocketfft; BLAS (the channel contraction and the
  direct path) follows its own settings (``OPENBLAS_NUM_THREADS`` or
  threadpoolctl).
* ``planner_effort`` (``FFTCONV_PLANNER_EFFORT``): ``"FFTW_MEASURE"``.
* ``planning_timelimit`` (``FFTCONV_PLANNING_TIME``): 2.0 seconds per FFTW
  plan, so that planning never takes minutes; wisdom makes later processes
  plan instantly (``fftconv.wisdom``).
* ``measure`` (``FFTCONV_MEASURE=1``): ``False``.  With ``True``,
  ``algorithm="auto"`` times the candidates once per geometry instead of
  trusting the cost model (``fftconv.selection``).
* ``max_workspace_bytes`` (``FFTCONV_MAX_WORKSPACE``): ``None`` (no limit).
  Bounds the FFT buffers of the stateless ``forward``/``backward``; above it
  the batch is processed in chunks.
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import numbers
import os
import threading
from typing import Optional

BACKENDS = ("pyfftw", "scipy")
PLANNER_EFFORTS = ("FFTW_ESTIMATE", "FFTW_MEASURE", "FFTW_PATIENT", "FFTW_EXHAUSTIVE")


def _pyfftw_available() -> bool:
    try:
        import pyfftw  # noqa: F401
    except ImportError:
        return False
    return True


def available_cores() -> int:
    """Cores this process may run on (honours CPU affinity where the OS has it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


@dataclasses.dataclass(frozen=True)
class Settings:
    """One immutable snapshot of the settings; part of every plan's cache key."""

    backend: str
    threads: int
    planner_effort: str
    planning_timelimit: float
    max_workspace_bytes: Optional[int] = None
    measure: bool = False


def _validate(s: Settings) -> Settings:
    if s.backend not in BACKENDS:
        raise ValueError(f"fftconv.configure: backend must be one of {BACKENDS}, "
                         f"got backend={s.backend!r}")
    if s.backend == "pyfftw" and not _pyfftw_available():
        raise ValueError("fftconv.configure: backend='pyfftw' needs the pyfftw package, "
                         "which is not installed; use backend='scipy'")
    if not isinstance(s.threads, numbers.Integral) or isinstance(s.threads, bool) or s.threads < 1:
        raise ValueError(f"fftconv.configure: threads must be an int >= 1, got threads={s.threads!r}")
    if s.planner_effort not in PLANNER_EFFORTS:
        raise ValueError(f"fftconv.configure: planner_effort must be one of {PLANNER_EFFORTS}, "
                         f"got planner_effort={s.planner_effort!r}")
    if not isinstance(s.planning_timelimit, numbers.Real) or not s.planning_timelimit > 0:
        raise ValueError("fftconv.configure: planning_timelimit must be > 0 seconds, "
                         f"got planning_timelimit={s.planning_timelimit!r}")
    if not isinstance(s.measure, bool):
        raise ValueError(f"fftconv.configure: measure must be a bool, got measure={s.measure!r}")
    budget = s.max_workspace_bytes
    if budget is not None and (not isinstance(budget, numbers.Integral) or isinstance(budget, bool)
                               or budget < 1):
        raise ValueError("fftconv.configure: max_workspace_bytes must be None or an int >= 1, "
                         f"got max_workspace_bytes={budget!r}")
    return s


def _from_environment() -> Settings:
    env = os.environ.get
    return _validate(Settings(
        backend=env("FFTCONV_BACKEND", "pyfftw" if _pyfftw_available() else "scipy"),
        threads=int(env("FFTCONV_THREADS", available_cores())),
        planner_effort=env("FFTCONV_PLANNER_EFFORT", "FFTW_MEASURE"),
        planning_timelimit=float(env("FFTCONV_PLANNING_TIME", 2.0)),
        max_workspace_bytes=int(env("FFTCONV_MAX_WORKSPACE")) if env("FFTCONV_MAX_WORKSPACE") else None,
        measure=env("FFTCONV_MEASURE", "0") not in ("", "0", "false", "False"),
    ))


_lock = threading.Lock()
_current = _from_environment()


_override: contextvars.ContextVar = contextvars.ContextVar("fftconv_settings", default=None)


def get_settings() -> Settings:
    """The settings in force now, in this thread or task."""
    return _override.get() or _current


def configure(**changes) -> Settings:
    """Change settings (``backend``, ``threads``, ``planner_effort``,
    ``planning_timelimit``, ``max_workspace_bytes``, ``measure``); returns the
    previous settings."""
    global _current
    with _lock:
        previous = _current
        try:
            _current = _validate(dataclasses.replace(_current, **changes))
        except TypeError as exc:
            raise TypeError(f"fftconv.configure: {exc}") from None
    return previous


@contextlib.contextmanager
def using(**changes):
    """Context manager: ``with fftconv.using(backend="scipy"): ...``.

    The changes apply to the current thread (or asyncio task) only.
    """
    try:
        settings = _validate(dataclasses.replace(get_settings(), **changes))
    except TypeError as exc:
        raise TypeError(f"fftconv.using: {exc}") from None
    token = _override.set(settings)
    try:
        yield settings
    finally:
        _override.reset(token)
