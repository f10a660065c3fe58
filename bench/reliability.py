"""Issue 13's runtime figures: ``python -m bench.reliability [--only threads|budget|pools]``.

* ``threads``: throughput of one layer's stateless training steps (forward +
  backward) from 2 Python threads against the same steps run serially, with
  fftconv's ``threads=1`` so that the parallelism is the callers' (each call
  gets an engine of its own from the cache's pool), for the FFT engines;
* ``budget``: per algorithm, a plan under ``max_workspace_bytes``: its engine
  workspace, ``workspace_bytes`` (with the kept ``x``) and tracemalloc's peak of
  one training step, beside the bytes of its inputs and outputs;
* ``pools``: a forked child and ``multiprocessing`` pools (fork, forkserver,
  spawn) running FFT steps after the parent ran a 2-thread FFT, each killed
  after a timeout;
* ``omp``: a direct step right after an FFT step (x 8x16x64x64, w 16x16x3x3),
  with ``threads`` 1 and 2 and ``OMP_WAIT_POLICY`` PASSIVE and ACTIVE, each in
  a fresh process (the policy is read when OpenMP starts).

Timings on a shared machine are noisy: compare the ratios within one run.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import threading
import time
import tracemalloc

import numpy as np

import fftconv

LAYER = dict(x=(8, 16, 64, 64), w=(16, 16, 7, 7), padding="same")


def _arrays(dtype=np.float32):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(LAYER["x"]).astype(dtype)
    w = rng.standard_normal(LAYER["w"]).astype(dtype)
    return x, w


def _step(x, w, algorithm):
    y = fftconv.forward(x, w, padding=LAYER["padding"], algorithm=algorithm)
    fftconv.backward(y, x, w, padding=LAYER["padding"], algorithm=algorithm)


def threads(steps: int = 12, rounds: int = 5) -> None:
    """Steps per second from 2 threads against serial, best of ``rounds``."""
    fftconv.configure(threads=1)
    x, w = _arrays()
    print(f"layer x{LAYER['x']} * w{LAYER['w']} float32, fftconv threads=1, {steps} steps")
    # direct holds no engine state (it never took a lock); its GEMMs from two Python
    # threads contend inside BLAS: 0.06x of serial on the loaded 2-core VM, main too
    for algorithm in ("fft", "overlap_add"):
        warm = [threading.Thread(target=_step, args=(x, w, algorithm)) for _ in range(2)]
        for t in warm:   # both engines of the pool built before timing
            t.start()
        for t in warm:
            t.join()
        serial = parallel = float("inf")
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(steps):
                _step(x, w, algorithm)
            serial = min(serial, time.perf_counter() - start)
            workers = [threading.Thread(target=lambda: [_step(x, w, algorithm)
                                                        for _ in range(steps // 2)])
                       for _ in range(2)]
            start = time.perf_counter()
            for t in workers:
                t.start()
            for t in workers:
                t.join()
            parallel = min(parallel, time.perf_counter() - start)
        print(f"  {algorithm:12s} serial {steps / serial:6.2f} steps/s, 2 threads "
              f"{steps / parallel:6.2f} steps/s: {serial / parallel:.2f}x")


def budget() -> None:
    """Workspace figures per algorithm, without and with a budget."""
    x, w = _arrays()
    print(f"layer x{LAYER['x']} * w{LAYER['w']} float32; bytes: x {x.nbytes}")
    print("algorithm | budget | chose | chunk/tile | engine workspace | workspace_bytes | "
          "traced peak | peak - inputs/outputs - kept x")
    for limit in (None, 8 << 20, 2 << 20):
        for algorithm in ("fft", "direct", "overlap_add", "auto"):
            tracemalloc.start()   # from building the plan: every buffer it allocates
            try:
                p = fftconv.plan(x.shape, w.shape, dtype=np.float32, algorithm=algorithm,
                                 padding=LAYER["padding"], max_workspace_bytes=limit)
                dy = np.ones(p.out_shape, np.float32)
                p.vjp(x, w)[1](dy)   # first step, dropped: its peak includes FFTW planning
                tracemalloc.reset_peak()
                y, pullback = p.vjp(x, w)
                g = pullback(dy)
                peak = tracemalloc.get_traced_memory()[1]
            except ValueError as exc:
                print(f"{algorithm} | {limit} | refused: {str(exc).split(': ', 1)[1]}")
                continue
            finally:
                tracemalloc.stop()
            io = x.nbytes + w.nbytes + 2 * y.nbytes + g.dx.nbytes + g.dw.nbytes
            option = p.tile or p.chunk
            print(f"{algorithm} | {limit} | {p.algorithm} | {option} | {p._engine.workspace_bytes}"
                  f" | {p.workspace_bytes} | {peak} | {peak - io - p._engine.kept_bytes}")


def _pool_step(seed: int) -> float:
    x, w = _arrays()
    _step(x, w, "fft")
    return seed


def pools(timeout: float = 300) -> None:
    """A fork and three kinds of pools after a 2-thread FFT in this process."""
    fftconv.configure(threads=2)
    x, w = _arrays()
    _step(x, w, "fft")
    pid = os.fork()
    if pid == 0:
        try:
            _step(x, w, "fft")
        finally:
            os._exit(0)
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            print(f"os.fork child: exit {os.waitstatus_to_exitcode(status)} after "
                  f"{time.perf_counter() - start:.1f} s")
            break
        time.sleep(0.05)
    else:
        os.kill(pid, 9)
        print(f"os.fork child: HUNG (killed after {timeout} s)")
    for method in ("fork", "forkserver", "spawn"):
        start = time.perf_counter()
        with multiprocessing.get_context(method).Pool(2) as pool:
            result = pool.map_async(_pool_step, range(4))
            try:
                ok = result.get(timeout) == list(range(4))
                print(f"Pool(2) {method}: 4 FFT steps {'ok' if ok else 'WRONG'} in "
                      f"{time.perf_counter() - start:.1f} s")
            except multiprocessing.TimeoutError:
                pool.terminate()
                print(f"Pool(2) {method}: HUNG (terminated after {timeout} s)")


def direct_after_fft(threads: int, steps: int = 7) -> None:
    """Median and best of a direct step timed right after an FFT step."""
    fftconv.configure(threads=threads)
    x, _ = _arrays()
    w = np.random.default_rng(1).standard_normal((16, 16, 3, 3)).astype(np.float32)
    _step(x, w, "fft")
    _step(x, w, "direct")
    times = []
    for _ in range(steps):
        _step(x, w, "fft")
        start = time.perf_counter()
        _step(x, w, "direct")
        times.append(time.perf_counter() - start)
    print(f"  OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')} threads={threads}: "
          f"median {1e3 * statistics.median(times):.1f} ms, best {1e3 * min(times):.1f} ms")


def omp() -> None:
    """:func:`direct_after_fft` per thread count and wait policy, in fresh processes."""
    for policy in ("PASSIVE", "ACTIVE"):
        for n in (1, 2):
            subprocess.run([sys.executable, "-m", "bench.reliability", "--direct-after-fft",
                            str(n)], env={**os.environ, "OMP_WAIT_POLICY": policy}, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("threads", "budget", "pools", "omp"))
    parser.add_argument("--direct-after-fft", type=int, metavar="THREADS", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.direct_after_fft:
        direct_after_fft(args.direct_after_fft)
        return
    for name, run in (("threads", threads), ("budget", budget), ("pools", pools), ("omp", omp)):
        if args.only in (None, name):
            print(f"== {name}")
            run()


if __name__ == "__main__":
    main()
