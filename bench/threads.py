"""One thread count for every library a training step uses.

``--threads N`` applies to fftconv's transforms (FFTW or pocketfft), the
floor's FFTW plans, PyTorch's intra-op pool and, when threadpoolctl is
installed, the BLAS under numpy (the GEMMs of fftconv's direct path and of its
channel contraction).  Without threadpoolctl BLAS keeps its own default
(``OPENBLAS_NUM_THREADS``, else all cores).

pyFFTW's FFTW and PyTorch each bring their own OpenMP runtime (libgomp).
Threads of one runtime that spin while idle starve the other's on a small
machine: on 2 busy cores, FFTW steps after a torch call took ~80 ms instead of
0.3 ms, and torch steps ~100 ms instead of 0.3 ms.  ``bench/__init__.py``
therefore sets ``OMP_WAIT_POLICY=PASSIVE`` unless it is already set (export
``OMP_WAIT_POLICY=ACTIVE`` to measure the spinning behaviour).

On a machine shared with other work, a multi-threaded OpenBLAS call can also
wait many milliseconds for a descheduled worker (steps 100x slower were seen
on 2 loaded cores); ``--threads 1`` gives the steadiest figures there.
"""
from __future__ import annotations

import os

import fftconv

from .competitors import torch_available


def all_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def set_threads(n: int) -> str:
    """Use ``n`` threads everywhere we can; returns a one-line description."""
    fftconv.configure(threads=n)
    done = [f"fftconv {n}"]
    if torch_available():
        import torch
        torch.set_num_threads(n)
        done.append(f"torch {n}")
    try:
        import threadpoolctl
    except ImportError:
        done.append("BLAS its default (no threadpoolctl)")
    else:
        threadpoolctl.threadpool_limits(limits=n, user_api="blas")
        done.append(f"BLAS {n}")
    done.append(f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}")
    return ", ".join(done)


def load_warning(threads: int) -> str:
    """A warning line if other work already keeps the cores busy, else ``""``."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # pragma: no cover - Windows
        return ""
    cores = all_cores()
    if threads > 1 and load > 0.5 * cores:
        return (f"warning: load average {load:.1f} on {cores} cores before this run; "
                f"multi-threaded steps can stall waiting for descheduled threads, so "
                f"--threads 1 gives steadier figures")
    return ""
