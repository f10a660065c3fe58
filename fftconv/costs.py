"""Cost model: estimated seconds of one training step per algorithm.

A training step is the forward pass and both gradients.  The model counts
the units of work each algorithm does (``*_work`` functions) and prices them
with :data:`RATES`, calibrated on this project's reference machine;
``algorithm="auto"`` takes the cheapest estimate, and ``measure=True``
replaces estimates by timings.

* ``direct``: ``3 * 2 * N * C_out * Cg * prod(out) * prod(k)`` GEMM flops,
  the elements copied and accumulated (stacked operands and per-tap sums for
  stride 1, :func:`fftconv.direct.flat_work`; patch copies otherwise) and a
  fixed overhead per GEMM call.
* ``fft``: a fixed cost per pass (six transform calls, the products'
  Python loop), six batched transforms (``rows * L * log2(L)`` each, halved for
  real data), the per-frequency channel products (complex multiply-adds plus
  the spectrum traffic of transposes and folds), and copying operands in and
  results out.
* ``overlap_add``: the FFT work of one tile (its input transformed again in
  the backward pass when the tiles take several passes) times the number of tiles, plus the weight transform, done once; the fixed
  costs once per pass of tiles (``overlap_add.tiles_per_pass``), not per tile,
  and the per-tile window and tile copies, whose Python cost makes many small
  tiles dear.

float64 and complex128 work is priced at twice the single-precision rate.
"""
from __future__ import annotations

import itertools
import math
from typing import Dict, Tuple

import numpy as np

from . import direct, overlap_add
from .geometry import ConvGeometry, next_fast_length, tile_geometry

#: Seconds per unit of work.  Fitted by ``python -m bench.calibrate`` (non-negative
#: least squares on the relative error of 41 float32 layers, 1-D to 3-D, timed
#: with all three algorithms and, on large inputs, overlap-add with several
#: tiles, 2-D strips included; 2 threads, on the 2-core AMD EPYC reference VM
#: with pyFFTW 0.15 and OpenBLAS 0.3.31).  The fit folds per-element costs into
#: the terms that explain them best (``signal_element`` and ``tile_copy`` came
#: out 0), so read them as a model, not as hardware rates.  Refitted after the
#: products went onto two threads and single-pass overlap-add kept its
#: spectrum: the model picks the measured-fastest algorithm on 83% of the
#: calibration layers (80% with the previous rates on the same code);
#: estimate/measured median 0.93, range 0.55-1.65 over 148 runs.
RATES = {
    "call": 0.000228,
    "direct_element": 2.8e-10,
    "direct_offset": 2.38e-07,
    "fft_call": 0.000204,
    "fft_element_log": 4.38e-10,
    "fft_large_element_log": 4.7e-10,
    "gemm_flop": 7.55e-12,
    "signal_element": 0.0,
    "spectrum_element": 2.84e-09,
    "spectrum_mac": 6.24e-11,
    "tile_copy": 0.0,
}

Work = Dict[str, float]


def _precision(dtype) -> float:
    return 2.0 if np.dtype(dtype) in (np.dtype(np.float64), np.dtype(np.complex128)) else 1.0


def seconds(work: Work) -> float:
    """Price ``work`` with :data:`RATES`."""
    return sum(units * RATES[name] for name, units in work.items())


def _add(a: Work, b: Work, scale: float = 1.0) -> Work:
    return {k: a.get(k, 0.0) + scale * b.get(k, 0.0) for k in set(a) | set(b)}


def direct_work(geom: ConvGeometry, dtype) -> Work:
    """Units of work of one ``direct`` training step."""
    p = _precision(dtype)
    taps, out = math.prod(geom.kernel), math.prod(geom.out_size)
    flops = 6 * geom.batch * geom.out_channels * (geom.in_channels // geom.groups) * out * taps
    flops *= 4 if np.dtype(dtype).kind == "c" else 1
    if all(s == 1 for s in geom.stride):
        elements, calls = direct.flat_work(geom, np.dtype(dtype).itemsize)
    else:  # patches: a copy in and an accumulation out per tap and pass
        elements = 3 * taps * geom.batch * (geom.in_channels + geom.out_channels) * out
        calls = 3 * taps
    return {"gemm_flop": flops * p, "direct_element": elements * p,
            "direct_offset": float(calls), "call": 3.0}


#: Transforms of more points than this run out of cache and cost more per
#: point (``fft_large_element_log``): the signal and spectrum of 2**21 float32
#: points take 16 MiB each, together beyond the 32 MiB L3 of the reference VM.
LARGE_TRANSFORM = 1 << 21


def _transform_work(rows: int, grid, real: bool) -> Work:
    size = math.prod(grid)
    units = rows * size * max(math.log2(size), 1.0) * (0.5 if real else 1.0)
    return {"fft_large_element_log" if size > LARGE_TRANSFORM else "fft_element_log": units}


def fft_work(geom: ConvGeometry, dtype, weight_transforms: bool = True,
             input_transforms: int = 1) -> Work:
    """Units of work of one ``fft`` training step (``input_transforms=2`` when the
    backward pass transforms ``x`` again)."""
    g, p = geom, _precision(dtype)
    x_rows, y_rows = g.batch * g.in_channels, g.batch * g.out_channels
    w_rows = g.out_channels * (g.in_channels // g.groups)
    transforms = {k: v * (1 + input_transforms) for k, v in
                  _transform_work(x_rows, g.fft_shape, g.real).items()}
    transforms = _add(transforms, _transform_work(y_rows, g.stride_fft_shape, g.real), scale=2)
    if weight_transforms:
        transforms = _add(transforms, _transform_work(w_rows, g.dilation_fft_shape, g.real),
                          scale=2)
    f = g.spectrum_size
    work = {"spectrum_mac": 3.0 * f * g.batch * g.out_channels * (g.in_channels // g.groups) * p,
            "spectrum_element": f * (3 * x_rows + 3 * y_rows + 2 * w_rows) * p,
            "signal_element": (2 * x_rows + 2 * y_rows) * math.prod(g.fft_shape) * p,
            "call": 3.0, "fft_call": 3.0}
    return _add(work, transforms, scale=p)


def overlap_add_work(geom: ConvGeometry, dtype, tile) -> Work:
    """Units of work of one ``overlap_add`` training step with output tiles ``tile``
    (a single tile runs the FFT path: :func:`fftconv.overlap_add.engine`)."""
    if overlap_add.single_tile(geom, tile):
        return fft_work(geom, dtype)
    tg = tile_geometry(geom, tile)
    n_tiles = math.prod(-(-o // b) for o, b in zip(geom.out_size, tile))
    n_passes = -(-n_tiles // overlap_add.tiles_per_pass(geom, dtype, tile))
    per_tile = fft_work(tg, dtype, weight_transforms=False,
                        input_transforms=1 if n_passes == 1 else 2)
    fixed = {k: per_tile.pop(k) for k in ("call", "fft_call")}
    w_rows = tg.out_channels * (tg.in_channels // tg.groups)
    weights = _transform_work(w_rows, tg.dilation_fft_shape, tg.real)
    work = _add({k: v * n_tiles for k, v in per_tile.items()},
                {k: v * n_passes for k, v in fixed.items()})
    # each tile's slices copied by Python: window in, tile out; dy tile in, dx
    # window added; x's window in again when several passes keep no spectrum
    work["tile_copy"] = float(n_tiles * (4 if n_passes == 1 else 5))
    return _add(work, weights, scale=2 * _precision(dtype))


def tile_candidates(geom: ConvGeometry, per_axis: int) -> list:
    """Per axis, up to ``per_axis`` output tile lengths whose window is a fast length.

    Windows run from about twice the effective kernel up to the padded size
    in steps of about 1.5x; a tile as large as the whole output is always a
    candidate.
    """
    options = []
    for o, s, ke, p in zip(geom.out_size, geom.stride, geom.effective_kernel, geom.padded_size):
        sizes, w = [], next_fast_length(2 * ke)
        while w < p:
            sizes.append((w - ke) // s + 1)
            w = next_fast_length(int(w * 1.5) + 1)
        sizes = sorted({b for b in sizes if 1 <= b < o})
        step = max(1, -(-len(sizes) // max(per_axis - 1, 1)))
        options.append(sizes[::step][:per_axis - 1] + [o])
    return options


def best_tile(geom: ConvGeometry, dtype) -> Tuple[Tuple[int, ...], float]:
    """The overlap-add output tile to use, and its estimated cost: the cheapest.

    Not the smallest of the near-cheapest, as before: with the rates fitted
    by ``bench.calibrate`` that rule took 1954 tiles of 671 samples at 1-D
    2**20 k65 (239 ms a step, against 161 ms for the cheapest estimate's 642
    tiles) and 551 tiles of 100x100 at 2-D 2048x2048 k9 (317 ms against 263
    ms for 361 tiles), timed in one calibration run.  A memory budget picks
    its own tile (``engines.fitting_tile``).
    """
    per_axis = 8 if geom.ndim <= 2 else 5 if geom.ndim == 3 else 3
    cost, tile = min((seconds(overlap_add_work(geom, dtype, tile)), tuple(tile))
                     for tile in itertools.product(*tile_candidates(geom, per_axis)))
    return tile, cost
