"""``python -m bench compare``: two ways of computing the same step, side by side.

``compare precision`` (float64 against float32).  For every case of
``--suite perf`` (or ``--case SPEC``) and each of the FFT path and
``algorithm="auto"``, a float32 and a float64 plan take training steps
(forward + backward, weights moving before every step) in alternating order,
``--rounds`` times ``--steps`` steps each, so that both precisions see the same
state of a shared machine; the table gives each one's best step and the ratio
against the target, float64 within 2x of float32.

``compare torch`` (also ``python -m bench --suite torch``): ``nn.Conv*d``
against the module ``fftconv.torch.convert`` makes.  Each row is one PyTorch
layer and the same layer converted twice, same weights, ``algorithm="auto"``:
by ``ft.convert(model)`` (the cost model picks fftconv's engine or PyTorch's
own convolution per layer) and by ``ft.convert(model, example_input)`` (each
layer measured at its input, the verdict persisted beside the other measured
choices).  A step is the forward pass, ``loss = (y * dy).sum()`` and its
backward pass (``dx``, ``dw``, ``db``), float32 by default, on the threads of
``--threads`` (torch, FFTW and BLAS alike).  Per round, each one warms up and
is then sampled back to back (see ``bench.timing`` for why samples are not
interleaved), and rounds alternate which goes first; the figure is the best
sample, the spread the median.

The torch rows: the perf suite's layer table ("valid"), typical CNN layers
(2-D k3 with 64 channels, 1-D k3 and k9, "same"), and a small whole model
with long 1-D kernels.  Targets (ratio = module time / ``nn`` time): at most
1.1 on every row, at most 0.1 at 2-D k >= 15 (16 channels, 128x128), at most
0.05 at 1-D k >= 1023 (single layers).  The accuracy column checks the forward
output only (the tests check gradients), against 1e-4 in float32 (the
contract's 1e-5 is for fftconv against an exact oracle; this compares two
float32 computations).
"""
from __future__ import annotations

import copy
import dataclasses
import statistics
from typing import Callable, List, Optional

from fftconv.timing import WEIGHT_STEP, samples

from .report import fmt, table
from .suites import PERF_CASES
from .timing import MIN_SAMPLES, alternating, plan_step, side_by_side, torch_available

# -- float64 against float32 ---------------------------------------------------------------
#: float64 steps should take at most this many times the float32 steps.
TARGET = 2.0
ALGORITHMS = ("fft", "auto")


def compare_precision(case, algorithm: str, rounds: int, steps: int) -> dict:
    """Best seconds per step in float32 and float64, measured side by side."""
    steps_of = {dtype: plan_step(case, dtype, algorithm) for dtype in ("float32", "float64")}
    taken = side_by_side({d: (run, w) for d, (run, w, _) in steps_of.items()}, rounds, steps)
    return {"float32": min(taken["float32"]), "float64": min(taken["float64"]),
            "chose": {d: p.algorithm for d, (_, _, p) in steps_of.items()}}


def run_precision(cases, rounds: int, steps: int) -> int:
    """Print the float64/float32 table of ``cases``; returns the exit status (0)."""
    rows, worst = [], 0.0
    for case in cases:
        for algorithm in ALGORITHMS:
            got = compare_precision(case, algorithm, rounds, steps)
            ratio = got["float64"] / got["float32"]
            worst = max(worst, ratio)
            chose = "/".join(dict.fromkeys(got["chose"].values()))
            rows.append([case.name, algorithm, chose, f"{got['float32'] * 1e3:.1f}",
                         f"{got['float64'] * 1e3:.1f}", f"{ratio:.2f}",
                         "yes" if ratio <= TARGET else "NO"])
            print(f"  {case.name} {algorithm}: {ratio:.2f}", flush=True)
    print("\nms per training step (best of the alternating samples)")
    print(table(["case", "algorithm", "ran", "float32 ms", "float64 ms", "f64/f32",
                        f"<= {TARGET:g}"], rows))
    print(f"\nworst float64/float32: {worst:.2f} (target <= {TARGET:g})")
    return 0


# -- nn.Conv against the converted module ----------------------------------------------------
#: Rounds of (torch block, fftconv block), alternating which runs first.
ROUNDS = 2
#: Largest relative error of ``y`` (to its largest magnitude) accepted, per dtype.
TOLERANCE = {"float32": 1e-4, "float64": 1e-10}


@dataclasses.dataclass(frozen=True)
class Row:
    """One timed PyTorch model: ``make()`` builds it (seeded), on input ``x_shape``."""

    label: str
    kind: str                    # "perf layer", "typical layer", "model"
    make: Callable
    x_shape: tuple
    ndim: int
    kernel: int                  # the largest kernel in the row

    def bound(self) -> float:
        """The target ratio for this row: the issue's bounds for single layers (2-D
        k >= 15 with 16 channels at 128x128; 1-D k >= 1023), 1.1 elsewhere and for
        the whole model."""
        if self.kind == "model":
            return 1.1
        if self.ndim == 2 and self.kernel >= 15 and self.kind == "perf layer":
            return 0.1
        if self.ndim == 1 and self.kernel >= 1023:
            return 0.05
        return 1.1


def _conv(ndim: int, c: int, o: int, k: int, padding):
    import torch
    return lambda: getattr(torch.nn, f"Conv{ndim}d")(c, o, k, padding=padding)


def _long_kernel_model():
    """A small 1-D model with long kernels (an audio front end / denoiser shape)."""
    import torch.nn as nn
    return nn.Sequential(nn.Conv1d(4, 16, 511, padding="same"), nn.ReLU(),
                         nn.Conv1d(16, 16, 1023, padding="same"), nn.ReLU(),
                         nn.Conv1d(16, 4, 3, padding="same"))


def rows() -> List[Row]:
    """The suite's rows, perf layers first."""
    out = [Row(f"{c.name} valid", "perf layer", _conv(c.ndim, c.in_channels, c.out_channels,
                                                       c.kernel_size, 0),
               c.x_shape, c.ndim, c.kernel_size) for c in PERF_CASES]
    typical = [(2, 8, 64, 32, 3), (2, 8, 64, 56, 3), (1, 8, 64, 4096, 3), (1, 8, 64, 4096, 9)]
    out += [Row(f"{nd}d N{n} {c}>{c} {'x'.join([str(s)] * nd)} k{k} same", "typical layer",
                _conv(nd, c, c, k, "same"), (n, c) + (s,) * nd, nd, k)
            for nd, n, c, s, k in typical]
    out.append(Row("1d model 4>16>16>4 16384, k511+k1023+k3 same", "model", _long_kernel_model,
                   (4, 4, 16384), 1, 1023))
    return out


@dataclasses.dataclass
class Timing:
    samples: List[float] = dataclasses.field(default_factory=list)

    @property
    def best(self) -> float:
        return min(self.samples)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)


def _step(model, x, dy):
    """``(step, prepare)``: one training step (forward, ``(y * dy).sum()``, backward) and,
    untimed before it, the parameters moved by ``WEIGHT_STEP`` and the gradients cleared."""
    import torch

    def prepare():
        with torch.no_grad():
            for p in model.parameters():
                p.add_(WEIGHT_STEP)
        model.zero_grad(set_to_none=True)
        x.grad = None

    def step():
        (model(x) * dy).sum().backward()

    return step, prepare


def measure(row: Row, dtype: str, repeat: int, budget: float) -> dict:
    """Time ``row`` as PyTorch built it and converted; check the outputs agree."""
    import torch
    import fftconv.torch as ft
    torch.manual_seed(0)
    tdtype = getattr(torch, dtype)
    native = row.make().to(tdtype)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(row.x_shape, generator=gen, dtype=tdtype, requires_grad=True)
    models = {"torch": native, "model": ft.convert(copy.deepcopy(native)),
              "measured": ft.convert(copy.deepcopy(native), x.detach())}
    with torch.no_grad():
        y = {key: m(x) for key, m in models.items()}
    scale = y["torch"].abs().max()
    error = max(float((y[key] - y["torch"]).abs().max() / scale) for key in ("model", "measured"))
    dy = torch.randn(y["torch"].shape, generator=gen, dtype=tdtype)
    runs = {key: _step(m, x, dy) for key, m in models.items()}
    timings = {key: Timing() for key in runs}
    for _, key in alternating(runs, ROUNDS):
        step, prepare = runs[key]
        timings[key].samples += samples(step, repeats=repeat, prepare=prepare,
                                        budget=budget / ROUNDS,
                                        min_samples=min(MIN_SAMPLES, repeat))
    picks = {key: [m.choice(i) for m, i in _inputs_of(models[key], x)]
             for key in ("model", "measured")}
    return {"timings": timings, "error": error, "picks": picks}


def _inputs_of(model, x):
    """``(module, its input)`` for every fftconv module of ``model`` on input ``x``."""
    import torch
    import fftconv.torch as ft
    kinds = tuple(getattr(ft, f"FFTConv{t}{nd}d") for t in ("", "Transpose") for nd in (1, 2, 3))
    seen = []
    hooks = [m.register_forward_pre_hook(lambda mod, args: seen.append((mod, args[0])))
             for m in model.modules() if isinstance(m, kinds)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return seen


def run_torch(dtype: str, threads: int, repeat: int, budget: float, dims=None) -> bool:
    """Print the table and the targets; True if every output agrees with PyTorch's.

    The measured verdicts go to a fresh cache directory, so every run measures
    (a user's persisted verdicts are neither reused nor changed)."""
    import os
    import tempfile
    with tempfile.TemporaryDirectory(prefix="fftconv-bench-torch-") as cache:
        previous = os.environ.get("FFTCONV_CACHE_DIR")
        os.environ["FFTCONV_CACHE_DIR"] = cache
        try:
            return _run(dtype, threads, repeat, budget, dims)
        finally:
            if previous is None:
                os.environ.pop("FFTCONV_CACHE_DIR")
            else:
                os.environ["FFTCONV_CACHE_DIR"] = previous


def _run(dtype: str, threads: int, repeat: int, budget: float, dims=None) -> bool:
    selected = [r for r in rows() if dims is None or r.ndim in dims]
    results = []
    for i, row in enumerate(selected):
        results.append((row, measure(row, dtype, repeat, budget)))
        print(f"[{i + 1}/{len(selected)}] {row.label}", flush=True)
    print(f"\ntimes are ms per training step (forward + backward), best of the samples "
          f"(median); ratio: module / nn.Conv; model: ft.convert(model), measured: "
          f"ft.convert(model, example_input); runs: what the module ran; {dtype}, "
          f"{threads} threads")
    print(table(["row", "nn.Conv ms", "model ms", "ratio", "runs", "measured ms", "ratio",
                 "runs", "target", "met", "max rel err y"],
                [_cells(row, r) for row, r in results]))
    for key in ("model", "measured"):
        met = [_ratio(r, key) <= row.bound() for row, r in results]
        print(f"\ntargets met by ft.convert(model{', example_input' * (key == 'measured')}) on "
              f"{sum(met)}/{len(met)} rows" + ("" if all(met) else "; unmet: " + ", ".join(
                  row.label for (row, _), ok in zip(results, met) if not ok)))
    print(rule_of_thumb(results))
    bad = [row.label for row, r in results if not r["error"] <= TOLERANCE[dtype]]
    for label in bad:
        print(f"ACCURACY: {label}: the converted module's y differs from PyTorch's")
    return not bad


def _ratio(result, key: str) -> float:
    t = result["timings"]
    return t[key].best / t["torch"].best


def _cells(row: Row, result) -> list:
    t = result["timings"]
    ms = lambda tm: f"{1e3 * tm.best:.3g} ({1e3 * tm.median:.3g})"  # noqa: E731
    cells = [row.label, ms(t["torch"])]
    for key in ("model", "measured"):
        cells += [ms(t[key]), fmt(_ratio(result, key), ".3f"),
                  "+".join(dict.fromkeys(result["picks"][key]))]
    met = ["yes" if _ratio(result, key) <= row.bound() else "NO" for key in ("model", "measured")]
    return cells + [f"<= {row.bound():g}", "/".join(met), f"{result['error']:.1e}"]


def rule_of_thumb(results) -> str:
    """The smallest kernel per dimensionality at which the measured module ran
    fftconv's engine and beat PyTorch by 2x, from this run's single layers."""
    lines = []
    for nd in (1, 2, 3):
        single = [(row.kernel, _ratio(r, "measured"), r["picks"]["measured"][0])
                  for row, r in results
                  if row.ndim == nd and row.kind != "model"]
        fast = [k for k, ratio, pick in single if pick != "native" and ratio <= 0.5]
        ran_native = sorted(k for k, _, pick in single if pick == "native")
        if single:
            lines.append(f"  {nd}-D: PyTorch's own convolution at k {ran_native or 'none'}; "
                         f"fftconv at least 2x faster from k "
                         f"{min(fast) if fast else 'none of these'}")
    return "rule of thumb (this run):\n" + "\n".join(lines)


def skip_reason() -> Optional[str]:
    """Why the torch comparison cannot run here, or ``None``."""
    return None if torch_available() else "PyTorch is not installed (pip install '.[torch]')"
