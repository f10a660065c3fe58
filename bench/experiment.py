"""``python -m bench experiment NAME``: run-time figures outside the step tables.

* ``threads``: throughput of one layer's stateless training steps (forward +
  backward) from 2 Python threads against the same steps run serially, with
  fftconv's ``threads=1`` so that the parallelism is the callers' (each call
  gets an engine of its own from the cache's pool), for the FFT engines;
* ``budget``: per algorithm, a plan under ``max_workspace_bytes``: its
  ``workspace_bytes`` (engine workspace and what a forward pass keeps) beside
  tracemalloc's peak of one training step less the bytes of its inputs and
  outputs;
* ``pools``: a forked child and ``multiprocessing`` pools (fork, forkserver,
  spawn) running FFT steps after the parent ran a 2-thread FFT, each killed
  after a timeout;
* ``dask`` (also ``python -m bench --suite dask``): a 3-D layer on a volume
  larger than the workers' memory, see :func:`run_dask`.

Timings on a shared machine are noisy: compare the ratios within one run.
"""
from __future__ import annotations

import multiprocessing
import os
import resource
import threading
import time
import tracemalloc

import numpy as np

import fftconv
from fftconv.timing import samples

from .timing import alternating

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
    """Steps per second from 2 threads against serial, best of ``rounds`` alternating."""
    fftconv.configure(threads=1)
    x, w = _arrays()
    print(f"layer x{LAYER['x']} * w{LAYER['w']} float32, fftconv threads=1, {steps} steps")
    # direct holds no engine state (it never took a lock); its GEMMs from two Python
    # threads contend inside BLAS: 0.06x of serial on the loaded 2-core VM
    for algorithm in ("fft", "overlap_add"):
        def serial():
            for _ in range(steps):
                _step(x, w, algorithm)

        def parallel(n: int = steps // 2):
            workers = [threading.Thread(target=lambda: [_step(x, w, algorithm)
                                                        for _ in range(n)])
                       for _ in range(2)]
            for t in workers:
                t.start()
            for t in workers:
                t.join()

        parallel(1)   # both engines of the pool built before timing
        blocks = {"serial": serial, "parallel": parallel}
        best = dict.fromkeys(blocks, float("inf"))
        for _, key in alternating(blocks, rounds):
            best[key] = min(best[key], samples(blocks[key], repeats=1, warmups=0)[0])
        print(f"  {algorithm:12s} serial {steps / best['serial']:6.2f} steps/s, 2 threads "
              f"{steps / best['parallel']:6.2f} steps/s: {best['serial'] / best['parallel']:.2f}x")


def budget() -> None:
    """Workspace figures per algorithm, without and with a budget."""
    x, w = _arrays()
    print(f"layer x{LAYER['x']} * w{LAYER['w']} float32; bytes: x {x.nbytes}")
    print("algorithm | budget | chose | chunk/tile | workspace_bytes | traced peak | "
          "peak - inputs/outputs")
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
            print(f"{algorithm} | {limit} | {p.algorithm} | {option} | {p.workspace_bytes}"
                  f" | {peak} | {peak - io}")


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


# -- dask ---------------------------------------------------------------------------------------
#: Largest relative error accepted by ``dask`` (float32 blocks; the adjoint sums are global).
DASK_TOLERANCE = {"block": 1e-5, "adjoint": 1e-4}


def _peak_rss_mb() -> float:
    """This process's peak resident memory in MB (run on each worker)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _compute(client, what, prefixes):
    """``what`` computed with a task stream: ``(result, wall s, {prefix: [s per task]})``."""
    from distributed import get_task_stream
    with get_task_stream(client) as stream:
        start = time.perf_counter()
        result = what()
        wall = time.perf_counter() - start
    times = {p: [] for p in prefixes + ("other",)}
    for task in stream.data:
        name = task["key"][0] if isinstance(task["key"], tuple) else str(task["key"])
        spent = sum(s["stop"] - s["start"] for s in task["startstops"]
                    if s["action"] == "compute")
        times[next((p for p in prefixes if name.startswith(p + "-")
                    and "-halo" not in name and "-fold" not in name), "other")].append(spent)
    return result, wall, times


def _done(what: str, wall: float):
    print(f"  {what}: {wall:.1f} s", flush=True)


def _row(phase, blocks, other, wall, workers) -> str:
    ms = np.array(blocks) * 1e3
    total = ms.sum() / 1e3
    return (f"| {phase} | {len(ms)} | {ms.mean():.0f} | {ms.min():.0f}-{ms.max():.0f} | "
            f"{total:.1f} | {sum(other):.1f} | {wall:.1f} | {total / (wall * workers):.2f} |")


def _rel(a, ref) -> float:
    return float(np.max(np.abs(a - ref)) / np.max(np.abs(ref)))


def _block_checks(x, dy, w, b, y, dx, r, picks) -> list:
    """``(what, relative error)`` for output and input-gradient blocks ``picks`` (cube
    corners ``[a, a+c)``), each against the numpy functions on the sub-volume
    ``[a - 2r, a + c + 2r)`` (clipped at the volume's edges), which holds every
    sample those blocks depend on ("same", stride 1, kernel ``2r + 1``)."""
    import fftconv
    out = []
    n = x.shape[2]
    for a, c in picks:
        lo, hi = max(a - 2 * r, 0), min(a + c + 2 * r, n)
        sub = (slice(None), slice(None)) + (slice(lo, hi),) * 3
        keep = (Ellipsis,) + (slice(a - lo, a - lo + c),) * 3
        xs, dys = x[sub].compute(), dy[sub].compute()
        block = (slice(None), slice(None)) + (slice(a, a + c),) * 3
        ref_y = fftconv.forward(xs, w, b, padding="same")[keep]
        ref_dx = fftconv.backward(dys, xs, w, padding="same").dx[keep]
        out.append((f"y block at {a}", _rel(y[block].compute(), ref_y)))
        out.append((f"dx block at {a}", _rel(dx[block].compute(), ref_dx)))
    return out


def add_dask_options(p) -> None:
    """The options of ``experiment dask`` on the argparse parser ``p``."""
    p.add_argument("--size", type=int, default=256, help="volume edge (default: %(default)s)")
    p.add_argument("--channels", type=int, default=4, help="C_in = C_out (default: %(default)s)")
    p.add_argument("--kernel", type=int, default=5, help="odd kernel edge (default: %(default)s)")
    p.add_argument("--chunk", type=int, default=32, help="chunk edge (default: %(default)s)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default: %(default)s)")
    p.add_argument("--memory-limit", type=int, default=300, metavar="MB",
                   help="per worker (default: %(default)s MB)")
    p.add_argument("--algorithm", default="auto", help="(default: %(default)s)")


def run_dask(args) -> int:
    """A 3-D layer on a volume larger than the workers' memory, with ``fftconv.dask``.

    A ``dask.distributed`` ``LocalCluster`` of worker processes, each with a
    memory limit far below the volume, runs one training step of a "same" 3-D
    layer with ``fftconv.dask``: the forward pass, ``dw``/``db`` (tree-reduced
    partial sums) and ``dx``.  The input is generated block by block on the
    workers (``dask.array.random``) and nothing whole is ever gathered: ``y`` and
    ``dx`` are reduced to sums as they are made, so input, output and gradients
    together are several times the memory the workers have.

    Reported, from Dask's task stream and the workers themselves:

    * time per block (the block's engine call, halo assembly included) and the
      sum of block times against the wall time of each pass;
    * the peak resident memory of each worker process (``ru_maxrss``) against
      its limit;
    * a check of a few output and input-gradient blocks (first, interior, last)
      against ``fftconv.forward``/``backward`` on the sub-volume around them,
      and of ``dw`` and ``dx`` on the whole volume by the adjoint identity
      ``<conv(x, w), dy> = <w, dw> = <x, dx>`` (sums in float64).
    """
    for var in ("FFTCONV_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, "1")  # one core per single-threaded worker
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import dask
    import dask.array as da
    from distributed import Client, LocalCluster

    import fftconv.dask as fd

    n, c, k, ch = args.size, args.channels, args.kernel, args.chunk
    shape = (1, c, n, n, n)
    mb = np.prod(shape) * 4 / 2**20
    limit = args.memory_limit * 2**20
    print(f"suite dask: x {shape} float32, w ({c}, {c}, {k}, {k}, {k}), padding='same', "
          f"chunks {ch}^3, algorithm={args.algorithm!r}")
    print(f"each of x, y, dy, dx: {mb:.0f} MB, {4 * mb:.0f} MB in all; {args.workers} worker "
          f"processes x 1 thread, memory limit {args.memory_limit} MB each "
          f"({args.workers * args.memory_limit} MB in all); FFTCONV_THREADS="
          f"{os.environ['FFTCONV_THREADS']}; fftconv {fftconv.__version__}, dask "
          f"{dask.__version__}")
    start = time.perf_counter()
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                      memory_limit=limit, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        rng = np.random.default_rng(0)
        w = (rng.standard_normal((c, c, k, k, k)) / np.sqrt(c * k**3)).astype(np.float32)
        b = rng.standard_normal(c).astype(np.float32)
        x = da.random.default_rng(1).standard_normal(shape, chunks=(1, c, ch, ch, ch),
                                                     dtype=np.float32)
        layer = dict(padding="same", algorithm=args.algorithm)
        y = fd.forward(x, w, b, **layer)
        dy = da.random.default_rng(2).standard_normal(y.shape, chunks=y.chunks,
                                                      dtype=np.float32)
        # the pass: <y - b, dy>, each block of y consumed as it is made
        centred = y.astype(np.float64) - b.astype(np.float64)[:, None, None, None]
        ydy, wall, t = _compute(client, lambda: (centred * dy).sum().compute(),
                                ("fftconv-forward",))
        _done("forward pass", wall)
        rows = [_row("forward", t["fftconv-forward"], t["other"], wall, args.workers)]
        grads, wall, t = _compute(client, lambda: fd.backward(dy, x, w, **layer),
                                  ("fftconv-dwdb",))
        _done("dw, db pass", wall)
        rows.append(_row("dw, db", t["fftconv-dwdb"], t["other"], wall, args.workers))
        xdx, wall, t = _compute(client, lambda: (x.astype(np.float64) * grads.dx).sum().compute(),
                                ("fftconv-dxpad", "fftconv-dx"))
        _done("dx pass", wall)
        rows.append(_row("dx", t["fftconv-dxpad"], t["fftconv-dx"] + t["other"], wall,
                         args.workers))
        peaks = client.run(_peak_rss_mb)
        picks = [(0, ch), ((n // ch // 2) * ch, ch), ((n // ch - 1) * ch, ch)]
        checks = _block_checks(x, dy, w, b, y, grads.dx, k // 2, picks)
        wdw = float(np.sum(w.astype(np.float64) * grads.dw))
        checks.append(("<w, dw> vs <conv(x, w), dy>", abs(wdw - ydy) / abs(ydy)))
        checks.append(("<x, dx> vs <conv(x, w), dy>", abs(xdx - ydy) / abs(ydy)))
    total = time.perf_counter() - start
    print("\n| pass | blocks | ms/block | min-max ms | sum of blocks s | other tasks s | wall s "
          "| sum / (wall x workers) |\n|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print("blocks: the block's engine call with its window's assembly (forward: the layer; dw, db:"
          " fftconv.backward on the window; dx: the transposed convolution of the dy window); "
          "other tasks: generating x and dy, halo cuts, dx folds, sums and reductions")
    print("\n| worker | peak RSS MB | limit MB | peak / limit |\n|---|---|---|---|")
    for i, (addr, peak) in enumerate(sorted(peaks.items())):
        print(f"| {i} ({addr}) | {peak:.0f} | {args.memory_limit} | {peak / args.memory_limit:.2f} |")
    print("\n| check | relative error | bound |\n|---|---|---|")
    ok = True
    for what, err in checks:
        bound = DASK_TOLERANCE["adjoint" if "<" in what else "block"]
        ok &= err <= bound
        print(f"| {what} | {err:.2e} | {bound:.0e} |")
    print(f"\ndone in {total:.1f} s{'' if ok else ' (ACCURACY: a check is above its bound)'}")
    return 0 if ok else 1


#: The experiments that take no options, by name.
EXPERIMENTS = {"threads": threads, "budget": budget, "pools": pools}
