"""Cost model: the rates, and the pricing of units of work.

A training step is the forward pass and both gradients.  Each algorithm
plugin (``fftconv.algorithms.*``) counts the units of work its step does
(its ``work`` function, built from :func:`transform_work` and the unit names
of :data:`RATES`); this module prices them.  ``algorithm="auto"`` takes the
cheapest estimate, and ``measure=True`` replaces estimates by timings.

float64 and complex128 work is priced at twice the single-precision rate
(:func:`precision`).
"""
from __future__ import annotations

import math
from typing import Dict, Sequence

import numpy as np
from numpy.typing import DTypeLike

#: Seconds per unit of work.  Fitted by ``python -m bench calibrate`` (non-negative
#: least squares on the relative error of 56 float32 layers, 1-D to 3-D, timed
#: with every transform algorithm and, on large inputs, several overlap-add
#: tiles; 2 threads, on the 2-core Intel Xeon (AVX-512) reference VM with pyFFTW
#: 0.15 and OpenBLAS 0.3.31, load average about 1).  The fit folds costs into
#: the terms that explain them best (``direct_offset`` and ``signal_element``
#: came out 0), so read them as a model, not as hardware rates.  Checked again
#: on 58 layers once pruned weight transforms were priced as such: auto's pick
#: is within 1.2x of the measured fastest on 55 of them (worst 1.43x),
#: estimate/measured median 0.92, range 0.37-1.87 over 275 runs; a refit on
#: those rows picked worse (53 of 58), so these rates stay.
RATES = {
    "call": 0.000138,
    "compiled_mac": 2.2e-10,
    "direct_element": 2.61e-10,
    "direct_offset": 0.0,
    "elementwise_mac": 1.45e-09,
    "fft_call": 0.000156,
    "fft_element_log": 3.27e-10,
    "fft_large_element_log": 3.05e-10,
    "gemm_flop": 7.58e-12,
    "signal_element": 0.0,
    "spectrum_element": 2.66e-09,
    "spectrum_mac": 1.26e-10,
    "tile_copy": 5.1e-07,
    "tile_element": 9.54e-10,
    "winograd_element": 4.24e-10,
    "winograd_flop": 8.9e-12,
    "winograd_grid": 2.3e-09,
}

#: Units of work by name (the keys of :data:`RATES`).
Work = Dict[str, float]

#: Transforms of more points than this run out of cache and cost more per
#: point (``fft_large_element_log``): the signal and spectrum of 2**21 float32
#: points take 16 MiB each, together beyond the 32 MiB L3 of the reference VM.
LARGE_TRANSFORM = 1 << 21


def precision(dtype: DTypeLike) -> float:
    """The price factor of ``dtype``: 2 for double precision, else 1."""
    return 2.0 if np.dtype(dtype) in (np.dtype(np.float64), np.dtype(np.complex128)) else 1.0


def seconds(work: Work) -> float:
    """Price ``work`` with :data:`RATES`."""
    return sum(units * RATES[name] for name, units in work.items())


def add(a: Work, b: Work, scale: float = 1.0) -> Work:
    """``a + scale * b``, unit by unit."""
    return {k: a.get(k, 0.0) + scale * b.get(k, 0.0) for k in set(a) | set(b)}


def transform_work(rows: int, grid: Sequence[int], real: bool) -> Work:
    """Units of ``rows`` batched transforms over ``grid`` (half for real data)."""
    size = math.prod(grid)
    units = rows * size * max(math.log2(size), 1.0) * (0.5 if real else 1.0)
    return {"fft_large_element_log" if size > LARGE_TRANSFORM else "fft_element_log": units}


def pruned_transform_work(rows: int, grid: Sequence[int], kept: Sequence[int],
                          real: bool) -> Work:
    """Units of ``rows`` transforms over ``grid`` pruned to ``kept`` points per axis
    (``fftconv.transforms.PrunedForward`` and ``PrunedInverse``): axis ``j``
    transforms only the ``prod(kept[:j]) * prod(grid[j+1:])`` lines that hold data,
    so the share of :func:`transform_work` is that line count times ``log2 grid[j]``,
    summed over the axes, over the whole transform's ``prod(grid) * log2 prod(grid)``."""
    logs = [math.log2(n) for n in grid]
    whole = math.prod(grid) * sum(logs)
    done = sum(math.prod(kept[:j]) * math.prod(grid[j:]) * logs[j] for j in range(len(grid)))
    share = done / whole if whole else 1.0
    return {k: v * share for k, v in transform_work(rows, grid, real).items()}
