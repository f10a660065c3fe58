"""Pure integer geometry of an N-d convolution layer.

Everything here works on shapes and ints only, never on arrays, so it can be
tested exhaustively without running a transform (the model is JAX's
``_conv_general_vjp_*_padding`` helpers).  It answers four questions:

* how much padding each spatial axis gets (``resolve_padding``),
* how large the output is (``output_length``),
* which FFT length avoids wrap-around for the forward product and both
  gradient products (``fft_length``), and
* where each operand is placed in, and cropped from, the FFT buffer
  (the ``*_placement`` and ``*_crop`` properties of :class:`ConvGeometry`).

The placement/crop model (stride ``s``, dilation ``d``, padding ``lo``), on
an FFT grid of ``L`` samples per axis, a multiple of ``s`` and of ``d``:

* ``x`` is written at offset ``lo`` (so the buffer holds the padded input) and
  ``dx`` read back at ``lo : lo+n``, both on the full grid ``L``;
* the zero-dilated kernel (``w`` at step ``d``) has the spectrum of ``w`` on
  the coarse grid ``L/d``, repeated ``d`` times; so ``w`` is transformed at
  ``L/d`` (offset 0, no zeros) and its spectrum tiled, and ``dw``, which
  samples a correlation at step ``d``, folds its spectrum ``d`` times and is
  inverse-transformed at ``L/d``;
* likewise the zero-upsampled ``dy`` (step ``s``) is transformed at ``L/s``
  and tiled, and ``y``, read at step ``s``, is folded and inverse-transformed
  at ``L/s``.  Stride never pays for outputs it throws away, and dilation never
  materialises a zero-filled kernel.

With ``L >= n + lo + hi`` none of the three circular products wraps around,
which is why the FFT size is the padded input size and not input + kernel - 1
(see ``fft_length``).
"""
from __future__ import annotations

from dataclasses import dataclass
from math import gcd, prod
from typing import Tuple

PADDING_MODES = ("valid", "same", "full")

Pair = Tuple[int, int]


def effective_kernel(k: int, d: int) -> int:
    """Extent of a kernel of ``k`` taps with dilation ``d``: ``d*(k-1) + 1``."""
    return d * (k - 1) + 1


def same_padding(n: int, k: int, s: int, d: int, flip_kernel: bool) -> Pair:
    """``(lo, hi)`` for ``padding="same"`` on one axis (CONVENTIONS §2).

    ``out = ceil(n / s)``; the total is split with the extra element after the
    input for correlation (torch/TF) and before it for a true convolution
    (``scipy.signal.convolve(mode="same")``), which only matters for even
    effective kernels.
    """
    out = -(-n // s)
    total = max((out - 1) * s + effective_kernel(k, d) - n, 0)
    lo = total - total // 2 if flip_kernel else total // 2
    return lo, total - lo


def resolve_padding(padding, n: Tuple[int, ...], k: Tuple[int, ...],
                    s: Tuple[int, ...], d: Tuple[int, ...],
                    flip_kernel: bool) -> Tuple[Pair, ...]:
    """Turn any accepted ``padding`` form into one ``(lo, hi)`` pair per axis.

    ``padding`` must already be validated (see ``checks.check_padding``): a mode
    string, an int, a sequence of ints, or a sequence of ``(lo, hi)`` pairs.
    """
    ndim = len(n)
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0),) * ndim
        if padding == "full":
            return tuple((effective_kernel(ki, di) - 1,) * 2 for ki, di in zip(k, d))
        return tuple(same_padding(*args, flip_kernel) for args in zip(n, k, s, d))
    if isinstance(padding, int):
        return ((padding, padding),) * ndim
    return tuple((p, p) if isinstance(p, int) else (p[0], p[1]) for p in padding)


def half_spectrum_shape(fft_shape, real: bool) -> Tuple[int, ...]:
    """Spectrum shape of a transform: the last axis halved (``L//2 + 1``) for real input."""
    fft_shape = tuple(fft_shape)
    return fft_shape[:-1] + (fft_shape[-1] // 2 + 1,) if real else fft_shape


def output_length(n: int, lo: int, hi: int, k: int, s: int, d: int) -> int:
    """``(n + lo + hi - ke) // s + 1``; may be < 1, which callers reject."""
    return (n + lo + hi - effective_kernel(k, d)) // s + 1


def is_smooth(n: int, primes=(2, 3, 5, 7)) -> bool:
    """True if ``n`` has no prime factor outside ``primes``."""
    for p in primes:
        while n % p == 0:
            n //= p
    return n == 1


def next_fast_length(n: int, even: bool = False) -> int:
    """Smallest 7-smooth integer ``>= n`` (optionally even).

    Both FFTW and pocketfft (``scipy.fft``) have hand-written codelets for the
    radices 2, 3, 5 and 7, so such lengths run at full speed in both backends.
    ``even`` is used for the last axis of a real-to-complex transform, whose
    half-spectrum trick is cheapest on even lengths.
    """
    target, best = max(int(n), 1), None
    p7 = 1
    while p7 < 2 * target:  # enumerate 7^a 5^b 3^c, then the smallest power of 2 on top
        p5 = p7
        while p5 < 2 * target:
            p3 = p5
            while p3 < 2 * target:
                m = p3 if p3 >= target and (p3 % 2 == 0 or not even) else \
                    p3 << max((-(-target // p3) - 1).bit_length(), 1 if even else 0)
                best = m if best is None or m < best else best
                p3 *= 3
            p5 *= 5
        p7 *= 7
    return best


def fft_length(padded: int, even: bool = False, unit: int = 1) -> int:
    """FFT length for one axis whose padded input length is ``padded``.

    The length is ``unit`` times a fast length (``unit = lcm(stride,
    dilation)``), so that the stride and dilation grids ``L/s`` and ``L/d``
    are whole and fast too.

    The forward product reads ``y`` at positions ``< padded - ke + 1``, the input
    gradient writes ``dx_pad`` at positions ``< (out-1)*s + ke <= padded`` and
    the weight gradient reads lags ``< ke`` of a correlation whose operands fit
    in ``padded``: a buffer of ``padded`` samples keeps all three circular
    products free of wrap-around, so no ``+ k - 1`` is needed.
    """
    m = next_fast_length(-(-padded // unit))
    while even and (unit * m) % 2:
        m = next_fast_length(m + 1)
    return unit * m


@dataclass(frozen=True)
class ConvGeometry:
    """Every integer fact about one layer: shapes, padding, FFT size, crops.

    Built by :func:`make_geometry` from validated arguments; immutable and
    hashable, so it can be (part of) a cache key.
    """

    batch: int
    in_channels: int
    out_channels: int
    groups: int
    in_size: Tuple[int, ...]
    kernel: Tuple[int, ...]
    stride: Tuple[int, ...]
    dilation: Tuple[int, ...]
    padding: Tuple[Pair, ...]
    flip_kernel: bool
    real: bool

    # -- derived sizes ----------------------------------------------------
    @property
    def ndim(self) -> int:
        """Number of spatial axes."""
        return len(self.in_size)

    @property
    def effective_kernel(self) -> Tuple[int, ...]:
        return tuple(effective_kernel(k, d) for k, d in zip(self.kernel, self.dilation))

    @property
    def padded_size(self) -> Tuple[int, ...]:
        return tuple(n + lo + hi for n, (lo, hi) in zip(self.in_size, self.padding))

    @property
    def out_size(self) -> Tuple[int, ...]:
        return tuple(output_length(n, lo, hi, k, s, d) for n, (lo, hi), k, s, d in
                     zip(self.in_size, self.padding, self.kernel, self.stride, self.dilation))

    @property
    def x_shape(self) -> Tuple[int, ...]:
        return (self.batch, self.in_channels) + self.in_size

    @property
    def w_shape(self) -> Tuple[int, ...]:
        return (self.out_channels, self.in_channels // self.groups) + self.kernel

    @property
    def y_shape(self) -> Tuple[int, ...]:
        return (self.batch, self.out_channels) + self.out_size

    @property
    def fft_shape(self) -> Tuple[int, ...]:
        """FFT size per spatial axis: the padded size rounded up to a fast length
        that ``stride`` and ``dilation`` divide."""
        last = self.ndim - 1
        return tuple(fft_length(p, even=self.real and i == last, unit=s * d // gcd(s, d))
                     for i, (p, s, d) in enumerate(zip(self.padded_size, self.stride,
                                                       self.dilation)))

    @property
    def stride_fft_shape(self) -> Tuple[int, ...]:
        """The coarse grid ``L / s`` of ``dy`` and ``y``."""
        return tuple(n // s for n, s in zip(self.fft_shape, self.stride))

    @property
    def dilation_fft_shape(self) -> Tuple[int, ...]:
        """The coarse grid ``L / d`` of ``w`` and ``dw``."""
        return tuple(n // d for n, d in zip(self.fft_shape, self.dilation))

    @property
    def spectrum_shape(self) -> Tuple[int, ...]:
        """Shape of one spectrum: halved last axis for real-to-complex transforms."""
        return half_spectrum_shape(self.fft_shape, self.real)

    @property
    def spectrum_size(self) -> int:
        return prod(self.spectrum_shape)

    # -- where operands go in the FFT buffer ------------------------------
    @property
    def x_placement(self) -> Tuple[slice, ...]:
        """Slots of the padded input inside the FFT buffer."""
        return tuple(slice(lo, lo + n) for n, (lo, _) in zip(self.in_size, self.padding))

    @property
    def w_placement(self) -> Tuple[slice, ...]:
        """Slots of the kernel on the dilation grid ``L / d``."""
        return tuple(slice(0, k) for k in self.kernel)

    @property
    def dy_placement(self) -> Tuple[slice, ...]:
        """Slots of the output gradient on the stride grid ``L / s``."""
        return tuple(slice(0, o) for o in self.out_size)

    # the crops read the same slots back out of the inverse transforms
    y_crop = dy_placement
    dx_crop = x_placement
    dw_crop = w_placement


def make_geometry(x_shape, w_shape, padding, stride, dilation, groups,
                  flip_kernel, real) -> ConvGeometry:
    """Build a :class:`ConvGeometry` from validated shapes and options.

    ``stride`` and ``dilation`` are per-axis tuples and ``padding`` any form
    accepted by :func:`resolve_padding`.
    """
    in_size, kernel = tuple(x_shape[2:]), tuple(w_shape[2:])
    pads = resolve_padding(padding, in_size, kernel, stride, dilation, flip_kernel)
    return ConvGeometry(batch=x_shape[0], in_channels=x_shape[1], out_channels=w_shape[0],
                        groups=groups, in_size=in_size, kernel=kernel, stride=tuple(stride),
                        dilation=tuple(dilation), padding=pads, flip_kernel=bool(flip_kernel),
                        real=bool(real))
