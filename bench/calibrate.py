"""Fit the cost model's rates (``fftconv.costs.RATES``) to this machine.

``python -m bench calibrate`` times one float32 training step (fresh plan,
warm-up, best of 3, weights changing every step) with ``direct``, ``fft`` and
``overlap_add`` on a spread of 1-D to 3-D layers, counts each run's units of
work with ``fftconv.costs.*_work``, and fits the rates by non-negative least
squares on the *relative* error (every row divided by its measured time).
It prints the fitted rates, ready to paste into ``fftconv/costs.py``, and how
often the fitted model then picks the measured-fastest algorithm.

With PyTorch installed it also times PyTorch's own convolution (``"native"``,
the extra candidate of ``fftconv.torch``'s ``algorithm="auto"``) on the same
layers and fits ``fftconv.torch.autoselect.NATIVE_RATES`` the same way
(``--only native`` times and fits that alone; ``--only fftconv`` skips it).
"""
from __future__ import annotations

import itertools
import json

import numpy as np
from scipy.optimize import nnls

import fftconv
from fftconv import costs
from fftconv.timing import best_of

from .runner import partition_of
from .timing import set_threads, time_step, torch_available

LAYERS = (
    [((2, 8, n), (8, 8, k)) for n, k in itertools.product((512, 8192, 65536), (3, 17, 129))]
    + [((n_b, 8, n, n), (8, 8, k, k)) for n_b, n, k in
       itertools.product((2, 8), (32, 96), (1, 3, 7, 13))]
    + [((1, 4, n, n, n), (4, 4, k, k, k)) for n, k in itertools.product((12, 28), (1, 3, 7))]
    + [((8, 16, 128, 128), (16, 16, k, k)) for k in (3, 15)]
    # many channels, where GEMM flops rather than memory traffic price the direct path
    + [((4, 64, 32, 32), (64, 64, k, k)) for k in (3, 5)] + [((2, 128, 16, 16), (128, 128, 3, 3))]
    + [((1, 4, 1 << 18), (4, 4, 65)), ((1, 1, 1024, 1024), (1, 1, 9, 9)),
       ((2, 4, 256, 256), (4, 4, 5, 5)), ((1, 4, 1 << 20), (4, 4, 65)),
       ((1, 1, 2048, 2048), (1, 1, 9, 9))]
    # issue 20's mid band and small layers ("same" ones as the equivalent "valid"
    # input) and the two layers the model once mispicked
    + [((8, 16, 128 + k - 1, 128 + k - 1), (16, 16, k, k)) for k in (5, 7, 9)]
    + [((4, 24, 86, 86), (24, 24, 7, 7)), ((4, 16, 30, 30, 30), (16, 16, 7, 7, 7)),
       ((4, 16, 26, 26, 26), (16, 16, 3, 3, 3)), ((32, 64, 34, 34), (64, 64, 3, 3)),
       ((8, 32, 1028), (32, 32, 5)), ((16, 8, 50, 50), (8, 8, 3, 3)),
       ((2, 8, 200, 200), (8, 8, 25, 25)), ((16, 8, 48, 48), (8, 8, 3, 3))]
    # large inputs where fft_tiles and overlap-add were once picked over the whole FFT
    + [((2, 8, 256, 256), (8, 8, 7, 7)), ((1, 4, 40, 40, 40), (4, 4, 3, 3, 3))]
    # depthwise (elementwise products): Hyena-style causal long convolutions and
    # MobileNet-style 2-D blocks
    + [((b, h, n), (h, 1, n), {"padding": "causal", "flip_kernel": True, "groups": h})
       for b, h, n in ((4, 64, 8192), (2, 256, 4096))]
    + [((8, 64, 56, 56), (64, 1, 3, 3), {"padding": "same", "groups": 64}),
       ((4, 32, 64, 64), (32, 1, 7, 7), {"padding": "same", "groups": 32})]
)
#: Overlap-add is also timed with these explicit tiles (besides the model's
#: choice), so that the fit sees small tiles, which the model rarely picks, and
#: 2-D strips (tiles as wide as the output, clipped to it).
EXTRA_TILES = {1: [(2040,), (16320,)],
               2: [(56, 56), (120, 120), (248, 248), (120, 1 << 16), (248, 1 << 16)]}
ALGORITHMS = fftconv.registry.NAMES


def step_seconds(plan, x, w, dy, repeats=3) -> float:
    """Best seconds of one training step of ``plan`` (``bench.timing.time_step``)."""

    def run(w):
        plan.forward(x, w)
        return plan.backward(dy)

    return min(time_step(run, w, repeats)[0])


def _unpacked(layer):
    """``(x_shape, w_shape, layer keywords)`` of a :data:`LAYERS` entry."""
    return layer if len(layer) == 3 else (*layer, {})


def candidates(xs, ws, **layer):
    """``(algorithm, tile)`` pairs to time for one layer: the algorithms that can run
    it (``fftconv.registry.candidates``: a finite price)."""
    geom = fftconv.plan(xs, ws, dtype=np.float32, algorithm="direct", **layer).geometry
    runs = fftconv.registry.candidates(geom, np.float32)
    pairs = [(name, None) for name in ALGORITHMS if name in runs]
    if np.prod(xs[2:]) >= 1 << 16:
        pairs += [("overlap_add", t) for t in EXTRA_TILES.get(len(xs) - 2, [])]
    return pairs


def measure(layers, max_seconds: float):
    """Rows ``(algorithm, units, seconds, geometry)`` for every layer and algorithm."""
    rng = np.random.default_rng(0)
    rows = []
    for i, entry in enumerate(layers):
        xs, ws, layer = _unpacked(entry)
        x = rng.standard_normal(xs).astype(np.float32)
        w = rng.standard_normal(ws).astype(np.float32)
        for name, tile in candidates(xs, ws, **layer):
            plan = fftconv.plan(xs, ws, dtype=np.float32, algorithm=name, tile=tile, **layer)
            g = plan.geometry
            units = fftconv.registry.REGISTRY[name].work(g, np.float32, partition_of(plan.tile))
            if costs.seconds(units) > max_seconds:
                continue  # far too slow to be chosen; timing it would only cost minutes
            dy = rng.standard_normal(g.y_shape).astype(np.float32)
            rows.append((name, units, step_seconds(plan, x, w, dy), g))
        print(f"[{i + 1}/{len(layers)}] {xs} * {ws}", flush=True)
    return rows


def time_native(xs, ws) -> float:
    """Best-of-3 seconds of one float32 training step of PyTorch's own convolution
    ("valid", as the fftconv rows), after a warm-up, weights moving as in training
    (the bridge's own measurement, ``fftconv.torch.autoselect.training_step``)."""
    import torch
    from fftconv.torch import native_conv
    from fftconv.torch.autoselect import training_step
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(xs, generator=gen, requires_grad=True)
    w = torch.randn(ws, generator=gen, requires_grad=True)
    return best_of(training_step(native_conv, x, w, None))


def measure_native(layers):
    """Rows ``("native", units, seconds, geometry)`` for every plain layer (those
    with keywords are left out: PyTorch is timed on "valid", ungrouped layers)."""
    from fftconv.torch.autoselect import native_work
    rows = []
    for i, entry in enumerate(layers):
        xs, ws, layer = _unpacked(entry)
        if layer:
            continue
        g = fftconv.plan(xs, ws, dtype=np.float32, algorithm="direct").geometry
        rows.append(("native", native_work(g, np.float32), time_native(xs, ws), g))
        print(f"[native {i + 1}/{len(layers)}] {xs} * {ws}", flush=True)
    return rows


def current_rates() -> dict:
    """``{"fftconv": RATES, "native": NATIVE_RATES}`` as the library has them (copies;
    ``NATIVE_RATES`` only with PyTorch installed)."""
    rates = {"fftconv": dict(costs.RATES)}
    if torch_available():
        from fftconv.torch.autoselect import NATIVE_RATES
        rates["native"] = dict(NATIVE_RATES)
    return rates


def price(name: str, units: dict, rates: dict) -> float:
    """Estimated seconds of a row at ``rates`` (of :func:`current_rates`' form):
    ``sum(units * rate)``, as ``fftconv.costs.seconds`` prices a step."""
    table = rates["native" if name == "native" else "fftconv"]
    return sum(n * table[unit] for unit, n in units.items())


def fit(rows, rates: dict):
    """Rates (names of ``rates``) fitted to ``rows`` by NNLS on the relative error."""
    names = sorted(rates)
    a = np.array([[units.get(n, 0.0) / t for n in names] for _, units, t, _ in rows])
    fitted, _ = nnls(a, np.ones(len(rows)))
    return dict(zip(names, fitted))


def _by_layer(rows, rates: dict) -> list:
    """Per layer timed with more than one algorithm, ``{algorithm: (estimate,
    measured time)}``; of an algorithm timed with several tiles, the tile the model
    would pick among those timed."""
    by_layer: dict = {}
    for name, units, t, g in rows:
        est, best = price(name, units, rates), by_layer.setdefault(g, {}).get(name)
        if best is None or est < best[0]:
            by_layer[g][name] = (est, t)
    return [r for r in by_layer.values() if len(r) > 1]


def agreement(rows, rates: dict) -> float:
    """Fraction of layers where the model's cheapest algorithm was the measured fastest."""
    hits = [min(r, key=lambda n: r[n][0]) == min(r, key=lambda n: r[n][1])
            for r in _by_layer(rows, rates)]
    return sum(hits) / max(len(hits), 1)


def slowdowns(rows, rates: dict) -> list:
    """Per layer, the measured time of the model's cheapest algorithm over the
    measured fastest (1 where it picks the fastest): ``auto``'s slowdown."""
    return [r[min(r, key=lambda n: r[n][0])][1] / min(t for _, t in r.values())
            for r in _by_layer(rows, rates)]


def save_rows(path, rows, native_rows) -> None:
    """Write the timed rows to ``path`` (JSON), for refitting without timing again."""
    with open(path, "w") as f:
        json.dump([[name, units, t, repr(g)] for name, units, t, g in rows + native_rows], f)


def load_rows(path):
    """The rows :func:`save_rows` wrote, as ``(rows, native_rows)`` (geometries as text)."""
    with open(path) as f:
        loaded = [tuple(r) for r in json.load(f)]
    return ([r for r in loaded if r[0] != "native"], [r for r in loaded if r[0] == "native"])


def bridge_agreement(rows, native_rows, rates: dict) -> float:
    """Fraction of layers where ``fftconv.torch``'s cost-model rule (native unless an
    fftconv transform algorithm is estimated ``NATIVE_MARGIN`` times cheaper) picks
    the measured faster of PyTorch's convolution and fftconv's fastest algorithm."""
    from fftconv.torch.autoselect import ENGINE_CANDIDATES, NATIVE_MARGIN
    native = {g: (price(name, units, rates), t) for name, units, t, g in native_rows}
    hits = []
    for g, (native_est, native_t) in native.items():
        ours = [(price(name, units, rates), t, name) for name, units, t, gg in rows if gg == g]
        priced = [est for est, _, name in ours if name in ENGINE_CANDIDATES]
        if not ours or not priced:
            continue
        model_native = native_est <= NATIVE_MARGIN * min(priced)
        hits.append(model_native == (native_t <= min(t for _, t, _ in ours)))
    return sum(hits) / max(len(hits), 1)


def add_options(parser) -> None:
    """The options of ``calibrate`` on the argparse parser ``parser``."""
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for fftconv, torch and BLAS (default: all cores)")
    parser.add_argument("--max-seconds", type=float, default=3.0,
                        help="skip runs the current model prices above this "
                             "(default: %(default)s)")
    parser.add_argument("--save", metavar="FILE",
                        help="also write the timed rows to FILE (JSON)")
    parser.add_argument("--load", metavar="FILE",
                        help="fit the rows of an earlier --save instead of timing")
    parser.add_argument("--only", choices=("fftconv", "native"),
                        help="time and fit only fftconv's algorithms, or only PyTorch's "
                             "convolution (default: both, native if torch is installed)")


def run_calibrate(args) -> int:
    """Time, fit and print the rates; returns the exit status (0)."""
    set_threads(args.threads or fftconv.config.available_cores())
    rows, native_rows = [], []
    if args.load:
        rows, native_rows = load_rows(args.load)
    else:
        if args.only != "native":
            rows = measure(LAYERS, args.max_seconds)
        if args.only != "fftconv" and torch_available():
            native_rows = measure_native(LAYERS)
    if args.save:
        save_rows(args.save, rows, native_rows)
    rates = current_rates()
    fits = [(rows, "fftconv", "RATES", "fftconv/costs.py"),
            (native_rows, "native", "NATIVE_RATES", "fftconv/torch/autoselect.py")]
    print(f"current rates: model picks the measured fastest on "
          f"{agreement(rows + native_rows, rates):.0%} of layers")
    fitted = {**rates, **{key: fit(subset, rates[key]) for subset, key, _, _ in fits if subset}}
    print(f"fitted rates:  model picks the measured fastest on "
          f"{agreement(rows + native_rows, fitted):.0%} of layers")
    for label, table in (("current", rates), ("fitted", fitted)):
        slow = slowdowns(rows, table)
        if slow:
            print(f"{label} rates: the model's pick within 1.2x of the measured fastest on "
                  f"{sum(s <= 1.2 for s in slow)} of {len(slow)} layers, worst "
                  f"{max(slow):.2f}x")
    if rows and native_rows:
        print(f"fftconv.torch's rule (native unless fftconv is estimated NATIVE_MARGIN times "
              f"faster) picks the measured faster on "
              f"{bridge_agreement(rows, native_rows, fitted):.0%} of layers")
    for subset, key, name, where in fits:
        if subset:
            ratio = np.array([price(n, units, fitted) / t for n, units, t, _ in subset])
            print(f"{name}: estimate / measured over {len(subset)} runs: median "
                  f"{np.median(ratio):.2f}, range {ratio.min():.2f} to {ratio.max():.2f}")
            print(f"{name} = {{   # paste into {where}")
            for unit, value in sorted(fitted[key].items()):
                print(f'    "{unit}": {value:.3g},')
            print("}")
    return 0
