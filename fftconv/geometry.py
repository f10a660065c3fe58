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

import itertools
from dataclasses import dataclass, replace
from functools import lru_cache
from math import gcd, prod
from typing import List, Optional, Tuple

PADDING_MODES = ("valid", "same", "full", "causal")
#: ``padding_mode=``: PyTorch's names; the values are what ``np.pad`` calls them.
PADDING_FILLS = {"zeros": "constant", "circular": "wrap", "reflect": "reflect",
                 "replicate": "edge"}
LAYOUTS = ("channels_first", "channels_last")

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


def causal_padding(k: int, d: int) -> Pair:
    """``(lo, hi)`` for ``padding="causal"`` on one axis (CONVENTIONS §2, Keras's
    meaning): ``(ke - 1, 0)``.

    Output ``i`` reads the padded input at ``i*s + j*d`` for ``j < k``, i.e. the
    input at ``i*s + j*d - (ke - 1) <= i*s``: never a later sample.  With stride
    ``s`` there are ``(n - 1) // s + 1 = ceil(n / s)`` outputs (``n`` at stride 1),
    as Keras's ``Conv1D(padding="causal", strides=s)``.
    """
    return effective_kernel(k, d) - 1, 0


def transposed_causal_padding(n: int, k: int, s: int, d: int) -> Tuple[Pair, int]:
    """``((lo, hi), output_padding)`` of a causal transposed convolution over ``n``
    samples: ``n * s`` outputs, output ``t`` reading inputs ``i`` with ``i*s <= t``.

    The uncropped transposed convolution puts input ``i`` at outputs ``i*s + j*d``
    (``j < k``), so its first ``n * s`` outputs only ever hear inputs at or
    before them: nothing is cropped at the start, ``ke - s`` at the end (the
    streaming decoders' rule: EnCodec's causal ``SConvTranspose1d`` trims every
    padding on the right), and when ``ke < s`` the ``s - ke`` missing samples
    are ``output_padding`` (zeros plus bias).  It is not the adjoint of a causal
    convolution, which is anti-causal.
    """
    ke = effective_kernel(k, d)
    return (0, max(ke - s, 0)), max(s - ke, 0)


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
        if padding == "causal":
            return tuple(causal_padding(ki, di) for ki, di in zip(k, d))
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
    target = max(int(n), 1)
    best = 1 << target.bit_length()  # an even 7-smooth bound; the loops find the smallest
    p7 = 1
    while p7 < 2 * target:  # enumerate 7^a 5^b 3^c, then the smallest power of 2 on top
        p5 = p7
        while p5 < 2 * target:
            p3 = p5
            while p3 < 2 * target:
                m = p3 if p3 >= target and (p3 % 2 == 0 or not even) else \
                    p3 << max((-(-target // p3) - 1).bit_length(), 1 if even else 0)
                best = min(best, m)
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


#: Extra cost per element of a multi-axis FFT for each factor of an axis's length,
#: relative to a power of two, and for an odd length (a real transform's
#: half-spectrum trick and FFTW's SIMD codelets work on pairs).  Fitted (least
#: squares, weighted by 1/time) to FFTW_MEASURE timings of batched 2-D r2c
#: transforms of every 7-smooth L x L from 96 to 294 (128 signals, 2 threads, the
#: 2-core reference VM): an odd length cost 2-3x an even one of the same size
#: (135: 9.4 ns per element against 2.6 for 144), factors 3 and 5 about 5% each,
#: 7 about 9%; the per-element constant dominates among even lengths.
LENGTH_PENALTY = {3: 0.05, 5: 0.05, 7: 0.09}
ODD_PENALTY = 0.75
#: FFT lengths up to this factor above the smallest one are candidates.
LENGTH_SLACK = 1.5
#: A larger FFT shape is taken only if its modelled cost is below this fraction of
#: the smallest shape's: smaller gains are within the model's error and cost memory.
LENGTH_GAIN = 0.9


def length_penalty(n: int) -> float:
    """Relative extra cost per element that an axis of length ``n`` adds (see
    :data:`LENGTH_PENALTY`)."""
    extra = ODD_PENALTY if n % 2 else 0.0
    for p, cost in LENGTH_PENALTY.items():
        while n % p == 0:
            n //= p
            extra += cost
    return extra


def length_candidates(padded: int, even: bool = False, unit: int = 1, keep: int = 4) -> tuple:
    """Up to ``keep`` valid FFT lengths for one axis (:func:`fft_length`'s rules, up
    to :data:`LENGTH_SLACK` times the smallest), cheapest per element first."""
    lengths: List[int] = []
    m = fft_length(padded, even, unit)
    while m <= LENGTH_SLACK * lengths[0] if lengths else True:
        lengths.append(m)
        m = fft_length(m + 1, even, unit)
    return tuple(sorted(lengths, key=lambda n: n * (1 + length_penalty(n)))[:keep])


@lru_cache(maxsize=4096)
def fast_fft_shape(padded: tuple, evens: tuple, units: tuple) -> Tuple[int, ...]:
    """The FFT shape of least modelled cost ``prod(L) * (1 + sum penalty(L_i))``
    among the per-axis :func:`length_candidates`: the smallest 7-smooth length is
    not always the fastest transform (135 = 3**3 * 5 took 2.5x 144's time)."""
    def cost(shape):
        return prod(shape) * (1 + sum(map(length_penalty, shape)))

    smallest = tuple(fft_length(p, e, u) for p, e, u in zip(padded, evens, units))
    options = [length_candidates(p, e, u) for p, e, u in zip(padded, evens, units)]
    best = min(itertools.product(*options), key=lambda shape: (cost(shape), shape))
    return best if cost(best) < LENGTH_GAIN * cost(smallest) else smallest


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
    #: Circular padding done by the FFT itself (:func:`circular_geometry`):
    #: the FFT length is the input length, the input sits at offset 0 and the
    #: kernel at offsets ``(j*d - lo) mod n``, wrapping.  Empty otherwise.
    wrap: Tuple[int, ...] = ()

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
        """FFT size per spatial axis: the padded size rounded up to fast lengths
        that ``stride`` and ``dilation`` divide, chosen by modelled transform cost
        (:func:`fast_fft_shape`; the input size when circular)."""
        if self.wrap:
            return self.in_size
        last = self.ndim - 1
        return fast_fft_shape(self.padded_size,
                              tuple(self.real and i == last for i in range(self.ndim)),
                              tuple(s * d // gcd(s, d) for s, d in zip(self.stride, self.dilation)))

    @property
    def stride_fft_shape(self) -> Tuple[int, ...]:
        """The coarse grid ``L / s`` of ``dy`` and ``y``."""
        return tuple(n // s for n, s in zip(self.fft_shape, self.stride))

    @property
    def dilation_fft_shape(self) -> Tuple[int, ...]:
        """The coarse grid ``L / d`` of ``w`` and ``dw`` (the full grid when circular:
        the wrapped kernel is placed tap by tap)."""
        if self.wrap:
            return self.fft_shape
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
        """Slots of the padded input inside the FFT buffer (offset 0 when circular)."""
        return tuple(slice(0 if self.wrap else lo, (0 if self.wrap else lo) + n)
                     for n, (lo, _) in zip(self.in_size, self.padding))

    @property
    def w_placement(self) -> tuple:
        """Slots of the kernel on the dilation grid ``L / d``; when circular, index
        arrays (an open mesh) of the wrapped taps ``(j*d - lo) mod n``."""
        if not self.wrap:
            return tuple(slice(0, k) for k in self.kernel)
        taps = [[(j * d - lo) % n for j in range(k)] for k, d, lo, n in
                zip(self.kernel, self.dilation, self.wrap, self.in_size)]
        return tuple(open_mesh(taps))

    @property
    def dy_placement(self) -> Tuple[slice, ...]:
        """Slots of the output gradient on the stride grid ``L / s``."""
        return tuple(slice(0, o) for o in self.out_size)

    # the crops read the same slots back out of the inverse transforms
    y_crop = dy_placement
    dx_crop = x_placement
    dw_crop = w_placement


def open_mesh(index_lists) -> list:
    """``np.ix_`` in nested lists of ints: axis ``a``'s indices nested to broadcast
    along it alone, so that ``array[(..., *open_mesh(lists))]`` picks the outer
    product."""
    nd = len(index_lists)

    def nest(i, depth):
        return i if depth == 0 else [nest(i, depth - 1)]
    return [[nest(i, nd - a - 1) for i in ix] for a, ix in enumerate(index_lists)]


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


# -- overlap-add tiling -----------------------------------------------------------------
def window_length(b: int, s: int, ke: int) -> int:
    """Padded-input samples that ``b`` consecutive outputs read: ``(b-1)*s + ke``."""
    return (b - 1) * s + ke


def tile_geometry(geom: ConvGeometry, tile) -> ConvGeometry:
    """The "valid" layer one output tile of ``tile`` samples per axis computes:
    output tile ``[t, t + B)`` reads the padded-input window ``[t*s, t*s + W)``,
    ``W = (B-1)*s + ke`` (:func:`window_length`)."""
    window = tuple(window_length(b, s, ke) for b, s, ke in
                   zip(tile, geom.stride, geom.effective_kernel))
    return make_geometry((geom.batch, geom.in_channels) + window, geom.w_shape, "valid",
                         geom.stride, geom.dilation, geom.groups, geom.flip_kernel, geom.real)


def window_clip(start: int, size: int, lo: int, n: int) -> Tuple[slice, slice]:
    """Where padded-coordinate window ``[start, start+size)`` meets ``[0, n)`` of the
    unpadded array (``lo`` = padding before it): ``(array slice, window slice)``."""
    a = start - lo
    src = slice(min(max(a, 0), n), max(min(a + size, n), 0))
    return src, slice(src.start - a, src.start - a + src.stop - src.start)


# -- padding modes ----------------------------------------------------------------------
def padding_source(n: int, lo: int, hi: int, mode: str) -> Tuple[int, ...]:
    """For each of the ``lo + n + hi`` padded positions, the input index it copies
    (``padding_mode`` "circular", "reflect" or "replicate", PyTorch's meaning).

    The gradient folds the halo back through the same map: the padding
    operator's adjoint adds ``dxpad[p]`` into ``dx[source[p]]``.
    """
    return tuple(source_index(p, n, mode) for p in range(-lo, n + hi))


def source_index(p: int, n: int, mode: str) -> int:
    """The input index that position ``p`` (``< 0`` or ``>= n`` in the halo) of an
    input of ``n`` samples padded with ``padding_mode`` ``mode`` copies;
    ``-1`` for ``"zeros"`` outside the input (a zero, no source)."""
    if 0 <= p < n:
        return p
    if mode == "zeros":
        return -1
    if mode == "circular":
        return p % n
    if mode == "replicate":
        return min(max(p, 0), n - 1)
    period = max(2 * n - 2, 1)  # reflect, edge not repeated: period 2n - 2
    q = p % period
    return q if q < n else period - q


def circular_geometry(geom: ConvGeometry) -> Optional[ConvGeometry]:
    """The layer ``geom`` with circular padding as one FFT at the input size, or
    ``None`` when that does not apply.

    A circular correlation of length ``n`` is exactly a convolution over the
    circularly padded input when the stride is 1, the output is as long as
    the input (``lo + hi = ke - 1``) and the dilated kernel fits on the circle
    (``ke <= n``, so that no two taps land on one slot).
    """
    fits = all(s == 1 and lo + hi == ke - 1 and ke <= n for s, (lo, hi), ke, n in
               zip(geom.stride, geom.padding, geom.effective_kernel, geom.in_size))
    if not fits:
        return None
    return replace(geom, wrap=tuple(lo for lo, _ in geom.padding))


# -- transposed convolution -------------------------------------------------------------
def transposed_padding(padding, n, k, s, d, flip_kernel) -> Tuple[Pair, ...]:
    """``(lo, hi)`` per axis of a transposed convolution over an input of ``n``.

    As PyTorch for ints and pairs; ``"valid"`` is 0 and ``"full"`` is
    ``ke - 1``; ``"same"`` is the "same" padding of the forward convolution
    over ``n * s`` samples, whose adjoint this is (``n * s`` outputs);
    ``"causal"`` crops ``ke - s`` at the end only (:func:`transposed_causal_padding`,
    ``n * s`` outputs).
    """
    if padding == "same":
        return tuple(same_padding(ni * si, ki, si, di, flip_kernel)
                     for ni, ki, si, di in zip(n, k, s, d))
    if padding == "causal":
        return tuple(transposed_causal_padding(*args)[0] for args in zip(n, k, s, d))
    return resolve_padding(padding, n, k, s, d, flip_kernel)


def transposed_length(n: int, lo: int, hi: int, k: int, s: int, d: int, op: int) -> int:
    """PyTorch's ``(n - 1)*s - lo - hi + d*(k-1) + 1 + output_padding``."""
    return (n - 1) * s - lo - hi + effective_kernel(k, d) + op


def same_output_padding(n: int, lo: int, hi: int, k: int, s: int, d: int) -> int:
    """The ``output_padding`` that makes a transposed "same" layer ``n * s`` long."""
    return n * s - transposed_length(n, lo, hi, k, s, d, 0)


def transposed_conv_padding(lo: int, hi: int, s: int, op: int) -> Tuple[Pair, int]:
    """The forward convolution whose input gradient is a transposed one.

    A transposed layer with padding ``(lo, hi)`` and ``output_padding`` ``op``
    is the adjoint of a convolution over its output with padding ``(lo, hi -
    op)``.  When ``op > hi`` (allowed by PyTorch for dilation > stride), the
    end padding is raised by whole strides, which adds ``extra`` outputs to the
    convolution; the transposed input is extended by ``extra`` zeros to match.
    Returns ``((lo, hi'), extra)``.
    """
    extra = max(0, -(-(op - hi) // s))
    return (lo, hi - op + s * extra), extra


# -- the whole layer around the engine's convolution ------------------------------------
def to_channels_first(shape, weights: bool = False) -> Tuple[int, ...]:
    """A channels-last shape as channels-first: ``(N, *sp, C)`` -> ``(N, C, *sp)``;
    weights ``(*k, Cg, C_out)`` -> ``(C_out, Cg, *k)``."""
    shape = tuple(shape)
    if weights:
        return (shape[-1], shape[-2]) + shape[:-2]
    return (shape[0], shape[-1]) + shape[1:-1]


def to_channels_last(shape, weights: bool = False) -> Tuple[int, ...]:
    """Inverse of :func:`to_channels_first`."""
    shape = tuple(shape)
    if weights:
        return shape[2:] + (shape[1], shape[0])
    return (shape[0],) + shape[2:] + (shape[1],)


@dataclass(frozen=True)
class LayerGeometry:
    """A whole layer: the convolution an engine runs, and what surrounds it.

    ``conv`` is the zero-padded correlation the engine computes.  Around it:

    * ``transposed``: the layer's forward pass is ``conv``'s input gradient and
      its input gradient is ``conv``'s forward pass (roles exchanged, as JAX's
      ``_conv_general_dilated_transpose_*``); ``extra`` zeros extend the
      transposed input per axis (see :func:`transposed_conv_padding`);
    * ``padding_mode`` other than "zeros": the input is padded by
      ``mode_padding`` before a "valid" ``conv`` (or, for circular padding on
      an FFT engine, ``conv`` is a :func:`circular_geometry` and nothing is
      padded), and the gradient folds the halo back (:func:`padding_source`);
    * ``layout``: the shapes the caller sees.
    """

    conv: ConvGeometry
    transposed: bool = False
    padding_mode: str = "zeros"
    mode_padding: Tuple[Pair, ...] = ()
    extra: Tuple[int, ...] = ()
    layout: str = "channels_first"
    #: Transposed only: the layer's own ``(lo, hi)`` and ``output_padding`` per axis.
    transposed_padding: Tuple[Pair, ...] = ()
    output_padding: Tuple[int, ...] = ()

    @property
    def ndim(self) -> int:
        return self.conv.ndim

    @property
    def padding(self) -> Tuple[Pair, ...]:
        """The layer's ``(lo, hi)`` per axis, whatever fills the halo."""
        return self.transposed_padding or self.mode_padding or self.conv.padding

    @property
    def in_size(self) -> Tuple[int, ...]:
        """Spatial size of the layer's input ``x``."""
        c = self.conv
        if self.transposed:
            return tuple(o - e for o, e in zip(c.out_size, self.extra))
        if self.mode_padding and not c.wrap:
            return tuple(n - lo - hi for n, (lo, hi) in zip(c.in_size, self.mode_padding))
        return c.in_size

    @property
    def out_size(self) -> Tuple[int, ...]:
        return self.conv.in_size if self.transposed else self.conv.out_size

    @property
    def in_channels(self) -> int:
        return self.conv.out_channels if self.transposed else self.conv.in_channels

    @property
    def out_channels(self) -> int:
        return self.conv.in_channels if self.transposed else self.conv.out_channels

    @property
    def x_shape_cf(self) -> Tuple[int, ...]:
        return (self.conv.batch, self.in_channels) + self.in_size

    @property
    def y_shape_cf(self) -> Tuple[int, ...]:
        return (self.conv.batch, self.out_channels) + self.out_size

    def shown(self, shape, weights=False) -> Tuple[int, ...]:
        """A channels-first shape as the caller sees it (in ``layout``)."""
        return to_channels_last(shape, weights) if self.layout == "channels_last" else shape

    @property
    def x_shape(self) -> Tuple[int, ...]:
        """Shape of ``x`` in the caller's layout."""
        return self.shown(self.x_shape_cf)

    @property
    def y_shape(self) -> Tuple[int, ...]:
        return self.shown(self.y_shape_cf)

    @property
    def w_shape(self) -> Tuple[int, ...]:
        return self.shown(self.conv.w_shape, weights=True)

    def for_engine(self, circular_fast: bool) -> "LayerGeometry":
        """This layer as an engine that can (``circular_fast``) or cannot run a
        circular convolution at the input size sees it."""
        if not (circular_fast and self.padding_mode == "circular") or self.conv.wrap:
            return self
        inner = replace(self.conv, in_size=self.in_size, padding=self.mode_padding)
        wrapped = circular_geometry(inner)
        return self if wrapped is None else replace(self, conv=wrapped)

    @property
    def pads_input(self) -> bool:
        """Whether the layer pads the input itself (padding modes, not circular-FFT)."""
        return any(p for pair in self.mode_padding for p in pair) and not self.conv.wrap


def make_layer(x_shape, w_shape, padding, stride, dilation, groups, flip_kernel, real, *,
               transposed=False, output_padding=None, padding_mode="zeros",
               layout="channels_first") -> LayerGeometry:
    """Build a :class:`LayerGeometry` from validated channels-first shapes and options
    (``output_padding`` a per-axis tuple, transposed only)."""
    n_batch, c_in = x_shape[:2]
    in_size, kernel = tuple(x_shape[2:]), tuple(w_shape[2:])
    if transposed:
        pads = transposed_padding(padding, in_size, kernel, stride, dilation, flip_kernel)
        ops = output_padding or (0,) * len(in_size)
        if padding in ("same", "causal"):
            ops = tuple(same_output_padding(n, lo, hi, k, s, d) for n, (lo, hi), k, s, d in
                        zip(in_size, pads, kernel, stride, dilation))
        out = tuple(transposed_length(n, lo, hi, k, s, d, op) for n, (lo, hi), k, s, d, op in
                    zip(in_size, pads, kernel, stride, dilation, ops))
        conv_pads, extra = zip(*(transposed_conv_padding(lo, hi, s, op)
                                 for (lo, hi), s, op in zip(pads, stride, ops)))
        c_out = w_shape[1] * groups
        conv = make_geometry((n_batch, c_out) + out, (c_in, w_shape[1]) + kernel, conv_pads,
                             stride, dilation, groups, flip_kernel, real)
        return LayerGeometry(conv, transposed=True, extra=tuple(extra), layout=layout,
                             transposed_padding=pads, output_padding=tuple(ops))
    if padding_mode == "zeros":
        return LayerGeometry(make_geometry(x_shape, w_shape, padding, stride, dilation, groups,
                                           flip_kernel, real), layout=layout)
    pads = resolve_padding(padding, in_size, kernel, stride, dilation, flip_kernel)
    padded = tuple(n + lo + hi for n, (lo, hi) in zip(in_size, pads))
    conv = make_geometry((n_batch, c_in) + padded, w_shape, "valid", stride, dilation, groups,
                         flip_kernel, real)
    return LayerGeometry(conv, padding_mode=padding_mode, mode_padding=pads, layout=layout)
