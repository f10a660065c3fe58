"""The direct path on one spatial axis at stride 1: one im2col GEMM per product.

A 1-D correlation with ``k`` taps at dilation ``d`` is a single GEMM over a
*column matrix*: ``cols[c, j, t] = src[c, t + j*d]``, so that ``y[o, t] =
sum_{c, j} w[o, c, j] cols[c, j, t]``.  The column matrix of a block of
samples is built with **one strided copy** (a view whose tap axis has stride
``d`` in the source, :meth:`~fftconv.backends.Arrays.as_strided`), and the
GEMM writes its result **in place**, into the caller's output: no per-tap
copies, no partial sums, no crop.

* forward: ``src`` is the padded input ``xpad`` (:func:`forward`);
* input gradient: ``src`` is ``dy`` embedded with ``(k-1)*d`` zeros on each
  side (a correlation with the flipped, transposed kernel), built per block
  in a small buffer (:func:`backward`);
* weight gradient: the same ``dy`` column matrix times ``conj(x)``,
  contracting the length per sample, then summed over the block's samples:
  ``dw[c, (o, j)] = sum_{n, t} xc[n, c, t] cols[n, o, j, t]``.

The work runs in *blocks* of samples and, when one sample's column matrix
is larger than a block (:func:`block_target`), of output segments
(:func:`blocking`), so the column matrix stays in cache and the workspace is
bounded for any length (:func:`block_bytes`, the honest bound the engine
reports).  Every operation
on an operand goes through the operands' :class:`~fftconv.backends.Arrays`;
numpy is called on dtypes only.
"""
from __future__ import annotations

from math import ceil
from typing import Iterator, NamedTuple

from ..backends import Arrays
from ..geometry import ConvGeometry

#: Bytes of one block's buffers (its column matrix above all), at most: the
#: samples per block, or the segment length of one sample, are chosen to fill
#: :func:`block_target`.  The GEMMs of a pass with few output channels are
#: bound by memory, and run best on a block that stays in the 2 MiB L2 cache
#: per core; with many output channels they are bound by arithmetic, and
#: longer GEMMs run best.  Measured by a hand-run sweep of 1-D float32
#: training steps, 2 threads, "same", block targets 0.25 to 32 MiB
#: (``docs/design-notes.md``, "a 1-D direct path"): the best target was 1 MiB
#: at 2 and 4 channels (up to 1.7x faster than 8 MiB), flat at 8, 4-8 MiB at
#: 16 to 64 channels (1 MiB was 1.12-1.3x slower there).
BLOCK_BYTES = 8 << 20

#: The smallest block target, and the target's growth per output channel.
SMALL_BLOCK_BYTES = 1 << 20
BLOCK_BYTES_PER_CHANNEL = 256 << 10

#: The shortest output segment a block takes (a long kernel over many channels
#: would otherwise make GEMMs of a few columns); the workspace bound counts it.
MIN_SEGMENT = 256


def applies(geom: ConvGeometry) -> bool:
    """Whether this path computes ``geom``: one spatial axis, stride 1."""
    return geom.ndim == 1 and geom.stride == (1,)


class Block(NamedTuple):
    """Samples ``n0:n1`` and output positions ``t0:t1`` of one GEMM block."""

    n0: int
    n1: int
    t0: int
    t1: int


class Blocking(NamedTuple):
    """How a pass is cut: ``samples`` per block, ``segment`` positions per block."""

    samples: int
    segment: int


def _per_sample(groups: int, src: int, dst: int, taps: int, halo: int, segment: int) -> int:
    """Elements one sample of a block allocates: its column matrix, its embedded
    source (input gradient) and its weight-gradient product."""
    return groups * src * (taps * segment + segment + halo) + groups * src * dst * taps


def block_target(dst: int) -> int:
    """Bytes a block of a pass into ``dst`` output channels (per group) fills."""
    return min(BLOCK_BYTES, max(SMALL_BLOCK_BYTES, dst * BLOCK_BYTES_PER_CHANNEL))


def blocking(n: int, length: int, groups: int, src: int, dst: int, taps: int, halo: int,
             itemsize: int) -> Blocking:
    """Samples and segment length per block for ``n`` samples of ``length``
    output positions, ``src`` channels into ``dst`` per group, ``taps`` taps
    spanning ``halo + 1`` positions, to fill :func:`block_target`."""
    budget = block_target(dst) // itemsize
    whole = _per_sample(groups, src, dst, taps, halo, length)
    if whole <= budget:
        per_block = min(n, max(1, budget // whole))
        return Blocking(ceil(n / ceil(n / per_block)), length)
    fixed = _per_sample(groups, src, dst, taps, halo, 0)
    segment = max(MIN_SEGMENT, (budget - fixed) // (groups * src * (taps + 1)))
    segment = min(segment, length)
    return Blocking(1, ceil(length / ceil(length / segment)))


def block_bytes(blocks: Blocking, groups: int, src: int, dst: int, taps: int, halo: int,
                itemsize: int) -> int:
    """Bytes one pass cut in ``blocks`` allocates beyond its inputs and outputs:
    a block's buffers and the weight gradient's sum and accumulator."""
    return itemsize * (blocks.samples * _per_sample(groups, src, dst, taps, halo, blocks.segment)
                       + 2 * groups * src * dst * taps)


def _blocks(n: int, length: int, cut: Blocking) -> Iterator[Block]:
    for n0 in range(0, n, cut.samples):
        for t0 in range(0, length, cut.segment):
            yield Block(n0, min(n0 + cut.samples, n), t0, min(t0 + cut.segment, length))


def _columns(buffer, src, taps: int, dilation: int, segment: int, arrays: Arrays):
    """The column matrix ``(n, G, C * taps, segment)`` of ``src`` ``(n, G, C, >=
    segment + (taps-1)*dilation)``: row ``(c, j)`` is ``src[..., c, j*d:][:segment]``,
    copied with one strided view into the front of the flat ``buffer``."""
    n, g, c = src.shape[:3]
    cols = arrays.reshape(buffer[:n * g * c * taps * segment], (n, g, c, taps, segment))
    view = arrays.as_strided(src, (n, g, c, taps, segment),
                             arrays.strides(src)[:3] + (dilation * arrays.strides(src)[3],
                                                        arrays.strides(src)[3]))
    arrays.copy_into(cols, view)
    return arrays.reshape(cols, (n, g, c * taps, segment))


def forward(xpad, wg, y, dilation: int, arrays: Arrays) -> None:
    """``y[n, g, o, t] = sum_{c, j} wg[g, o, c, j] xpad[n, g, c, t + j*d]``, in place.

    ``xpad`` ``(N, G, C, P)``, ``wg`` ``(G, O, C, k)`` (as correlated), ``y``
    ``(N, G, O, L)`` with ``L = P - (k-1)*d``; dtypes: ``y``'s."""
    n, g, c = xpad.shape[:3]
    o, k = wg.shape[1], wg.shape[3]
    length, halo = y.shape[3], (k - 1) * dilation
    dtype = arrays.numpy_dtype(y.dtype)
    cut = blocking(n, length, g, c, o, k, halo, dtype.itemsize)
    buffer = arrays.empty((cut.samples * g * c * k * cut.segment,), dtype)
    w2 = arrays.reshape(wg, (g, o, c * k))
    for b in _blocks(n, length, cut):
        cols = _columns(buffer, xpad[b.n0:b.n1, ..., b.t0:], k, dilation, b.t1 - b.t0, arrays)
        arrays.matmul(w2, cols, out=y[b.n0:b.n1, ..., b.t0:b.t1])


class _Embedded:
    """``dy`` ``(N, G, O, L)`` seen from the input's positions: for input position
    ``t`` (of the unpadded input), tap ``j`` of the flipped kernel reads
    ``dy[..., t + lo - (k-1-j)*d]``, zero outside ``dy``.  A block's source is
    ``dy`` over ``[t0 + lo - halo, t1 + lo)``, copied with zero edges into a
    reused buffer, so that its column matrix is one strided copy."""

    def __init__(self, dy, lo: int, halo: int, cut: Blocking, dtype, arrays: Arrays):
        self.dy, self.lo, self.halo, self.arrays = dy, lo, halo, arrays
        g, o = dy.shape[1:3]
        self.buffer = arrays.empty((cut.samples * g * o * (cut.segment + halo),), dtype)

    def __call__(self, b: Block):
        arrays, dy, halo = self.arrays, self.dy, self.halo
        n, (g, o), width = b.n1 - b.n0, dy.shape[1:3], b.t1 - b.t0 + halo
        src = arrays.reshape(self.buffer[:n * g * o * width], (n, g, o, width))
        first = b.t0 + self.lo - halo  # the dy position at src[..., 0]
        u0, u1 = max(0, -first), max(0, min(width, dy.shape[3] - first))
        u0 = min(u0, u1)
        for lo_, hi_ in ((0, u0), (u1, width)):
            if hi_ > lo_:
                arrays.copy_into(src[..., lo_:hi_], 0)
        if u1 > u0:
            arrays.copy_into(src[..., u0:u1], dy[b.n0:b.n1, ..., first + u0:first + u1])
        return src


def backward(dy, v, xc, dx, lo: int, length: int, dilation: int, dtype, arrays: Arrays):
    """The input gradient into ``dx`` (in place, when given) and the weight
    gradient's sums (returned, when ``xc`` is given), from one column matrix
    of ``dy`` per block.

    ``dy`` ``(N, G, O, L)``; ``v`` ``(G, C, O, k)``: the kernel transposed,
    conjugated and flipped (``v[g, c, o, j] = conj(w[g, o, c, k-1-j])``);
    ``xc`` ``(N, G, C, >= lo + length)``: ``conj(xpad)``; ``dx`` ``(N, G, C,
    length)``; ``dtype``: the numpy dtype of the buffers and the sums.
    The sums are ``(G, C, O * k)``, indexed by the flipped tap:
    ``sums[g, c, (o, j)] = dw[g, o, c, k-1-j]`` (conjugated as the caller's
    ``xc`` makes it)."""
    n, g, o = dy.shape[:3]
    c, k = v.shape[1], v.shape[3]
    halo = (k - 1) * dilation
    cut = blocking(n, length, g, o, c, k, halo, dtype.itemsize)
    embedded = _Embedded(dy, lo, halo, cut, dtype, arrays)
    buffer = arrays.empty((cut.samples * g * o * k * cut.segment,), dtype)
    v2 = arrays.reshape(v, (g, c, o * k))
    # the weight gradient's GEMM with the operand of more rows on the left:
    # OpenBLAS ran cols @ rows^T 1.2-1.7x faster than rows @ cols^T where
    # O*k >= C, and 1.2x slower at C = 64, O*k = 24 (one thread, float32)
    cols_first = o * k >= c
    sums = None if xc is None else arrays.zeros((g, o * k, c) if cols_first else (g, c, o * k),
                                               dtype)
    swap = (0, 1, 3, 2)
    for b in _blocks(n, length, cut):
        cols = _columns(buffer, embedded(b), k, dilation, b.t1 - b.t0, arrays)
        if dx is not None:
            arrays.matmul(v2, cols, out=dx[b.n0:b.n1, ..., b.t0:b.t1])
        if xc is not None and sums is not None:
            rows = xc[b.n0:b.n1, ..., lo + b.t0:lo + b.t1]
            product = (arrays.matmul(cols, arrays.permute(rows, swap)) if cols_first else
                       arrays.matmul(rows, arrays.permute(cols, swap)))
            sums += arrays.sum(product, (0,))
    if sums is not None and cols_first:
        return arrays.permute(sums, (0, 2, 1))
    return sums


def pass_bytes(geom: ConvGeometry, n: int, itemsize: int) -> int:
    """The larger of the two passes' :func:`block_bytes` for ``n`` samples."""
    g, (d,), (k,) = geom.groups, geom.dilation, geom.kernel
    ci, co, halo = geom.in_channels // g, geom.out_channels // g, (k - 1) * d
    return max(block_bytes(blocking(n, size, g, src, dst, k, halo, itemsize),
                           g, src, dst, k, halo, itemsize)
               for src, dst, size in ((ci, co, geom.out_size[0]), (co, ci, geom.in_size[0])))


def work(geom: ConvGeometry, itemsize: int) -> tuple:
    """``(elements, calls)`` of one training step, for the cost model.

    Elements: the column matrices written and read by the GEMMs (their memory
    traffic bounds GEMMs with few output channels), ``dy`` embedded, the
    outputs written in place and the weight-gradient partial sums.  Calls:
    numpy calls per block (a strided copy and a GEMM forward; the
    embedding's copy and two fills, a strided copy, two GEMMs, a sum and an
    addition backward) and the BLAS calls the batched GEMMs make (one per sample and
    group)."""
    g, n, (d,), (k,) = geom.groups, geom.batch, geom.dilation, geom.kernel
    ci, co, halo = geom.in_channels // g, geom.out_channels // g, (k - 1) * d
    lo, li = geom.out_size[0], geom.in_size[0]
    # per sample and group: columns written and read (twice backward), the
    # embedded dy, the outputs, the rows of x and the weight-gradient partials
    per_sample = ((2 * ci * k + co) * lo, (3 * co * k + co + 2 * ci) * li + ci * co * k)
    elements = calls = 0
    for src, dst, size, gemms, per_block, moved in ((ci, co, lo, 1, 2, per_sample[0]),
                                                    (co, ci, li, 2, 7, per_sample[1])):
        cut = blocking(n, size, g, src, dst, k, halo, itemsize)
        segments = ceil(size / cut.segment)
        elements += n * g * moved
        calls += ceil(n / cut.samples) * segments * per_block + gemms * n * g * segments
    return elements, calls

