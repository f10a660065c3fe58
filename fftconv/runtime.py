"""What fftconv's calls share with the rest of the process: thread pools across
``fork``, BLAS's thread pool, and the memory the machine has available.

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
  larger than the memory the machine has available.
"""
from __future__ import annotations

import contextlib
import os
import threading
from typing import Callable, List, Optional, Sequence

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
def available_memory() -> Optional[int]:
    """Bytes the machine can still give this process without swapping
    (``MemAvailable`` of ``/proc/meminfo``, else ``os.sysconf``), or ``None``
    where neither is known."""
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


def check_memory(func: str, layer: str, needed: int, available: Optional[int] = None) -> None:
    """Raise ``MemoryError`` before allocating ``needed`` bytes of workspace for
    ``layer`` when the machine has less available, saying how to get by."""
    available = available_memory() if available is None else available
    if available is not None and needed > available:
        raise MemoryError(
            f"{func}: the workspace of {layer} needs {needed} bytes, but only {available} bytes "
            f"of memory are available; bound it with max_workspace_bytes= (fftconv.plan, or "
            f"fftconv.configure for the stateless functions), or use algorithm='overlap_add', "
            f"whose workspace is bounded by its tile")
