"""What the side-by-side tools (``bench.precision``, ``bench.shares``) share: a
plan's timed training step, and their common options."""
from __future__ import annotations

import argparse
import time
from typing import Callable, List

import fftconv

from .cases import PERF_ALL, make_data, parse_case
from .threads import all_cores, load_warning, set_threads


def timed_step(case, dtype: str, algorithm: str):
    """``(run, plan)``: ``run()`` takes one training step of ``case`` (forward +
    backward, weights moved first) on a new plan and returns its seconds; the
    plan has had one warm-up step."""
    data = make_data(case, dtype)
    p = fftconv.plan(case.x_shape, case.w_shape, dtype=data.x.dtype, algorithm=algorithm,
                     **case.layer)
    w = data.w.copy()

    def run() -> float:
        w[...] += 1e-3
        start = time.perf_counter()
        p.forward(data.x, w, data.b)
        p.backward(data.dy)
        return time.perf_counter() - start

    run()  # warm-up: plans, caches
    return run, p


def parse(prog: str, doc: str, argv, rounds: int, steps: int) -> argparse.Namespace:
    """The common options (``--case``, ``--threads``, ``--rounds``, ``--steps``); sets
    the threads, prints them and any load warning, and puts the cases in
    ``args.cases`` (the perf suite's unless ``--case`` is given)."""
    parser = argparse.ArgumentParser(prog=prog, description=doc)
    parser.add_argument("--case", action="append", dest="cases", metavar="SPEC",
                        help="a layer instead of the perf suite's cases (repeatable)")
    parser.add_argument("--threads", type=int, default=all_cores())
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--steps", type=int, default=steps)
    args = parser.parse_args(argv)
    print("threads: " + set_threads(args.threads))
    warning = load_warning(args.threads)
    if warning:
        print(warning)
    args.cases = [parse_case(s) for s in args.cases] if args.cases else list(PERF_ALL)
    return args


def alternating(runs: dict, rounds: int, steps: int, before: Callable[[str], None] = None
                ) -> dict:
    """``{key: [seconds, ...]}``: ``steps`` calls of each ``runs[key]()`` per round,
    the keys in alternating order from round to round (``before(key)`` first)."""
    keys: List[str] = list(runs)
    samples = {key: [] for key in keys}
    for r in range(rounds):
        for key in keys if r % 2 == 0 else keys[::-1]:
            if before is not None:
                before(key)
            samples[key] += [runs[key]() for _ in range(steps)]
    return samples
