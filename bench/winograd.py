"""Winograd against direct, FFT and PyTorch's CPU convolution: ``python -m bench.winograd``.

One float32 training step (forward, then both gradients, the weights moving
between steps) of each layer, for fftconv's ``winograd``, ``direct``, ``fft``
and ``auto`` plans and for ``torch.nn.functional.conv{1,2,3}d`` with autograd,
side by side in one run: the competitors alternate in whole blocks of samples
(``bench.timing.side_by_side``) and each keeps the minimum of its samples, the
usual figure on a machine shared with other work.  Threads: ``--threads``
(default 2) for fftconv, its BLAS and torch; ``OMP_WAIT_POLICY=PASSIVE`` (set
by ``bench/__init__.py``).  Prints a table of milliseconds and the ratios
winograd/x, the model's pick (``auto``) and the load average.

Options: ``--rounds`` (blocks per competitor, default 3), ``--repeat``
(samples per block, default 5), ``--threads``, ``--case`` (``2d-k3-64``,
... as in :data:`CASES`; all by default).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Dict, List, NamedTuple, Tuple

import numpy as np

import fftconv
from fftconv.algorithms import winograd

from .timing import set_threads, side_by_side, torch_available


class Layer(NamedTuple):
    """One benchmark layer: ``x (N, C, *size) * w (O, C, *kernel)``, fftconv's keywords."""

    name: str
    x_shape: Tuple[int, ...]
    w_shape: Tuple[int, ...]
    padding: object


#: The layers of issue 20's small and mid band.
CASES = (
    Layer("2d-k3-64", (32, 64, 32, 32), (64, 64, 3, 3), "same"),
    Layer("2d-k3-8", (16, 8, 48, 48), (8, 8, 3, 3), "valid"),
    Layer("2d-k5-16", (8, 16, 128, 128), (16, 16, 5, 5), "same"),
    Layer("3d-k3-16", (4, 16, 24, 24, 24), (16, 16, 3, 3, 3), "valid"),
)

#: fftconv's algorithms timed (``auto``: the cost model's pick, shown in the table).
OWN = ("winograd", "direct", "fft", "auto")


def _fftconv_step(layer: Layer, algorithm: str, x, dy) -> Tuple[Callable, str]:
    """``(run(w), algorithm run)`` for one fftconv plan."""
    p = fftconv.plan(layer.x_shape, layer.w_shape, dtype=np.float32, algorithm=algorithm,
                     padding=layer.padding)

    def run(w):
        p.forward(x, w)
        return p.backward(dy)

    return run, p.algorithm


def _torch_step(layer: Layer, x, dy) -> Callable:
    """``run(w)`` for PyTorch's convolution with autograd (``w`` is a numpy array
    moved in place by the timer; the tensor shares its memory)."""
    import torch
    conv = {1: torch.nn.functional.conv1d, 2: torch.nn.functional.conv2d,
            3: torch.nn.functional.conv3d}[len(layer.x_shape) - 2]
    xt = torch.from_numpy(x).requires_grad_(True)
    dyt = torch.from_numpy(dy)
    tensors: Dict[int, object] = {}

    def run(w):
        wt = tensors.get(id(w))
        if wt is None:
            wt = tensors[id(w)] = torch.from_numpy(w).requires_grad_(True)
        xt.grad = None
        wt.grad = None
        y = conv(xt, wt, padding=layer.padding)
        y.backward(dyt)
        return y, xt.grad, wt.grad

    return run


def run_layer(layer: Layer, rounds: int, repeat: int) -> Tuple[Dict[str, float], str]:
    """``({competitor: best seconds}, auto's pick)`` for one layer."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(layer.x_shape).astype(np.float32)
    fan_in = int(np.prod(layer.w_shape[1:]))
    w0 = (rng.standard_normal(layer.w_shape) * fan_in ** -0.5).astype(np.float32)
    y_shape = fftconv.plan(layer.x_shape, layer.w_shape, dtype=np.float32, algorithm="direct",
                           padding=layer.padding).out_shape
    dy = rng.standard_normal(y_shape).astype(np.float32)
    steps = {}
    pick = ""
    for name in OWN:
        run, chosen = _fftconv_step(layer, name, x, dy)
        steps[name] = (run, w0.copy())
        if name == "auto":
            pick = chosen
    if torch_available():
        steps["torch"] = (_torch_step(layer, x, dy), w0.copy())
    taken = side_by_side(steps, rounds, repeat)
    return {key: min(t) for key, t in taken.items()}, pick


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.winograd",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--case", action="append", choices=[c.name for c in CASES])
    args = parser.parse_args(argv)
    print(set_threads(args.threads))
    print(f"load average before: {os.getloadavg()}")
    rows = []
    for layer in CASES:
        if args.case and layer.name not in args.case:
            continue
        seconds, pick = run_layer(layer, args.rounds, args.repeat)
        rows.append((layer, seconds, pick))
        cells = "  ".join(f"{k} {1e3 * t:8.2f}" for k, t in seconds.items())
        ratios = "  ".join(f"w/{k} {seconds['winograd'] / t:5.2f}" for k, t in seconds.items()
                           if k != "winograd")
        tiles = "x".join(f"F({a.m},{a.r})" for a in winograd.axes_of(
            fftconv.plan(layer.x_shape, layer.w_shape, dtype=np.float32, algorithm="winograd",
                         padding=layer.padding).geometry))
        print(f"{layer.name:10s} x{layer.x_shape} w{layer.w_shape} {layer.padding!r} [{tiles}]"
              f"\n    ms: {cells}\n    ratios: {ratios}\n    auto picked {pick!r}", flush=True)
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
