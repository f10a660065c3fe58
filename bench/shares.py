"""``python -m bench.shares``: the channel products on one thread against shared out.

The FFT path's per-frequency products walk frequency blocks that
``fftconv.contraction`` shares out between the calling thread and fftconv's
worker thread (``runtime.run_shares``) where each frequency's GEMM is between
``PARALLEL_MIN_MACS`` and ``PARALLEL_MAX_MACS`` multiply-adds.  This times one
plan's training step (forward + backward, weights moving before every step)
with the blocks on the calling thread only and shared out, in alternating
order (``--rounds`` x ``--steps``), so the ratio is side by side; ``PARALLEL_MIN_MACS``
is lowered to 0 for the shared runs so that every case shows what sharing
would do, including those below the threshold (marked).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import fftconv
from fftconv import contraction

from .cases import PERF_ALL, make_data, parse_case
from .report import table
from .threads import all_cores, load_warning, set_threads


def _runner(case):
    data = make_data(case, "float32")
    p = fftconv.plan(case.x_shape, case.w_shape, dtype=data.x.dtype, algorithm="fft",
                     **case.layer)
    w = data.w.copy()

    def run():
        w[...] += 1e-3
        start = time.perf_counter()
        p.forward(data.x, w, data.b)
        p.backward(data.dy)
        return time.perf_counter() - start

    run()
    return run


def compare(case, rounds: int, steps: int) -> dict:
    """``{"serial": (best, median), "shared": (best, median)}`` seconds per step."""
    run, low = _runner(case), contraction.PARALLEL_MIN_MACS
    samples = {"serial": [], "shared": []}
    try:
        for r in range(rounds):
            for mode in ("serial", "shared") if r % 2 == 0 else ("shared", "serial"):
                contraction.PARALLEL_MIN_MACS = 10 ** 12 if mode == "serial" else 0
                samples[mode] += [run() for _ in range(steps)]
    finally:
        contraction.PARALLEL_MIN_MACS = low
    return {m: (min(t), float(np.median(t))) for m, t in samples.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.shares", description=__doc__)
    parser.add_argument("--case", action="append", dest="cases", metavar="SPEC",
                        help="a layer instead of the perf suite's cases (repeatable)")
    parser.add_argument("--threads", type=int, default=all_cores())
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args(argv)
    print("threads: " + set_threads(args.threads))
    warning = load_warning(args.threads)
    if warning:
        print(warning)
    cases = [parse_case(s) for s in args.cases] if args.cases else list(PERF_ALL)
    rows = []
    for case in cases:
        got = compare(case, args.rounds, args.steps)
        groups = case.opts.get("groups", 1)
        macs = case.batch * (case.out_channels // groups) * (case.in_channels // groups)
        default = ("shared" if contraction.PARALLEL_MIN_MACS <= macs
                   <= contraction.PARALLEL_MAX_MACS else "serial")
        rows.append([case.name, str(macs), default]
                    + [f"{got[m][0] * 1e3:.1f} ({got[m][1] * 1e3:.1f})" for m in got]
                    + [f"{got['shared'][0] / got['serial'][0]:.2f}",
                       f"{got['shared'][1] / got['serial'][1]:.2f}"])
        print(f"  {case.name}: {rows[-1][-2]}", flush=True)
    print("\nms per training step, best (median); GEMM: multiply-adds per frequency; "
          "default: what fftconv does at this size")
    print(table(["case", "GEMM", "default", "serial ms", "shared ms", "shared/serial min",
                 "median"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
