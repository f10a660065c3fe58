"""What fftconv's calls share with the rest of the process: thread pools across
``fork``, BLAS's thread pool, and the memory the process may allocate.

* **fork.**  pyFFTW's wheels run FFTW's threads on a vendored OpenMP runtime
  (libgomp), whose thread pool does not survive ``os.fork``: a child that runs
  a transform planned with ``threads > 1``, or plans a new one, waits forever
  for threads that do not exist (measured: ``fftconv.forward`` after a fork
  never returned; with one thread it does).  So once the parent has planned a
  multithreaded FFTW transform, a forked child runs FFTW on one thread
  (:func:`fftw_threads`), and transforms planned before the fork re-plan on
  their next use (:func:`generation` changes in the child).  Hooks registered
  with :func:`at_fork_in_child` reset the process-wide state that threads of
  the parent may have held (the engine cache and its lock).  ``spawn`` and
  ``forkserver`` start fresh interpreters and need none of this.
* **workers.**  :func:`run_shares` splits independent work (the channel
  contraction's frequency blocks) into shares run at once by the calling
  thread and a process-wide pool of worker threads, made on first use and
  dropped in a forked child (its threads are gone there).
* **BLAS.**  The channel contraction and the direct algorithm run GEMMs on
  BLAS's own thread pool; :func:`blas_threads` bounds it by the ``threads``
  setting for the duration of one call (threadpoolctl), and restores it after.
* **memory.**  :func:`check_memory` refuses, before allocating, a workspace
  larger than the memory the process may allocate: the least of the machine's
  available memory, its memory cgroup's room and ``RLIMIT_AS``'s
  (:func:`available_memory`); :func:`allocation_named` names the layer when an
  allocation fails all the same.
"""
from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Sequence, Tuple, Type

from .config import available_cores

_generation = 0
_threaded_fftw = False      # this process (or its parent) planned FFTW with threads > 1
_single_fftw = False        # we are a forked child of such a process: FFTW on one thread
_child_hooks: List[Callable[[], None]] = []


def generation() -> int:
    """A number that changes in a forked child: state made before it is stale."""
    return _generation


def fftw_threads(requested: int) -> int:
    """FFTW threads to plan with: ``requested``, or 1 in a forked child of a process
    whose FFTW ran threads (their OpenMP pool is gone).  Records a threaded plan."""
    global _threaded_fftw
    if _single_fftw:
        return 1
    if requested > 1:
        _threaded_fftw = True
    return requested


def at_fork_in_child(hook: Callable[[], None]) -> None:
    """Run ``hook()`` in every forked child, after fftconv's own reset."""
    _child_hooks.append(hook)


def _after_fork_in_child() -> None:
    global _generation, _single_fftw, _blas_lock, _blas_depth
    _generation += 1
    _single_fftw = _single_fftw or _threaded_fftw
    _blas_lock, _blas_depth = threading.Lock(), 0
    _drop_pool()
    for hook in _child_hooks:
        hook()


if hasattr(os, "register_at_fork"):  # pragma: no branch - POSIX
    os.register_at_fork(after_in_child=_after_fork_in_child)


# -- worker threads ----------------------------------------------------------------------
_pool = None                # ThreadPoolExecutor for run_shares, made on first use
_pool_lock = threading.Lock()


def _drop_pool() -> None:
    """Forget the pool (in a forked child: its threads did not come along)."""
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


def _worker_pool():
    """The shared pool: one thread fewer than the cores (the caller is the other),
    never resized, so a pool in use is never shut down under a caller."""
    global _pool
    with _pool_lock:
        if _pool is None:
            from concurrent.futures import ThreadPoolExecutor
            _pool = ThreadPoolExecutor(max(1, available_cores() - 1),
                                       thread_name_prefix="fftconv")
        return _pool


def _run_all(fn: Callable, items: Sequence) -> None:
    for item in items:
        fn(item)


def _submit(fn: Callable, pieces: list) -> list:
    """``(future or None, piece)`` per piece; ``None`` where the pool takes no more
    work (the interpreter is shutting down): the caller runs that piece itself."""
    pool, submitted = _worker_pool(), []
    for piece in pieces:
        try:
            submitted.append((pool.submit(_run_all, fn, piece), piece))
        except RuntimeError:
            submitted.append((None, piece))
    return submitted


def _wait(future) -> Optional[BaseException]:
    """Wait until a started share has ended, also through interruptions of the
    wait (a ``KeyboardInterrupt``); returns the first interruption."""
    interrupted = None
    while not future.done():
        try:
            future.exception()
        except BaseException as exc:  # noqa: BLE001 - returned, raised by the caller
            interrupted = interrupted or exc
    return interrupted


def run_shares(fn: Callable, items: Sequence, threads: int) -> None:
    """``fn(item)`` for every item, the items split into up to ``threads``
    contiguous shares that run at once: the calling thread runs the first, the
    shared pool's threads the others (the caller runs any that no worker has
    started by the time it gets to them).  Returns when every started share
    has ended, also when one raised or the wait was interrupted (the first
    error is re-raised then, and unstarted shares are dropped), so no share
    outlives the call.  ``fn`` must be safe to run on different items at once,
    must not call :func:`run_shares` itself, and its heavy work should release
    the GIL (numpy's copies and GEMMs do).
    """
    shares = max(1, min(int(threads), len(items)))
    if shares == 1:
        return _run_all(fn, items)
    bounds = [len(items) * i // shares for i in range(shares + 1)]
    pieces = [items[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    first_error = None
    for future, piece in [(None, pieces[0])] + _submit(fn, pieces[1:]):
        try:
            if future is None or future.cancel():   # not started: run it here
                if first_error is None:
                    _run_all(fn, piece)
                continue
            interrupted = _wait(future)
            if interrupted is not None:
                raise interrupted
            future.result()                          # the share's own error, if any
        except BaseException as exc:  # noqa: BLE001 - the first is re-raised below
            first_error = first_error or exc
    if first_error is not None:
        raise first_error


# -- BLAS threads ------------------------------------------------------------------------
_blas = None                # threadpoolctl's controller of the BLAS libraries, made once
_blas_lock = threading.Lock()
_blas_depth = 0             # calls inside a limit: the first sets it, the last restores it
_blas_saved: Optional[list] = None


def _blas_libraries() -> list:
    global _blas
    if _blas is None:
        from threadpoolctl import ThreadpoolController
        _blas = ThreadpoolController().select(user_api="blas").lib_controllers
    return _blas


@contextlib.contextmanager
def blas_threads(threads: int):
    """Bound BLAS's threads by ``threads`` inside the block (process-wide while any
    fftconv call is in one: BLAS has one pool; the first call in sets the bound and
    the last one out restores the previous counts).  A no-op where BLAS already
    runs on no more threads."""
    global _blas_depth, _blas_saved
    with _blas_lock:
        if _blas_depth == 0:
            libs = _blas_libraries()
            counts = [lib.get_num_threads() for lib in libs]
            _blas_saved = [(lib, n) for lib, n in zip(libs, counts) if n > threads]
            for lib, _ in _blas_saved:
                lib.set_num_threads(threads)
        _blas_depth += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_depth -= 1
            if _blas_depth == 0:
                for lib, n in _blas_saved or ():
                    lib.set_num_threads(n)
                _blas_saved = None


# -- memory ------------------------------------------------------------------------------
#: How to get by with less memory: the end of every memory error.
WAY_OUT = ("bound it with max_workspace_bytes= (fftconv.plan, or fftconv.configure for the "
           "stateless functions), or use algorithm='overlap_add', whose workspace is bounded "
           "by its tile")

#: A cgroup limit at or above this means "no limit" (cgroup v1 writes 2**63 rounded down
#: to a page).
_UNLIMITED = 1 << 60


def _read_int(path: Path) -> Optional[int]:
    """The integer in a cgroup file (``None`` for ``max``, a missing or odd file)."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _cgroup_room(limit_name: str, usage_name: str, directories) -> Optional[int]:
    """The least ``limit - usage`` over the cgroup ``directories`` that set a limit."""
    rooms = []
    for directory in directories:
        limit = _read_int(directory / limit_name)
        if limit is not None and limit < _UNLIMITED:
            rooms.append(max(limit - (_read_int(directory / usage_name) or 0), 0))
    return min(rooms) if rooms else None


def _lineage(mount: Path, path: str) -> list:
    """The cgroup directory of ``path`` under ``mount`` and its ancestors up to the
    mount (a container sees its own cgroup as the mount's root)."""
    parts = [p for p in path.split("/") if p]
    return [mount.joinpath(*parts[:i]) for i in range(len(parts), -1, -1)]


def cgroup_memory(root: Path = Path("/"), proc: str = "self") -> Optional[int]:
    """Bytes this process's memory cgroup still allows (cgroup v2 ``memory.max`` less
    ``memory.current``, v1 ``memory.limit_in_bytes`` less ``memory.usage_in_bytes``,
    the least over its ancestors), or ``None`` without a limit.  ``root`` and
    ``proc`` locate ``/proc/<proc>/cgroup`` and ``/sys/fs/cgroup`` (tests)."""
    try:
        lines = (root / "proc" / proc / "cgroup").read_text().splitlines()
    except OSError:
        return None
    rooms = []
    for line in lines:
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if controllers == "":        # v2: one unified hierarchy
            rooms.append(_cgroup_room("memory.max", "memory.current",
                                      _lineage(root / "sys/fs/cgroup", path)))
        elif "memory" in controllers.split(","):   # v1: the memory controller's own
            rooms.append(_cgroup_room("memory.limit_in_bytes", "memory.usage_in_bytes",
                                      _lineage(root / "sys/fs/cgroup/memory", path)))
    known = [r for r in rooms if r is not None]
    return min(known) if known else None


def address_space_room() -> Optional[int]:
    """Bytes of address space ``RLIMIT_AS`` still allows (its soft limit less the
    process's ``VmSize``), or ``None`` without a limit."""
    try:
        import resource
        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
    except (ImportError, OSError, ValueError):  # pragma: no cover - not POSIX
        return None
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            size = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    except (OSError, ValueError, StopIteration):
        size = 0
    return max(soft - size, 0)


def machine_memory() -> Optional[int]:
    """Bytes the machine can still give without swapping (``MemAvailable`` of
    ``/proc/meminfo``, else ``os.sysconf``), or ``None`` where neither is known."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # pragma: no cover - not POSIX
        return None


def available_memory() -> Optional[int]:
    """Bytes this process may still allocate: the least of what the machine has
    available, what its memory cgroup allows (containers, Kubernetes pods, Slurm
    jobs) and what ``RLIMIT_AS`` leaves; ``None`` where none is known."""
    known = [m for m in (machine_memory(), cgroup_memory(), address_space_room())
             if m is not None]
    return min(known) if known else None


def check_memory(func: str, layer: str, needed: int, available: Optional[int] = None,
                 where: str = "memory") -> None:
    """Raise ``MemoryError`` before allocating ``needed`` bytes of workspace for
    ``layer`` when the process may allocate less (``available``: a device's free
    memory, named ``where``; default the host's), saying how to get by."""
    available = available_memory() if available is None else available
    if available is not None and needed > available:
        raise MemoryError(
            f"{func}: the workspace of {layer} needs {needed} bytes, but only {available} bytes "
            f"of {where} are available; {WAY_OUT}")


@contextlib.contextmanager
def allocation_named(func: str, layer: str, needed: int,
                     errors: Tuple[Type[BaseException], ...] = (MemoryError,)) -> Iterator[None]:
    """Turn an allocation that fails in the block (memory taken by others since
    :func:`check_memory`, or a limit no query shows; ``errors``: what the array
    library raises, a device's out-of-memory error included) into a
    ``MemoryError`` that names ``func``, ``layer``, the ``needed`` bytes and the
    way out."""
    try:
        yield
    except errors as exc:
        raise MemoryError(f"{func}: {layer} ran out of memory with a workspace of {needed} "
                          f"bytes ({exc}); {WAY_OUT}") from exc
