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
weight update.  ``fftconv.runner`` applies this around every engine call, so
every algorithm and every pass (forward, input and weight gradients,
pullbacks, transposed layers) goes through it.

On a device (``Arrays.host`` false) reading the largest magnitude back would
stop the device's queue on every call, so the exponent stays on the device: a
0-d array, 0 where no scaling is needed, and the operand is multiplied by its
power of two there (a copy and one pass, exact, whatever its value).  The
host's shortcut, nothing copied when nothing is scaled, needs the value read.
"""
from __future__ import annotations

import math
from typing import Any, Optional, Union

import numpy as np

from .backends import Arrays
from .geometry import ConvGeometry

#: Exponent bits kept free beyond the growth bound (rounding, sqrt(2) for complex).
MARGIN_BITS = 4

#: A scaling exponent: an int on the host, a 0-d array on a device.
Exponent = Union[int, Any]


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


def exponent(a, arrays: Arrays) -> int:
    """``e`` with ``max|a| < 2**e`` (``frexp``); 0 for an empty, all-zero or
    non-finite ``a`` (a NaN or Inf spreads as documented, scaled or not).
    Reads the value back: host arrays only."""
    if math.prod(a.shape) == 0:
        return 0
    largest = arrays.to_float(arrays.magnitude(a))
    if not math.isfinite(largest) or largest == 0:
        return 0
    return math.frexp(largest)[1]


def _on_device(a, most: int, arrays: Arrays):
    """:func:`scale_for` as a 0-d array on ``arrays``' device (no value read back)."""
    xp = arrays.xp
    m = arrays.magnitude(a)
    big = xp.logical_and(m >= 2.0 ** most, xp.isfinite(m))
    safe = xp.where(big, m, xp.ones_like(m))
    return xp.where(big, xp.floor(xp.log2(safe)) + 1, xp.zeros_like(m))


def scale_for(a, most: int, arrays: Arrays) -> Exponent:
    """The exponent to take out of ``a``: its :func:`exponent` if above ``most``, else
    0; on a device, the same as a 0-d array."""
    if math.prod(a.shape) == 0:
        return 0
    if not arrays.host:
        return _on_device(a, most, arrays)
    e = exponent(a, arrays)
    return e if e > most else 0


def _none(e: Exponent) -> bool:
    return isinstance(e, int) and e == 0


def scaled(a, e: Exponent, arrays: Arrays, owned: bool = False):
    """``a * 2**-e``: in place when ``owned`` (an array nobody else sees), else a new
    array; ``a`` itself when ``e`` is 0."""
    if _none(e):
        return a
    out = a if owned else arrays.empty_like(a)
    arrays.ldexp(a, -e, out=out)
    return out


def rescale(a, e: Exponent, arrays: Arrays) -> None:
    """``a *= 2**e`` in place, exactly; nothing to do for ``e == 0`` or ``a is None``."""
    if a is None or _none(e):
        return
    arrays.ldexp(a, e, out=a)
