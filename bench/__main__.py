"""Command line: ``python -m bench [--quick | --suite NAME] [options]``.

See ``bench/README.md`` and ``python -m bench --help``.
"""
from __future__ import annotations

import argparse
import dataclasses
import platform
import sys
import time
from pathlib import Path

import numpy as np

import fftconv

from . import competitors, decisions, report, torch_suite
from .cases import SUITES, custom_suite, parse_case
from .profile import profile, profile_text
from .runner import Options, run_cases
from .targets import check_targets
from .threads import all_cores, load_warning, set_threads

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_PLOT = RESULTS / "crossover.png"
DEFAULT_CSV = RESULTS / "decisions.csv"
#: Largest relative error (to the largest magnitude) accepted against the FFT path.
TOLERANCE = {"float32": 1e-4, "float64": 1e-10}
SWEEP_KEYS = ("fft", "direct", "overlap_add", "torch")
#: Samples per point of the kernel sweep at least: the plot shows their spread.
SWEEP_REPEAT = 9


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Time one training step (forward + backward, weights changing every "
                    "step) of fftconv's FFT path against its direct and overlap-add paths, "
                    "its algorithm='auto', PyTorch, a scipy.signal.fftconvolve loop and the "
                    "bare FFTs.")
    parser.add_argument("--suite", choices=sorted(SUITES), default="default",
                        help="problem suite (default: %(default)s; perf and algorithms check "
                             "targets, decisions checks the cost model's choices; "
                             "--suite dask [--help] runs fftconv.dask on a cluster, its own "
                             "options)")
    parser.add_argument("--quick", action="store_const", const="quick", dest="suite",
                        help="tiny suite for CI, a few seconds (same as --suite quick)")
    parser.add_argument("--case", "--shape", action="append", dest="cases", metavar="SPEC",
                        help='custom case instead of a suite, e.g. "N=8,C=16,O=16,size=128x128,'
                             'k=15" (repeatable)')
    parser.add_argument("--profile", metavar="SPEC",
                        help="time one training step of a --case SPEC layer per part "
                             "(transforms, placement, products, transposes, crops) beside "
                             "the transform floor, then exit (see bench/profile.py)")
    parser.add_argument("--algorithm", default="fft", choices=("fft", "overlap_add", "auto"),
                        help="the plan's algorithm under --profile (default: %(default)s)")
    parser.add_argument("--dims", type=int, nargs="+", choices=(1, 2, 3),
                        help="only cases with these numbers of spatial axes")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--threads", type=int, default=all_cores(),
                        help="threads for fftconv, FFTW, torch and (with threadpoolctl) BLAS "
                             "(default: all cores, %(default)s)")
    parser.add_argument("--repeat", type=int, metavar="K",
                        help="timed steps per competitor, best kept (default: the suite's, "
                             "5; algorithms 10, decisions 15)")
    parser.add_argument("--rounds", type=int, metavar="R",
                        help="measure every competitor of a case R times, alternating their "
                             "order, and keep the best: steadier ratios on a shared machine "
                             "(default: the suite's, 1; perf 3)")
    parser.add_argument("--budget", type=float, metavar="SECONDS",
                        help="stop sampling a competitor once its timed steps add up to this "
                             "(default: the suite's, 1; algorithms and decisions 2)")
    parser.add_argument("--full", action="store_true",
                        help="run every competitor, however long it is estimated to take")
    parser.add_argument("--no-memory", dest="memory", action="store_false",
                        help="skip the tracemalloc runs of the fft and overlap_add paths")
    parser.add_argument("--plot", default=str(DEFAULT_PLOT), metavar="PATH",
                        help="PNG of the 2-D kernel sweep (default: bench/results/crossover.png)")
    parser.add_argument("--no-plot", dest="plot", action="store_const", const=None,
                        help="no kernel sweep and no plot")
    parser.add_argument("--csv", default=str(DEFAULT_CSV), metavar="PATH",
                        help="raw rows of --suite decisions (default: "
                             "bench/results/decisions.csv)")
    args = parser.parse_args(argv)
    try:
        suite = SUITES[args.suite]
        suite = custom_suite(suite, args.cases) if args.cases else suite
        args.profile = parse_case(args.profile) if args.profile else None
    except ValueError as exc:
        parser.error(str(exc))
    args.suite = suite.restricted(set(args.dims) if args.dims else None, args.full)
    args.repeat = suite.repeat if args.repeat is None else args.repeat
    args.budget = suite.budget if args.budget is None else args.budget
    args.rounds = suite.rounds if args.rounds is None else args.rounds
    if args.threads < 1 or args.repeat < 1 or args.rounds < 1:
        parser.error("--threads, --repeat and --rounds must be >= 1")
    return args


def header(args, suite, threads: str) -> str:
    settings = fftconv.get_settings()
    torch_version = "not installed"
    if competitors.torch_available():
        import torch
        torch_version = torch.__version__
    auto = "measures" if settings.measure else "uses the cost model"
    count = (f"{len(torch_suite.rows())} rows" if suite.mode == "torch"
             else f"{len(suite.cases)} cases")
    return (f"suite {suite.name}: {count}, dtype {args.dtype}, "
            f"best of {args.repeat} (budget {args.budget:g}s) x {args.rounds} round(s)\n"
            f"threads: {threads}\n"
            f"fftconv {fftconv.__version__} (backend {settings.backend}, "
            f"{settings.planner_effort}, auto {auto}), numpy {np.__version__}, "
            f"torch {torch_version}, python {platform.python_version()}")


def check_accuracy(results, dtype: str) -> bool:
    """Print an ``ACCURACY:`` line per error above tolerance; True if there is none."""
    bad = report.errors_above(results, TOLERANCE[dtype])
    for line in bad:
        print("ACCURACY: " + line)
    return not bad


def run_main(suite, options: Options) -> bool:
    """The main table (+ targets); returns True if every error is within tolerance."""
    comps = competitors.available(suite.competitors)
    keys = [c.key for c in comps]
    results = run_cases(suite.cases, comps, options, "cases", suite.only)
    print("\ntimes are ms per training step (best); ratios > 1 mean fft is faster, except "
          "fft/floor and auto/best (auto over the fastest of fft, direct, overlap_add); "
          "MB: peak traced memory of one step on a fresh plan")
    print(report.results_table(results, keys, memory=options.memory))
    for note in report.skip_notes(results, suite.skip_limits):
        print("  " + note)
    print("\nlargest relative error of y, dx, dw vs the fft path")
    print(report.errors_table(results, keys))
    if suite.targets:
        print("\ntargets (unmet targets are reported, not fatal)")
        print(report.targets_table(check_targets(suite.targets, results)))
    return check_accuracy(results, options.dtype)


def run_sweep(suite, options: Options, plot_path: str):
    """The 2-D kernel sweep: table with auto's picks, crossovers and the PNG."""
    comps = competitors.available(list(SWEEP_KEYS))
    options = dataclasses.replace(options, memory=False, repeat=max(options.repeat, SWEEP_REPEAT))
    busy = load_warning(options.threads)
    results = run_cases(suite.sweep, comps, options, "sweep")
    busy = busy or load_warning(options.threads)
    decisions.decide_all(results, options.dtype)
    layer = suite.sweep[0].layer_name
    print(f"\nkernel sweep ({layer}, k = {', '.join(str(c.kernel_size) for c in suite.sweep)})")
    print(report.results_table(results, [c.key for c in comps], memory=False))
    for rival in (c.key for c in comps if c.key in report.CROSSOVER_RIVALS):
        print("  " + report.crossover_text(results, rival))
    Path(plot_path).parent.mkdir(parents=True, exist_ok=True)
    title = f"one training step, {layer}, {options.dtype}, {options.threads} threads"
    print(f"plot: {report.plot_sweep(results, plot_path, title, busy)}")


def run_decisions(suite, options: Options, csv_path: str) -> bool:
    """Time fftconv's algorithms per case and compare with the cost model's picks."""
    comps = competitors.available(suite.competitors)
    options = dataclasses.replace(options, memory=False)
    results = run_cases(suite.cases, comps, options, "decisions")
    retimed = decisions.rematch(results, comps, options)
    found = decisions.decide_all(results, options.dtype)
    print("\ntimes are ms per training step (best); model: algorithm='auto' by the cost model; "
          "slowdown: model's pick over the fastest")
    print(report.decisions_table(results))
    print(f"\n{retimed} near ties (two fastest within {decisions.REMATCH:g}x) were timed "
          f"again, {decisions.REMATCH_ROUNDS} alternating rounds each")
    for line in report.decisions_summary(decisions.summarise(results),
                                         decisions.AGREEMENT_TARGET, decisions.CLOSE):
        print(line)
    path = decisions.write_csv(csv_path, results, found, options.dtype, options.threads)
    print(f"rows: {path}")
    return check_accuracy(results, options.dtype)


def _suite_named(argv) -> str:
    """The ``--suite`` value in ``argv``, or ``""``."""
    for i, arg in enumerate(argv):
        if arg.startswith("--suite="):
            return arg.split("=", 1)[1]
        if arg == "--suite" and i + 1 < len(argv):
            return argv[i + 1]
    return ""


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if _suite_named(argv) == "dask":  # its own options and cluster: bench/dask_suite.py
        from . import dask_suite
        return dask_suite.main(argv)
    args = parse_args(argv)
    start = time.perf_counter()
    suite = args.suite
    threads = set_threads(args.threads)
    options = Options(dtype=args.dtype, threads=args.threads, repeat=args.repeat,
                      budget=args.budget, skip_limits=suite.skip_limits, memory=args.memory,
                      rounds=args.rounds)
    print(header(args, suite, threads))
    warning = load_warning(args.threads)
    if warning:
        print(warning)
    if args.profile:
        print(profile_text(args.profile, profile(args.profile, args.dtype, args.threads,
                                                 max(args.repeat, 10), args.algorithm)))
        return 0
    if not suite.cases:
        print("no case left after --dims")
        accurate = True
    elif suite.mode == "decisions":
        accurate = run_decisions(suite, options, args.csv)
    elif suite.mode == "torch":
        reason = torch_suite.skip_reason()
        print(f"suite torch skipped: {reason}" if reason else "")
        accurate = reason is not None or torch_suite.run(
            args.dtype, args.threads, args.repeat, args.budget,
            set(args.dims) if args.dims else None)
    else:
        accurate = run_main(suite, options)
    if args.plot and suite.sweep:
        run_sweep(suite, options, args.plot)
    print(f"\ndone in {time.perf_counter() - start:.1f} s")
    return 0 if accurate else 1


if __name__ == "__main__":
    sys.exit(main())
