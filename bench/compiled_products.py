"""``python -m bench.compiled_products``: the numba channel products against the GEMMs.

Side by side in one run, on the spectra of four layers (float32 -> complex64
spectra, and float64 -> complex128):

* the products alone: ``fftconv.contraction.GemmProducts`` (batched GEMMs per
  frequency, block transposes to and from the transforms' layout) against
  ``fftconv.compiled.CompiledProducts`` (tuple GEMMs on the batch-major spectra):
  ``kernel`` (the weights' spectrum into each one's layout), ``forward`` (``Y``,
  keeping ``X``) and ``backward`` (``DX`` and ``DW`` from the kept ``X``), each the
  minimum of ``--repeat`` calls per round over ``--rounds`` rounds, the two
  alternating round by round;
* a whole training step, ``fftconv.plan(..., algorithm="fft").vjp`` and the
  pullback, the weights moved before every step, on a plan whose products are
  the GEMMs against one whose products are compiled (``contraction.products_for``
  patched while that plan is built: a plan owns its engine), with the largest
  difference between their results.

Ratios are compiled / GEMMs: below 1 the compiled products are faster.  The
machine's load (``os.getloadavg``, as ``uptime`` shows it) is printed before
and after: other work on a 2-core machine stalls threads, so every figure is a
minimum over repeats.  ``OMP_WAIT_POLICY=PASSIVE`` is set (unless set already)
before numpy and FFTW load their OpenMP runtimes.

Example::

    python -m bench.compiled_products                  # all four layers, both dtypes
    python -m bench.compiled_products --dtype float32 --rounds 5 --repeat 5
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402 - after the OpenMP setting, before numpy loads
import platform  # noqa: E402
import time  # noqa: E402
from typing import Callable, Dict, Tuple  # noqa: E402

import numpy as np  # noqa: E402

import fftconv  # noqa: E402
from fftconv import compiled, contraction  # noqa: E402
from fftconv.backends import host  # noqa: E402

from .cases import Case, make_data  # noqa: E402
from .timing import WEIGHT_STEP, alternating, set_threads  # noqa: E402

#: The layers: the FFT path's largest bench case ("same"), the long 1-D kernel, the
#: small-channel 3-D case and the wide mid-band case of issue 20.
CASES: Tuple[Tuple[str, Case], ...] = (
    ("2-D N8 16->16 128^2 k15 same", Case(8, 16, 16, (128, 128), (15, 15), "same")),
    ("1-D N8 32->32 16384 k1023", Case(8, 32, 32, (16384,), (1023,))),
    ("3-D N2 8->8 40^3 k9", Case(2, 8, 8, (40, 40, 40), (9, 9, 9))),
    ("2-D N32 64->64 32^2 k3 same", Case(32, 64, 64, (32, 32), (3, 3), "same")),
)
COMPLEX = {"float32": np.complex64, "float64": np.complex128}


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average: {one:.2f}, {five:.2f}, {fifteen:.2f}"


def _spectrum(rng, shape, dtype):
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)


def product_calls(case: Case, dtype: str, threads: int) -> Dict[str, Dict[str, Callable]]:
    """``{"gemm"|"compiled": {op: call}}`` on random spectra of ``case``'s shapes (its
    plan's number of frequencies ``F``), each with its own buffers."""
    geom = fftconv.plan(case.x_shape, case.w_shape, dtype=dtype, algorithm="fft",
                        **case.layer).geometry
    n_freq, groups = geom.spectrum_size, geom.groups
    n, c, o = geom.batch, geom.in_channels, geom.out_channels
    cdt = COMPLEX[dtype]
    rng = np.random.default_rng(0)
    x, dy = _spectrum(rng, (n, c, n_freq), cdt), _spectrum(rng, (n, o, n_freq), cdt)
    conj_k = _spectrum(rng, (o, c // groups, n_freq), cdt)
    calls: Dict[str, Dict[str, Callable]] = {}
    for name, products in (("gemm", contraction.GemmProducts(groups, host())),
                           ("compiled", compiled.CompiledProducts(groups, host()))):
        major = products.frequency_major
        k = products.kernel(conj_k, threads)
        y = np.empty((n_freq, n, o) if major else (n, o, n_freq), cdt)
        dx = np.empty((n_freq, n, c) if major else (n, c, n_freq), cdt)
        dw = np.empty((o, c // groups, n_freq), cdt)
        kept = np.empty(products.kept_shape(n_freq, n, c), cdt)
        calls[name] = {
            "kernel": lambda p=products: p.kernel(conj_k, threads),
            "forward": lambda p=products, k=k, y=y, kept=kept: p.forward(x, k, y, kept,
                                                                         threads),
            "backward": lambda p=products, k=k, dx=dx, dw=dw, kept=kept: p.backward(
                kept, dy, k, dx, dw, None, threads),
        }
    return calls


def time_products(calls, rounds: int, repeat: int) -> Dict[Tuple[str, str], float]:
    """Minimum seconds per ``(implementation, op)``, the implementations alternating."""
    best: Dict[Tuple[str, str], float] = {}
    for _, impl in alternating(list(calls), rounds):
        for op, call in calls[impl].items():
            call()                                   # untimed: caches warm for this op
            for _ in range(repeat):
                start = time.perf_counter()
                call()
                took = time.perf_counter() - start
                best[impl, op] = min(best.get((impl, op), took), took)
    return best


def step_plans(case: Case, dtype: str) -> Dict[str, object]:
    """Two plans of ``case``: products as GEMMs (the ``compiled`` setting off), and
    compiled (on; the products a plan runs are fixed when it is built)."""
    plans = {}
    for name, on in (("gemm", False), ("compiled", True)):
        with fftconv.config.using(compiled=on):
            plans[name] = fftconv.plan(case.x_shape, case.w_shape, dtype=dtype,
                                       algorithm="fft", **case.layer)
    return plans


def time_steps(case: Case, dtype: str, rounds: int, repeat: int) -> Tuple[Dict[str, float],
                                                                          float]:
    """Minimum seconds of a training step per plan, and the largest difference of their
    results (relative to the largest magnitude)."""
    data = make_data(case, dtype)
    plans = step_plans(case, dtype)
    weights = {name: data.w.copy() for name in plans}
    results = {}
    for name, p in plans.items():
        y, pullback = p.vjp(data.x, weights[name], data.b)
        results[name] = (y,) + tuple(pullback(data.dy)[:2])
    diff = max(float(np.abs(a - b).max() / np.abs(b).max())
               for a, b in zip(results["compiled"], results["gemm"]))
    best: Dict[str, float] = {}
    for _, name in alternating(list(plans), rounds):
        p, w = plans[name], weights[name]
        for _ in range(repeat):
            w += WEIGHT_STEP
            start = time.perf_counter()
            y, pullback = p.vjp(data.x, w, data.b)
            pullback(data.dy)
            took = time.perf_counter() - start
            best[name] = min(best.get(name, took), took)
    return best, diff


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.compiled_products",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtype", choices=("float32", "float64", "both"), default="both")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=6)
    parser.add_argument("--case", action="append", default=None,
                        help="a layer's label prefix, e.g. '2-D N8' (default: all four)")
    args = parser.parse_args(argv)
    if not compiled.AVAILABLE:
        raise SystemExit("numba is not installed: pip install 'fftconv[compiled]'")
    dtypes = ("float32", "float64") if args.dtype == "both" else (args.dtype,)
    cases = [(label, case) for label, case in CASES
             if not args.case or any(label.startswith(c) for c in args.case)]
    threads = set_threads(args.threads)
    print(f"# python -m bench.compiled_products (rounds {args.rounds}, repeat {args.repeat})")
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores; threads: "
          f"{threads}; numba {__import__('numba').__version__}, numpy {np.__version__}")
    start = time.perf_counter()
    compiled.warm_up(dtypes)
    print(f"# compiled kernels ready in {time.perf_counter() - start:.1f} s (numba's cache)")
    print(f"# before: {load()}")
    print("\n## products alone (ms, min; ratio = compiled / gemm)\n")
    print("| layer | dtype | F | op | gemm | compiled | ratio |")
    print("|---|---|---|---|---|---|---|")
    for label, case in cases:
        for dtype in dtypes:
            calls = product_calls(case, dtype, args.threads)
            best = time_products(calls, args.rounds, args.repeat)
            n_freq = fftconv.plan(case.x_shape, case.w_shape, dtype=dtype, algorithm="fft",
                                  **case.layer).geometry.spectrum_size
            total = {impl: sum(best[impl, op] for op in ("forward", "backward"))
                     for impl in ("gemm", "compiled")}
            for op in ("kernel", "forward", "backward"):
                g, c = best["gemm", op], best["compiled", op]
                print(f"| {label} | {dtype} | {n_freq} | {op} | {g * 1e3:.2f} | {c * 1e3:.2f} "
                      f"| {c / g:.2f} |", flush=True)
            g, c = total["gemm"], total["compiled"]
            print(f"| {label} | {dtype} | {n_freq} | forward + backward | {g * 1e3:.2f} | "
                  f"{c * 1e3:.2f} | {c / g:.2f} |", flush=True)
    print(f"\n# {load()}")
    print("\n## a training step: plan.vjp + pullback, algorithm='fft' (ms, min)\n")
    print("| layer | dtype | gemm step | compiled step | ratio | max rel. difference |")
    print("|---|---|---|---|---|---|")
    for label, case in cases:
        for dtype in dtypes:
            best, diff = time_steps(case, dtype, args.rounds, args.repeat)
            g, c = best["gemm"], best["compiled"]
            print(f"| {label} | {dtype} | {g * 1e3:.1f} | {c * 1e3:.1f} | {c / g:.2f} | "
                  f"{diff:.1e} |", flush=True)
    print(f"\n# after: {load()}")


if __name__ == "__main__":
    main()
