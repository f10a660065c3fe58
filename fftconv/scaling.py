"""Powers-of-two scaling that keeps every pass inside its dtype's range.

An FFT pass holds intermediate values far larger than its result: a spectrum
sums a whole signal, the channel products sum ``C`` spectra, an unnormalised
inverse transform sums a whole spectrum again.  float32 inputs around 1e34
(exact outputs near 2e35, well inside float32's 3.4e38) overflowed to
hundreds of inf/NaN outputs; float64 from about 1e304.

Every pass is linear in each operand, and multiplying by a power of two is
exact (it only changes the exponent), so an operand whose magnitude could
overflow a pass is scaled by ``2**-e`` on the way in and the result by
``2**(e_1 + e_2)`` on the way out, with bit-identical mantissas.  An operand
is scaled only when its largest magnitude ``2**e`` exceeds
:func:`limit`, half the dtype's exponent range left after the pass's growth
bound (:func:`growth_bits`); below it no pass can overflow whatever the other
operand is, and nothing is copied.  Finding ``e`` costs one read of the
operand (a max and a min, no temporary); the weights are read once per
weight update.  ``fftconv.layer`` applies this around every engine call, so
every algorithm and every pass (forward, input and weight gradients,
pullbacks, transposed layers) goes through it.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from .geometry import ConvGeometry

#: Exponent bits kept free beyond the growth bound (rounding, sqrt(2) for complex).
MARGIN_BITS = 4


def growth_bits(geom: ConvGeometry, fft_shape: Optional[tuple]) -> int:
    """``log2`` of a bound on ``|intermediate| / (max|a| * max|b|)`` in any pass
    of ``geom`` on FFTs of ``fft_shape`` (``None``: no FFT).

    With ``P`` the larger of the padded grid and the FFT size in points, a
    spectrum is at most ``P`` times its signal's largest magnitude; the channel
    (or batch) sums add ``C``; the kernel taps ``T``; the unnormalised
    inverse transform ``P`` again; a weight gradient sums ``N * P`` products of
    spectra: ``N * C * T * P**3`` bounds them all, loosely.
    """
    points = max(math.prod(geom.padded_size), math.prod(fft_shape or (1,)))
    channels = max(geom.in_channels, geom.out_channels, 1)
    bound = max(geom.batch, 1) * channels * math.prod(geom.kernel) * points ** 3
    return math.ceil(math.log2(bound))


def limit(dtype, growth: int) -> int:
    """Largest operand exponent that needs no scaling: two operands of
    magnitude up to ``2**limit`` keep every intermediate below the dtype's
    largest value (``finfo.maxexp``)."""
    real = np.finfo(np.dtype(dtype)).maxexp
    return (real - growth - MARGIN_BITS) // 2


def exponent(a: np.ndarray) -> int:
    """``e`` with ``max|a| < 2**e`` (``frexp``); 0 for an empty, all-zero or
    non-finite ``a`` (a NaN or Inf spreads as documented, scaled or not)."""
    if a.size == 0:
        return 0
    parts = (a.real, a.imag) if a.dtype.kind == "c" else (a,)
    largest = max(max(float(p.max()), -float(p.min())) for p in parts)
    if not math.isfinite(largest) or largest == 0:
        return 0
    return math.frexp(largest)[1]


def scale_for(a: np.ndarray, most: int) -> int:
    """The exponent to take out of ``a``: its :func:`exponent` if above ``most``, else 0."""
    e = exponent(a)
    return e if e > most else 0


def scaled(a: np.ndarray, e: int, owned: bool = False) -> np.ndarray:
    """``a * 2**-e``: in place when ``owned`` (an array nobody else sees), else a new
    array; ``a`` itself when ``e`` is 0."""
    if e == 0:
        return a
    out = a if owned else np.empty_like(a)
    rescale(out, -e, source=a)
    return out


def rescale(a: Optional[np.ndarray], e: int, source: Optional[np.ndarray] = None) -> None:
    """``a[...] = source * 2**e`` (``source`` defaults to ``a``: in place); exact.
    Nothing to do for ``e == 0`` or ``a is None``."""
    if a is None or e == 0:
        return
    source = a if source is None else source
    if a.dtype.kind == "c":
        np.ldexp(source.real, e, out=a.real)
        np.ldexp(source.imag, e, out=a.imag)
    else:
        np.ldexp(source, e, out=a)
