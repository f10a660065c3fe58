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
  the knob for FFTW and pocketfft, and it bounds BLAS (the channel
  contraction and the direct path) inside each fftconv call
  (``fftconv.runtime``, threadpoolctl).
* ``planner_effort`` (``FFTCONV_PLANNER_EFFORT``): ``"FFTW_MEASURE"``.
* ``planning_timelimit`` (``FFTCONV_PLANNING_TIME``): 2.0 seconds per FFTW
  plan, so that planning never takes minutes; wisdom makes later processes
  plan instantly (``fftconv.wisdom``).
* ``measure`` (``FFTCONV_MEASURE``, one of ``0/1``, ``true/false``,
  ``yes/no``, ``on/off`` in any case): ``False``.  With ``True``,
  ``algorithm="auto"`` times the candidates once per geometry instead of
  trusting the cost model (``fftconv.autoselect``).
* ``compiled`` (``FFTCONV_COMPILED``, a bool as for ``measure``): ``True``.
  Where numba is installed (the ``compiled`` extra), the channel products of
  numpy layers run as compiled kernels (``fftconv.compiled``); ``False``
  keeps numpy's batched GEMMs.  Without numba it changes nothing.
* ``max_workspace_bytes`` (``FFTCONV_MAX_WORKSPACE``): ``None`` (no limit).
  Bounds the FFT buffers of the stateless ``forward``/``backward``; above it
  the batch is processed in chunks.  ``FFTCONV_MAX_WORKSPACE=1e9`` is read
  as the int 1000000000.
* ``engine_cache_bytes`` (``FFTCONV_ENGINE_CACHE_BYTES``): 1 GiB, and
  ``engine_cache_entries`` (``FFTCONV_ENGINE_CACHE_ENTRIES``): 16.  The
  stateless ``forward``/``backward``/``vjp`` (and ``fftconv.dask``'s blocks)
  keep the engines they build, with their FFT plans, buffers and weight
  spectra, in one process-wide LRU cache bounded by these; idle engines
  beyond either bound are dropped.  ``fftconv.clear_caches()`` empties it.
  They are process-wide only: :func:`configure` sets them, :func:`using`
  refuses them, and they are not part of any cache key.

The environment is read once, at import, and can never make ``import
fftconv`` fail: an unusable value is ignored with one :class:`SettingsWarning`
that names the variable, and the default is used; an empty variable counts as
unset (as Python's own ``PYTHON*`` variables do).  ``threads`` above the
cores available to the process is clamped to them, with a warning, wherever
it comes from.  Wrong values given to :func:`configure` and :func:`using` are
errors (``fftconv.checks``): ``TypeError`` for the wrong kind of value,
``ValueError`` for a bad one.
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import math
import os
import threading
import warnings
from typing import Optional

from .checks import (BACKENDS, PLANNER_EFFORTS, check_keywords, check_not_given,  # noqa: F401
                     check_settings)


class SettingsWarning(UserWarning):
    """A setting was unusable (from the environment) or clamped (threads); fftconv
    goes on with the default or the clamped value."""


@functools.lru_cache(maxsize=None)
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


#: The engine cache's default bounds: 1 GiB and 16 engines.
ENGINE_CACHE_BYTES = 1 << 30
ENGINE_CACHE_ENTRIES = 16
#: Settings that only :func:`configure` changes (they bound process-wide caches).
PROCESS_WIDE = ("engine_cache_bytes", "engine_cache_entries")


@dataclasses.dataclass(frozen=True)
class Settings:
    """One immutable snapshot of the settings; part of every plan's cache key."""

    backend: str
    threads: int
    planner_effort: str
    planning_timelimit: float
    max_workspace_bytes: Optional[int] = None
    measure: bool = False
    compiled: bool = True
    # the engine cache's bounds: process-wide, and not part of any cache key
    engine_cache_bytes: int = dataclasses.field(default=ENGINE_CACHE_BYTES, compare=False)
    engine_cache_entries: int = dataclasses.field(default=ENGINE_CACHE_ENTRIES, compare=False)


#: The setting names, in order (``configure``'s keywords).
NAMES = tuple(f.name for f in dataclasses.fields(Settings))


def _defaults() -> dict:
    return dict(backend="pyfftw" if _pyfftw_available() else "scipy",
                threads=available_cores(), planner_effort="FFTW_MEASURE",
                planning_timelimit=2.0, max_workspace_bytes=None, measure=False,
                compiled=True, engine_cache_bytes=ENGINE_CACHE_BYTES, engine_cache_entries=ENGINE_CACHE_ENTRIES)


def _clamp_threads(values: dict, source: str, stacklevel: int) -> dict:
    """``values`` with ``threads`` at most :func:`available_cores`, warning if it
    was above; ``source`` says where the value came from, in the warning."""
    cores = available_cores()
    if values["threads"] <= cores:
        return values
    warnings.warn(f"{source} asks for more threads than the {cores} cores available to this "
                  f"process (os.sched_getaffinity); using threads={cores}", SettingsWarning,
                  stacklevel=stacklevel + 1)
    return dict(values, threads=cores)


def _int(text: str) -> int:
    """An int written as an int (``"4"``) or as an integral float (``"1e9"``)."""
    try:
        return int(text)
    except ValueError:
        value = float(text)  # a ValueError for anything else
        if not (math.isfinite(value) and value.is_integer()):
            raise ValueError(text) from None
        return int(value)


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _bool(text: str) -> bool:
    if text.lower() in _TRUE + _FALSE:
        return text.lower() in _TRUE
    raise ValueError(text)


#: setting -> (environment variable, parser of its stripped text, what it must be).
ENVIRONMENT = {
    "backend": ("FFTCONV_BACKEND", str.lower, f"one of {BACKENDS}"),
    "threads": ("FFTCONV_THREADS", _int, "an int >= 1"),
    "planner_effort": ("FFTCONV_PLANNER_EFFORT", str.upper, f"one of {PLANNER_EFFORTS}"),
    "planning_timelimit": ("FFTCONV_PLANNING_TIME", float, "a number of seconds > 0"),
    "max_workspace_bytes": ("FFTCONV_MAX_WORKSPACE", _int, "an int >= 1 (bytes)"),
    "measure": ("FFTCONV_MEASURE", _bool, "one of 0/1, true/false, yes/no, on/off"),
    "compiled": ("FFTCONV_COMPILED", _bool, "one of 0/1, true/false, yes/no, on/off"),
    "engine_cache_bytes": ("FFTCONV_ENGINE_CACHE_BYTES", _int, "an int >= 1 (bytes)"),
    "engine_cache_entries": ("FFTCONV_ENGINE_CACHE_ENTRIES", _int, "an int >= 1"),
}


def _from_environment(environ=os.environ) -> Settings:
    """The settings the environment asks for; every unusable variable is ignored
    with a :class:`SettingsWarning` naming it, and its default used."""
    values = _defaults()
    for name, (variable, parse, rule) in ENVIRONMENT.items():
        text = environ.get(variable, "").strip()
        if not text:
            continue
        try:
            value = parse(text)
            check_settings(variable, dict(values, **{name: value}), _pyfftw_available())
        except (TypeError, ValueError, OverflowError):
            warnings.warn(f"fftconv: ignoring {variable}={text!r} ({name} must be {rule}); "
                          f"using the default {name}={values[name]!r}", SettingsWarning,
                          stacklevel=2)
            continue
        values[name] = value
    values = check_settings("the environment", values, _pyfftw_available())
    threads = environ.get("FFTCONV_THREADS", "").strip()
    return Settings(**_clamp_threads(values, f"fftconv: FFTCONV_THREADS={threads}", 2))


def _changed(func: str, base: Settings, changes: dict) -> Settings:
    """``base`` with ``changes``, checked (``func`` is the caller, for messages)."""
    check_keywords(func, changes, NAMES, "the settings")
    values = check_settings(func, {**dataclasses.asdict(base), **changes}, _pyfftw_available())
    return Settings(**_clamp_threads(values, f"{func}: threads={values['threads']}", 4))


_lock = threading.Lock()
_current = _from_environment()


_override: contextvars.ContextVar = contextvars.ContextVar("fftconv_settings", default=None)


def get_settings() -> Settings:
    """The settings in force now, in this thread or task."""
    return _override.get() or _current


def process_settings() -> Settings:
    """The process-wide settings (:func:`configure`'s), whatever :func:`using`
    says in this thread: what process-wide caches read their bounds from."""
    return _current


def configure(**changes) -> Settings:
    """Change settings for the whole process; returns the previous settings.

    Parameters
    ----------
    **changes
        Any of ``backend``, ``threads``, ``planner_effort``,
        ``planning_timelimit``, ``max_workspace_bytes``, ``measure``, ``compiled``,
        ``engine_cache_bytes`` and ``engine_cache_entries`` (the module's
        docstring says what each means and its environment variable).

    Returns
    -------
    Settings
        The settings before the change (``fftconv.configure(**dataclasses.asdict(old))``
        restores them).

    Raises
    ------
    TypeError
        An unknown setting or a wrong kind of value; nothing changes then.
    ValueError
        A bad value; nothing changes then.
    """
    global _current
    with _lock:
        previous = _current
        _current = _changed("fftconv.configure", _current, changes)
    return previous


@contextlib.contextmanager
def using(**changes):
    """Context manager: ``with fftconv.using(backend="scipy"): ...``.

    The changes apply to the current thread (or asyncio task) only, and are
    checked as :func:`configure` checks them.  The process-wide settings
    (``engine_cache_bytes``, ``engine_cache_entries``) are refused with a
    ``TypeError``: they bound a cache every thread shares.
    """
    check_not_given("fftconv.using", changes, PROCESS_WIDE,
                    "is process-wide (it bounds a cache every thread shares); set it with "
                    "fftconv.configure")
    token = _override.set(_changed("fftconv.using", get_settings(), changes))
    try:
        yield _override.get()
    finally:
        _override.reset(token)
