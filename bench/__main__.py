"""Command line: ``python -m bench [SUBCOMMAND] [options]``.

Subcommands: ``run`` (the default: the competitors' table), ``profile``,
``calibrate``, ``compare`` and ``experiment``; ``python -m bench SUBCOMMAND
--help`` lists each one's options.  Arguments without a subcommand are those
of ``run`` (``python -m bench --quick`` is ``python -m bench run --quick``).
See ``bench/README.md``.
"""
from __future__ import annotations

import argparse
import dataclasses
import platform
import sys
import time
from pathlib import Path
from typing import List, Optional

import numpy as np

import fftconv

from . import calibrate, competitors, compare, experiment, gpu, report, runner
from .cases import parse_case
from .profile import profile, profile_text
from .runner import Options, run_cases
from .suites import PERF_ALL, SUITES, check_targets, custom_suite
from .timing import load_warning, set_threads, torch_available

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_PLOT = RESULTS / "crossover.png"
DEFAULT_CSV = RESULTS / "decisions.csv"
#: Largest relative error (to the largest magnitude) accepted against the FFT path.
TOLERANCE = {"float32": 1e-4, "float64": 1e-10}
SWEEP_KEYS = ("fft", "direct", "overlap_add", "torch")
#: Samples per point of the kernel sweep at least: the plot shows their spread.
SWEEP_REPEAT = 9
SUBCOMMANDS = ("run", "profile", "calibrate", "compare", "experiment")


# -- the parser -------------------------------------------------------------------------------
def _threads_option(parser):
    parser.add_argument("--threads", type=int, default=fftconv.config.available_cores(),
                        help="threads for fftconv, FFTW, torch and (with threadpoolctl) BLAS "
                             "(default: all cores, %(default)s)")


def _dtype_option(parser):
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                        help="(default: %(default)s)")


def _run_options(parser):
    parser.add_argument("--suite", choices=sorted(SUITES) + ["dask"], default="default",
                        help="problem suite (default: %(default)s; perf and algorithms check "
                             "targets, decisions checks the cost model's choices, torch is "
                             "'compare torch', dask is 'experiment dask' with its options, gpu "
                             "times training steps on a CUDA device against cuDNN)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny suite for CI, a few seconds (same as --suite quick); with "
                             "--suite gpu: one row of each kind and fewer samples")
    parser.add_argument("--case", "--shape", action="append", dest="cases", metavar="SPEC",
                        help='custom case instead of a suite, e.g. "N=8,C=16,O=16,size=128x128,'
                             'k=15" (repeatable)')
    parser.add_argument("--dims", type=int, nargs="+", choices=(1, 2, 3),
                        help="only cases with these numbers of spatial axes")
    _dtype_option(parser)
    _threads_option(parser)
    parser.add_argument("--repeat", type=int, metavar="K",
                        help="timed steps per competitor, best kept, at least 3 unless K is "
                             "less (default: the suite's, 5; algorithms 10, decisions 15)")
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
    parser.add_argument("--json", metavar="PATH",
                        help="raw rows and targets of --suite gpu as JSON (default: none)")


def _compare_options(sub):
    precision = sub.add_parser(
        "precision", help="float64 against float32 plans, side by side",
        description="float64 against float32 plans (fft and auto) on the perf suite's "
                    "cases, in alternating rounds; target: float64 within 2x of float32.")
    precision.add_argument("--case", action="append", dest="cases", metavar="SPEC",
                           help="a layer instead of the perf suite's cases (repeatable)")
    _threads_option(precision)
    precision.add_argument("--rounds", type=int, default=3, help="(default: %(default)s)")
    precision.add_argument("--steps", type=int, default=2,
                           help="timed steps per plan and round (default: %(default)s)")
    torch = sub.add_parser(
        "torch", help="nn.Conv*d against fftconv.torch.convert's modules",
        description="nn.Conv*d against the modules ft.convert(model) and "
                    "ft.convert(model, example_input) make, side by side, with targets "
                    "(the same as python -m bench --suite torch).")
    _dtype_option(torch)
    _threads_option(torch)
    torch.add_argument("--repeat", type=int, default=SUITES["torch"].repeat,
                       help="timed steps per module and round (default: %(default)s)")
    torch.add_argument("--budget", type=float, default=SUITES["torch"].budget,
                       help="seconds of sampling per module (default: %(default)s)")
    torch.add_argument("--dims", type=int, nargs="+", choices=(1, 2, 3),
                       help="only rows with these numbers of spatial axes")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmarks of fftconv: one training step (forward + backward, weights "
                    "moving every step), side by side with its rivals.",
        epilog="Without a subcommand the arguments are run's: python -m bench --quick is "
               "python -m bench run --quick.")
    sub = parser.add_subparsers(dest="command", metavar="SUBCOMMAND")
    _run_options(sub.add_parser(
        "run", help="the competitors' table (the default)",
        description="Time one training step of fftconv's FFT path against its direct and "
                    "overlap-add paths, its algorithm='auto', PyTorch, a "
                    "scipy.signal.fftconvolve loop and the bare FFTs, per case of a suite; "
                    "then a 2-D kernel sweep and its plot."))
    prof = sub.add_parser(
        "profile", help="one layer's step split into its parts, beside the transform floor",
        description="Time one training step of a layer per part (transforms, placement, "
                    "products, transposes, crops, resampling, other) beside the "
                    "uninstrumented step and the transform floor.")
    prof.add_argument("case", metavar="SPEC", help='the layer, e.g. "N=8,C=16,size=128x128,k=7"')
    prof.add_argument("--algorithm", default="fft", choices=("fft", "overlap_add", "auto"),
                      help="the plan's algorithm (default: %(default)s)")
    _dtype_option(prof)
    _threads_option(prof)
    prof.add_argument("--steps", type=int, default=10,
                      help="profiled steps (default: %(default)s)")
    calibrate.add_options(sub.add_parser(
        "calibrate", help="refit fftconv.costs.RATES (and NATIVE_RATES) on this machine",
        description=calibrate.__doc__.split("\n\n")[1]))
    _compare_options(sub.add_parser(
        "compare", help="two ways of computing the same step, side by side",
        description="Two ways of computing the same step, side by side: precision "
                    "(float64 against float32) or torch (nn.Conv against converted "
                    "modules).").add_subparsers(dest="what", metavar="WHAT", required=True))
    exp = sub.add_parser(
        "experiment", help="run-time figures: threads, budget, pools, dask",
        description="Run-time figures outside the step tables.").add_subparsers(
            dest="name", metavar="NAME", required=True)
    exp.add_parser("threads", help="steps/s from 2 Python threads against serial")
    exp.add_parser("budget", help="workspace and traced peak per algorithm under "
                                  "max_workspace_bytes")
    exp.add_parser("pools", help="a fork and multiprocessing pools after a 2-thread FFT")
    experiment.add_dask_options(exp.add_parser(
        "dask", help="fftconv.dask on a volume larger than its workers' memory "
                     "(also: --suite dask)",
        description="A 3-D layer on a volume larger than the workers' memory, on a "
                    "dask.distributed LocalCluster (see bench/experiment.py)."))
    return parser


def _suite_named(argv) -> str:
    """The ``--suite`` value in ``argv``, or ``""``."""
    for i, arg in enumerate(argv):
        if arg.startswith("--suite="):
            return arg.split("=", 1)[1]
        if arg == "--suite" and i + 1 < len(argv):
            return argv[i + 1]
    return ""


def _without_suite(argv) -> List[str]:
    """``argv`` less its ``--suite NAME`` (or ``--suite=NAME``)."""
    out, skip = [], False
    for arg in argv:
        if skip or arg.startswith("--suite="):
            skip = False
            continue
        skip = arg == "--suite"
        if not skip:
            out.append(arg)
    return out


def command_line(argv) -> List[str]:
    """``argv`` with its subcommand made explicit: ``run`` when it names none, and the
    suites that are other subcommands' jobs (``--suite dask``) routed to them."""
    argv = list(argv)
    if not argv or argv[0] not in SUBCOMMANDS + ("-h", "--help"):
        argv = ["run"] + argv
    if argv[0] == "run" and _suite_named(argv[1:]) == "dask":
        argv = ["experiment", "dask"] + _without_suite(argv[1:])
    return argv


# -- the subcommands --------------------------------------------------------------------------
def header(threads: str, suite_line: Optional[str] = None) -> str:
    """What ran where: the suite, the threads and the versions."""
    settings = fftconv.get_settings()
    torch_version = "not installed"
    if torch_available():
        import torch
        torch_version = torch.__version__
    auto = "measures" if settings.measure else "uses the cost model"
    lines = [suite_line] if suite_line else []
    return "\n".join(lines + [
        f"threads: {threads}",
        f"fftconv {fftconv.__version__} (backend {settings.backend}, "
        f"{settings.planner_effort}, auto {auto}), numpy {np.__version__}, "
        f"torch {torch_version}, python {platform.python_version()}"])


def _start(threads: int, suite_line: Optional[str] = None):
    """Set the threads; print the header and any load warning."""
    print(header(set_threads(threads), suite_line))
    warning = load_warning(threads)
    if warning:
        print(warning)


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
    print("\ncolumns:")
    for line in report.results_legend(results, keys, memory=options.memory):
        print("  " + line)
    print(report.results_table(results, keys, memory=options.memory))
    for note in report.skip_notes(results, suite.skip_limits) + report.outlier_notes(results):
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
    runner.decide_all(results, options.dtype)
    layer = suite.sweep[0].layer_name
    print(f"\nkernel sweep ({layer}, k = {', '.join(str(c.kernel_size) for c in suite.sweep)})")
    print(report.results_table(results, [c.key for c in comps], memory=False))
    for note in report.outlier_notes(results):
        print("  " + note)
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
    retimed = runner.rematch(results, comps, options)
    found = runner.decide_all(results, options.dtype)
    print("\ntimes are ms per training step (best); model: algorithm='auto' by the cost model; "
          "slowdown: model's pick over the fastest")
    print(report.decisions_table(results))
    for note in report.outlier_notes(results):
        print("  " + note)
    print(f"\n{retimed} near ties (two fastest within {runner.REMATCH:g}x) were timed "
          f"again, {runner.REMATCH_ROUNDS} alternating rounds each")
    for line in report.decisions_summary(runner.summarise(results),
                                         runner.AGREEMENT_TARGET, runner.CLOSE,
                                         runner.SLOWDOWN_TARGET):
        print(line)
    path = runner.write_csv(csv_path, results, found, options.dtype, options.threads)
    print(f"rows: {path}")
    return check_accuracy(results, options.dtype)


def run_torch(args) -> bool:
    """``compare torch`` (``--suite torch``); True if every output agrees with PyTorch's."""
    reason = compare.skip_reason()
    if reason:
        print(f"compare torch skipped: {reason}")
        return True
    return compare.run_torch(args.dtype, args.threads, args.repeat, args.budget,
                             set(args.dims) if args.dims else None)


def cmd_run(args, parser) -> int:
    if args.quick and args.suite != "gpu":
        args.suite = "quick"
    if SUITES.get(args.suite) is not None and SUITES[args.suite].mode == "gpu":
        reason = gpu.skip_reason()
        if reason:   # CI has no GPU: one line, no traceback, success
            print(f"python -m bench --suite {args.suite}: skipped, {reason}")
            return 0
    try:
        suite = SUITES[args.suite]
        suite = custom_suite(suite, args.cases) if args.cases else suite
    except ValueError as exc:
        parser.error(str(exc))
    suite = suite.restricted(set(args.dims) if args.dims else None, args.full)
    args.repeat = suite.repeat if args.repeat is None else args.repeat
    args.budget = suite.budget if args.budget is None else args.budget
    args.rounds = suite.rounds if args.rounds is None else args.rounds
    if args.threads < 1 or args.repeat < 1 or args.rounds < 1:
        parser.error("--threads, --repeat and --rounds must be >= 1")
    start = time.perf_counter()
    count = (f"{len(compare.rows())} rows" if suite.mode == "torch"
             else f"{len(suite.cases)} cases"
             + (" (--quick: fewer)" if args.quick and suite.mode == "gpu" else ""))
    _start(args.threads, f"suite {suite.name}: {count}, dtype {args.dtype}, best of "
                         f"{args.repeat} (budget {args.budget:g}s) x {args.rounds} round(s)")
    options = Options(dtype=args.dtype, threads=args.threads, repeat=args.repeat,
                      budget=args.budget, skip_limits=suite.skip_limits, memory=args.memory,
                      rounds=args.rounds)
    if not suite.cases:
        print("no case left after --dims")
        accurate = True
    elif suite.mode == "decisions":
        accurate = run_decisions(suite, options, args.csv)
    elif suite.mode == "torch":
        accurate = run_torch(args)
    elif suite.mode == "gpu":
        if args.dtype != "float32":
            print(f"--dtype {args.dtype} ignored: the gpu suite and its targets are float32")
        accurate = gpu.run(suite, args.repeat, args.budget, args.quick, args.json)
    else:
        accurate = run_main(suite, options)
    if args.plot and suite.sweep:
        run_sweep(suite, options, args.plot)
    print(f"\ndone in {time.perf_counter() - start:.1f} s")
    return 0 if accurate else 1


def cmd_profile(args, parser) -> int:
    try:
        case = parse_case(args.case)
    except ValueError as exc:
        parser.error(str(exc))
    _start(args.threads)
    print(profile_text(case, profile(case, args.dtype, args.threads, args.steps,
                                     args.algorithm)))
    return 0


def cmd_calibrate(args, parser) -> int:
    return calibrate.run_calibrate(args)


def cmd_compare(args, parser) -> int:
    if args.what == "torch":
        _start(args.threads, f"compare torch: {len(compare.rows())} rows, dtype {args.dtype}")
        return 0 if run_torch(args) else 1
    try:
        cases = [parse_case(s) for s in args.cases] if args.cases else list(PERF_ALL)
    except ValueError as exc:
        parser.error(str(exc))
    _start(args.threads, f"compare precision: {len(cases)} cases")
    return compare.run_precision(cases, args.rounds, args.steps)


def cmd_experiment(args, parser) -> int:
    if args.name == "dask":
        if args.kernel % 2 == 0 or args.chunk < args.kernel:
            parser.error("--kernel must be odd and --chunk at least the kernel")
        return experiment.run_dask(args)
    print(f"== {args.name}")
    experiment.EXPERIMENTS[args.name]()
    return 0


COMMANDS = {"run": cmd_run, "profile": cmd_profile, "calibrate": cmd_calibrate,
            "compare": cmd_compare, "experiment": cmd_experiment}


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(command_line(sys.argv[1:] if argv is None else argv))
    return COMMANDS[args.command](args, parser)


if __name__ == "__main__":
    sys.exit(main())
