"""``python -m bench --suite dask``: a 3-D layer on a volume larger than the workers' memory.

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
from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np

#: Largest relative error accepted (float32 blocks; the adjoint sums are global).
TOLERANCE = {"block": 1e-5, "adjoint": 1e-4}


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m bench --suite dask",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--suite", default="dask", help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, default=256, help="volume edge (default: %(default)s)")
    p.add_argument("--channels", type=int, default=4, help="C_in = C_out (default: %(default)s)")
    p.add_argument("--kernel", type=int, default=5, help="odd kernel edge (default: %(default)s)")
    p.add_argument("--chunk", type=int, default=32, help="chunk edge (default: %(default)s)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default: %(default)s)")
    p.add_argument("--memory-limit", type=int, default=300, metavar="MB",
                   help="per worker (default: %(default)s MB)")
    p.add_argument("--algorithm", default="auto")
    args = p.parse_args(argv)
    if args.kernel % 2 == 0 or args.chunk < args.kernel:
        p.error("--kernel must be odd and --chunk at least the kernel")
    return args


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


def main(argv=None) -> int:
    args = parse_args(argv)
    for var in ("FFTCONV_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, "1")  # one core per single-threaded worker
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import dask
    import dask.array as da
    from distributed import Client, LocalCluster

    import fftconv
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
        bound = TOLERANCE["adjoint" if "<" in what else "block"]
        ok &= err <= bound
        print(f"| {what} | {err:.2e} | {bound:.0e} |")
    print(f"\ndone in {total:.1f} s{'' if ok else ' (ACCURACY: a check is above its bound)'}")
    return 0 if ok else 1
