"""``python -m bench.shares``: the channel products on one thread against shared out.

The FFT path's per-frequency products walk frequency blocks that
``fftconv.contraction`` shares out between the calling thread and fftconv's
worker thread (``runtime.run_shares``) where each frequency's GEMM is between
``PARALLEL_MIN_MACS`` and ``PARALLEL_MAX_MACS`` multiply-adds.  This times one
plan's training step (forward + backward, weights moving before every step)
with the blocks on the calling thread only and shared out, in alternating
order (``--rounds`` x ``--steps``), so the ratio is side by side.  The shared
runs lift both bounds, so that every case shows what sharing would do, those
outside the bounds included (the ``default`` column says what fftconv does).
"""
from __future__ import annotations

import numpy as np

from fftconv import contraction

from .report import table
from .sidebyside import alternating, parse, timed_step


def compare(case, rounds: int, steps: int) -> dict:
    """``{"serial": (best, median), "shared": (best, median)}`` seconds per step."""
    run, _ = timed_step(case, "float32", "fft")
    bounds = contraction.PARALLEL_MIN_MACS, contraction.PARALLEL_MAX_MACS

    def mode(key):
        shared = (0, 10 ** 12)   # every GEMM size shared out
        serial = (10 ** 12, 10 ** 12)
        contraction.PARALLEL_MIN_MACS, contraction.PARALLEL_MAX_MACS = (
            serial if key == "serial" else shared)

    try:
        samples = alternating({"serial": run, "shared": run}, rounds, steps, before=mode)
    finally:
        contraction.PARALLEL_MIN_MACS, contraction.PARALLEL_MAX_MACS = bounds
    return {m: (min(t), float(np.median(t))) for m, t in samples.items()}


def main(argv=None) -> int:
    args = parse("python -m bench.shares", __doc__, argv, rounds=4, steps=3)
    rows = []
    for case in args.cases:
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
