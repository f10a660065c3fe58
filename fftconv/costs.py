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
#: least squares on the relative error of 41 float32 layers, 1-D to 3-D, timed
#: with all three algorithms and, on large inputs, overlap-add with several
#: tiles, 2-D strips included; 2 threads, on the 2-core AMD EPYC reference VM
#: with pyFFTW 0.15 and OpenBLAS 0.3.31).  The fit folds per-element costs into
#: the terms that explain them best (``signal_element`` and ``tile_copy`` came
#: out 0), so read them as a model, not as hardware rates: the model picks the
#: measured-fastest algorithm on 83% of the calibration layers, estimate/measured
#: median 0.93, range 0.55-1.65 over 148 runs.
RATES = {
    "call": 0.000228,
    "compiled_mac": 3.7e-11,
    "direct_element": 2.8e-10,
    "direct_offset": 2.38e-07,
    "elementwise_mac": 1e-09,
    "fft_call": 0.000204,
    "fft_element_log": 4.38e-10,
    "fft_large_element_log": 4.7e-10,
    "gemm_flop": 7.55e-12,
    "signal_element": 0.0,
    "spectrum_element": 2.84e-09,
    "spectrum_mac": 6.24e-11,
    "tile_copy": 0.0,
    # Elements written by fftconv.algorithms.fft_tiles' gathers and scatters
    # (fft_tiles.moved_elements): provisional, not fitted by calibrate yet: those copies
    # alone, timed (best of 7) on 5 float32 layers (2-D 48x48 k3, 32x32 k3, 128x128 k7,
    # 3-D 24^3 k7; 8- to 32-point windows; 2 threads) on the shared 2-core VM at load
    # average ~4, took 1.4-2.5 ns per element; the median.
    "tile_element": 2.1e-09,
    # The Winograd algorithm's units (fftconv.algorithms.winograd.work): fitted by NNLS on
    # the relative error of 14 float32 training steps in its scope (1-D to 3-D, 3 to 256
    # channels, 3 and 5 taps; best of 4-5 rounds of 3 steps, 2 threads, `call` at its rate
    # above) on the 2-core reference VM at load averages 0.2-1.3; the model then priced
    # those steps at 0.76-1.27 times their measured times.
    "winograd_element": 1.43e-10,
    "winograd_flop": 8.98e-12,
    "winograd_grid": 1.83e-09,
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
