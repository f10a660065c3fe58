"""Direct (spatial-domain) convolution: the comparison for every FFT result.

Same semantics as the FFT path (CONVENTIONS §1-3), computed with GEMMs over
the kernel taps; Python loops run over taps and batch chunks, never over
pixels.  Three strategies, chosen by stride and the number of axes:

* **flat shifts** (stride 1 on every axis).  The padded input is flattened
  per channel; the output at flat position ``p`` is ``sum_j w[:, :, j] @
  x_flat[:, p + off_j]`` with ``off_j = sum_a j_a d_a S_a`` (``S`` the flat
  strides of the padded grid), so a tap's operand is a contiguous slice that
  BLAS reads in place.  Positions between rows (``k - 1`` per row) are
  computed and dropped.  The taps of the trailing kernel axes are *stacked*
  into the GEMM's inner dimension (one copy of the source per stacked tap,
  :data:`STACK_DEPTH`), the rest are *looped*, one GEMM each, and the batch
  runs in chunks that stay in cache (:data:`CHUNK_BYTES`).  The gradients
  share one stacked operand: ``dy`` shifted on the padded grid gives ``dx``
  as a correlation with the flipped kernel and ``dw`` as its product with
  ``x`` (:func:`_flat_backward`).  Stacking and cache-sized chunks took a
  2-D N=8, 16->16, 128x128, k=3 float32 training step from 32-37 ms (one GEMM
  per tap over the whole batch) to 19-20 ms, and k=5 from 75-86 ms to 45 ms.
* **one axis, stride 1** (:mod:`fftconv.algorithms.direct_1d`): one im2col
  GEMM per product, its column matrix built with one strided copy per block
  and its result written in place (into the caller's ``y``/``dx`` where they
  are C-contiguous); the flat shifts above take two and three axes.
* **patches** (any stride): for offset ``j`` the strided patch
  ``xpad[..., j*d : j*d + (out-1)*s + 1 : s]`` is copied to a matrix and
  multiplied; a flat-shift version would compute ``prod(stride)`` times too
  many outputs.

Memory beyond the inputs and outputs is ``O(chunk * C * prod(padded) *
stacked taps)`` for flat shifts and ``O(N * C * out)`` for patches.  All
functions take arrays already checked and cast to the compute dtype, a
:class:`~fftconv.geometry.ConvGeometry` and the operands'
:class:`~fftconv.backends.Arrays`: every operation on an operand goes through
it (numpy, CuPy, torch tensors on any device), with strided views
(:meth:`~fftconv.backends.Arrays.as_strided`, strides in elements) where the
flat shifts need them; numpy is called on dtypes and host integers only.
"""
from __future__ import annotations

import contextlib
import dataclasses
from functools import cached_property
from math import prod
from typing import Optional, Tuple

import numpy as np

from .. import costs
from ..backends import Arrays, host
from ..costs import Work
from ..geometry import ConvGeometry
from ..protocol import Saved, batch_chunked
from . import direct_1d


def _kernel_offsets(geom: ConvGeometry):
    """Yield ``(j, window)``: kernel index and the strided window of ``xpad`` it reads."""
    for j in np.ndindex(*geom.kernel):
        yield j, tuple(slice(ji * d, ji * d + (o - 1) * s + 1, s)
                       for ji, d, o, s in zip(j, geom.dilation, geom.out_size, geom.stride))


def _dtype(arrays: Arrays, *operands) -> np.dtype:
    """The numpy dtype of a result of ``operands`` (as numpy promotes)."""
    return np.result_type(*(arrays.numpy_dtype(a.dtype) for a in operands))


def _channels_first(a, groups: int, arrays: Arrays):
    """``(N, C, *sp)`` -> contiguous ``(groups, C // groups, N, *sp)``."""
    n, c = a.shape[:2]
    grouped = arrays.reshape(a, (n, groups, c // groups) + tuple(a.shape[2:]))
    return arrays.contiguous(arrays.moveaxis(grouped, 0, 2))


def _batch_first(a, arrays: Arrays):
    """Inverse of :func:`_channels_first`: ``(G, Cg, N, *sp)`` -> ``(N, C, *sp)``."""
    g, cg, n = a.shape[:3]
    return arrays.reshape(arrays.contiguous(arrays.moveaxis(a, 2, 0)),
                          (n, g * cg) + tuple(a.shape[3:]))


def _flipped(a, ndim: int, arrays: Arrays):
    """``a`` reversed on its last ``ndim`` (spatial) axes (a view where the library
    has negative strides, numpy and CuPy; a copy in torch)."""
    return arrays.flip(a, tuple(range(a.ndim - ndim, a.ndim)))


def _oriented(w, geom: ConvGeometry, arrays: Arrays):
    """The kernel as correlated: flipped on every spatial axis for ``flip_kernel``."""
    return _flipped(w, geom.ndim, arrays) if geom.flip_kernel else w


def _grouped_kernel(w, groups: int, arrays: Arrays):
    """``(C_out, Cg, *k)`` -> ``(G, Og, Cg, *k)``."""
    return arrays.reshape(w, (groups, w.shape[0] // groups) + tuple(w.shape[1:]))


def _conj(a, arrays: Arrays):
    """``conj(a)`` for a complex ``a``, else ``a`` itself."""
    return arrays.conj(a) if arrays.numpy_dtype(a.dtype).kind == "c" else a


def prepare(x, geom: ConvGeometry, arrays: Arrays):
    """``x`` as both passes read it: zero-padded, ``(N, C, *padded)``.  Always a
    new array, so a plan keeps it for the gradients instead of a copy of ``x``."""
    if not any(lo or hi for lo, hi in geom.padding):
        return arrays.copy(x)
    xpad = arrays.empty(tuple(x.shape[:2]) + tuple(geom.padded_size), arrays.numpy_dtype(x.dtype))
    inner = tuple(slice(lo, lo + n) for (lo, _), n in zip(geom.padding, x.shape[2:]))
    arrays.copy_into(xpad[(slice(None), slice(None)) + inner], x)
    # the halo zeroed slab by slab (as numpy.pad does): each element is written once
    # (zeros and a copy write the inside twice: 1.10x slower at 8x16x130x130 float64)
    for a, ((lo, hi), n) in enumerate(zip(geom.padding, x.shape[2:])):
        for side in (slice(0, lo), slice(lo + n, lo + n + hi)):
            if side.stop > side.start:
                arrays.copy_into(xpad[(slice(None),) * (2 + a) + (side,)], 0)
    return xpad


def forward(xpad, w, geom: ConvGeometry, arrays: Arrays, out=None):
    """``y`` of shape ``(N, C_out, *out)`` (no bias) from ``xpad = prepare(x)``.
    On one axis at stride 1, ``y`` is written into ``out`` where it can be
    (:func:`_destination`): a caller copies the result only if it is not ``out``."""
    if direct_1d.applies(geom):
        return _line_forward(xpad, w, geom, arrays, out)
    return (_flat_forward if _flat(geom) else _patch_forward)(xpad, w, geom, arrays)


def gradients(dy, xpad, w, geom: ConvGeometry, arrays: Arrays, out=None) -> tuple:
    """``(dx, dw)`` from ``xpad = prepare(x)`` (``dx`` into ``out`` as :func:`forward`)."""
    xc = _conj(xpad, arrays)
    if direct_1d.applies(geom):
        return _line_backward(dy, xc, w, geom, arrays, out=out)
    if not _flat(geom):
        return (_patch_input_grad(dy, w, geom, arrays),
                _patch_weight_grad(dy, xc, geom, arrays))
    return _flat_backward(_ShiftedDy(dy, geom, arrays), xc, w, geom, arrays)


def input_grad(dy, w, geom: ConvGeometry, arrays: Arrays, out=None):
    """``dx`` alone (a transposed layer's forward pass; into ``out`` as :func:`forward`)."""
    if direct_1d.applies(geom):
        return _line_backward(dy, None, w, geom, arrays, out=out)[0]
    if not _flat(geom):
        return _patch_input_grad(dy, w, geom, arrays)
    return _flat_backward(_ShiftedDy(dy, geom, arrays), None, w, geom, arrays)[0]


def weight_grad(dy, xpad, geom: ConvGeometry, arrays: Arrays):
    """``dw`` alone from ``xpad = prepare(x)``.  With stride 1 on 2-3 axes the
    shared-operand path computes ``dx`` too and drops it (one correlation's
    extra work); on one axis only the weight gradient's GEMMs run."""
    xc = _conj(xpad, arrays)
    if not _flat(geom):
        return _patch_weight_grad(dy, xc, geom, arrays)
    w = arrays.zeros(geom.w_shape, _dtype(arrays, dy, xpad))
    if direct_1d.applies(geom):
        return _line_backward(dy, xc, w, geom, arrays, need_dx=False)[1]
    return _flat_backward(_ShiftedDy(dy, geom, arrays), xc, w, geom, arrays)[1]


# -- one axis, stride 1: im2col GEMMs (fftconv.algorithms.direct_1d) ------------------------
def _destination(out, shape, dtype, arrays: Arrays):
    """``out`` if a GEMM can write into it in place (C-contiguous, of ``shape`` and
    ``dtype``: a channels-last view would send numpy's matmul to its slow loop),
    else a new array."""
    if (out is not None and tuple(out.shape) == tuple(shape)
            and arrays.numpy_dtype(out.dtype) == dtype
            and arrays.strides(out) == tuple(prod(shape[a + 1:]) for a in range(len(shape)))):
        return out
    return arrays.empty(shape, dtype)


def _by_group(a, groups: int, arrays: Arrays):
    """``(N, C, L)`` -> ``(N, groups, C // groups, L)``: an axis split, always a view."""
    return arrays.reshape(a, (a.shape[0], groups, a.shape[1] // groups, a.shape[2]))


def _line_forward(xpad, w, geom: ConvGeometry, arrays: Arrays, out=None):
    """:func:`forward` on one axis at stride 1: ``y`` written in place by
    :func:`direct_1d.forward`, into ``out`` where it can be."""
    g = geom.groups
    wg = _grouped_kernel(_oriented(w, geom, arrays), g, arrays)
    y = _destination(out, geom.y_shape, _dtype(arrays, xpad, w), arrays)
    direct_1d.forward(_flat_input(xpad, geom, arrays), wg, _by_group(y, g, arrays),
                      geom.dilation[0], arrays)
    return y


def _line_backward(dy, xc, w, geom: ConvGeometry, arrays: Arrays, need_dx: bool = True,
                   out=None):
    """``(dx, dw)`` on one axis at stride 1 (:func:`direct_1d.backward`): ``dx``
    (into ``out`` where it can be) ``None`` unless ``need_dx``, ``dw`` ``None``
    when ``xc = conj(xpad)`` is."""
    g, n = geom.groups, geom.batch
    wg = _grouped_kernel(_oriented(w, geom, arrays), g, arrays)
    v = _flipped(arrays.conj(arrays.permute(wg, (0, 2, 1, 3))), 1, arrays)
    og = wg.shape[1]
    dtype = np.result_type(_dtype(arrays, dy, w), *(() if xc is None else (_dtype(arrays, xc),)))
    dx = _destination(out, geom.x_shape, dtype, arrays) if need_dx else None
    sums = direct_1d.backward(arrays.reshape(dy, (n, g, og) + geom.out_size), v,
                              None if xc is None else _flat_input(xc, geom, arrays),
                              None if dx is None else _by_group(dx, g, arrays),
                              geom.padding[0][0], geom.in_size[0], geom.dilation[0], dtype,
                              arrays)
    dw = None if sums is None else _weight_grad_layout(
        arrays.reshape(sums, (1,) + tuple(sums.shape)), _taps(geom, og), geom, arrays)
    return dx, dw


def workspace_bytes(geom: ConvGeometry, dtype, chunk: int) -> int:
    """Bytes a pass over ``chunk`` samples allocates beyond its inputs and outputs
    (an upper bound): the padded input, the channels-first copies and per-tap
    patches of the patch path, the piece's result before it is copied out, and,
    with stride 1, :func:`_correlate`'s cache-sized stacked operands and sums
    (on one axis, :mod:`direct_1d`'s block buffers and the kernel's copies).
    Checked against tracemalloc's peak (``tests/test_reliability_runtime.py``)."""
    if chunk == 0:
        return 0
    itemsize = np.dtype(dtype).itemsize
    ci, co = geom.in_channels, geom.out_channels
    pad, inp, out = prod(geom.padded_size), prod(geom.in_size), prod(geom.out_size)
    if not _flat(geom):
        return chunk * (3 * ci * pad + 2 * ci * inp + 2 * ci * out + 4 * co * out) * itemsize
    if direct_1d.applies(geom):  # the kernel's zero, oriented and flipped copies, the blocks
        return (chunk * (ci * pad + max(co * out, ci * inp)) * itemsize
                + 4 * prod(geom.w_shape) * itemsize + direct_1d.pass_bytes(geom, chunk, itemsize))
    return chunk * (ci * pad + max(co * out, ci * inp)) * itemsize + max(
        _correlate_bytes(geom, src, dst, size, chunk, itemsize)
        for src, dst, size in ((ci, co, geom.out_size), (co, ci, geom.in_size)))


def _correlate_bytes(geom: ConvGeometry, src: int, dst: int, size, n: int, itemsize: int) -> int:
    """Bytes :func:`_correlate` allocates for ``n`` samples from ``src`` channels to
    ``dst``: its chunk's stacked operand and two partial outputs, the shifted
    ``dy`` buffer and the weight-gradient sums."""
    g, strides = geom.groups, _flat_strides(geom)
    c, o = src // g, dst // g
    taps = _taps(geom, c)
    length = _flat_length(size, strides)
    span = length + taps.last_looped
    per_sample = _sample_bytes(g, c, o, taps, span, length, itemsize)
    chunk = _chunk(n, per_sample)
    shifted = g * max(c, o) * (_max_offset(geom) + prod(geom.padded_size)) * itemsize
    sums = taps.n_looped * g * max(c, o) * c * taps.n_stacked * itemsize
    return chunk * (per_sample + shifted) + 2 * sums


class DirectEngine:
    """The direct algorithm behind the engine protocol (``fftconv.protocol``).

    No buffers, no transforms: the weight state is the private ``w`` it is
    given and a saved input is the zero-padded ``x`` (:func:`prepare`, a new array).
    Nothing is shared between calls, so its ``lock`` is a no-op and calls on one
    geometry from many threads run concurrently.  The batch runs ``chunk``
    samples at a time (all of it unless a workspace budget asks for less,
    :func:`workspace_bytes`), the weight gradient summed over the chunks.
    """

    fft_shape = None
    tile = None

    def __init__(self, geom: ConvGeometry, dtype, settings=None, chunk=None,
                 arrays: Optional[Arrays] = None):
        self.geom, self.dtype = geom, np.dtype(dtype)
        self.arrays = host() if arrays is None else arrays
        self.chunk = min(chunk or geom.batch, geom.batch)
        self.lock = contextlib.nullcontext()

    @property
    def workspace_bytes(self) -> int:
        return workspace_bytes(self.geom, self.dtype, self.chunk)

    @property
    def kept_bytes(self) -> int:
        """Bytes a forward pass keeps for the backward pass: the padded input."""
        g = self.geom
        return g.batch * g.in_channels * prod(g.padded_size) * self.dtype.itemsize

    @property
    def transform_counts(self) -> dict:
        return {"forward": 0, "inverse": 0}

    def _pieces(self):
        """``(rows, geometry of those rows)`` per batch chunk."""
        g, step = self.geom, max(self.chunk, 1)
        for n0 in range(0, g.batch, step):
            rows = slice(n0, min(n0 + step, g.batch))
            yield rows, dataclasses.replace(g, batch=rows.stop - n0)

    def _run(self, shape, out, piece):
        """``out`` (a new array of ``shape`` if ``None``) filled piece by piece:
        ``piece(rows, geometry, destination)`` returns those rows, written into
        ``destination`` where it can (else they are copied there).  One piece
        without ``out`` is returned as is."""
        if self.chunk >= self.geom.batch:
            part = piece(slice(None), self.geom, out)
            return part if out is None or part is out else self._copy(out, part)
        result = self.arrays.empty(shape, self.dtype) if out is None else out
        for rows, g in self._pieces():
            destination = result[rows]
            part = piece(rows, g, destination)
            if part is not destination:
                self.arrays.copy_into(destination, part)
        return result

    def _summed(self, piece):
        """The sum over pieces of ``piece(rows, geometry)`` (the weight gradient)."""
        total = None
        for rows, g in self._pieces():
            part = piece(rows, g)
            if total is None:
                total = part
            else:
                total += part
        return total

    def weights(self, w):
        """``w`` itself, a private array already (see the protocol); made contiguous
        once here when it is a layout view, not in every pass."""
        return self.arrays.contiguous(w)

    def save_input(self, x) -> Saved:
        return Saved("padded", prepare(x, self.geom, self.arrays))

    @staticmethod
    def save_output(dy) -> Saved:
        return Saved("signal", dy)

    def forward(self, x, w, keep=False, out=None) -> tuple:
        arrays = self.arrays
        if keep:
            saved = self.save_input(x)
            return self._run(self.geom.y_shape, out, lambda rows, g, dest: forward(
                saved.array[rows], w, g, arrays, dest)), saved
        return self._run(self.geom.y_shape, out, lambda rows, g, dest: forward(
            prepare(x[rows], g, arrays), w, g, arrays, dest)), None

    def input_grad(self, dy, w, keep=False, out=None) -> tuple:
        arrays = self.arrays
        dx = self._run(self.geom.x_shape, out,
                       lambda rows, g, dest: input_grad(dy[rows], w, g, arrays, dest))
        return dx, Saved("signal", arrays.copy(dy)) if keep else None

    def backward(self, dy, saved_x, w, need_dx=True, need_dw=True, out=None) -> tuple:
        arrays = self.arrays
        if not need_dw:
            return self.input_grad(dy, w, out=out)[0], None
        xpad = saved_x.array
        if not need_dx:
            return None, self._summed(
                lambda rows, g: weight_grad(dy[rows], xpad[rows], g, arrays))
        if self.chunk >= self.geom.batch:
            dx, dw = gradients(dy, xpad, w, self.geom, arrays, out)
            return (dx if out is None or dx is out else self._copy(out, dx)), dw
        dw = arrays.zeros(self.geom.w_shape, self.dtype)
        dx = arrays.empty(self.geom.x_shape, self.dtype) if out is None else out
        for rows, g in self._pieces():
            destination = dx[rows]
            dx_part, part = gradients(dy[rows], xpad[rows], w, g, arrays, destination)
            if dx_part is not destination:
                arrays.copy_into(destination, dx_part)
            dw += part
        return dx, dw

    def _copy(self, out, a):
        self.arrays.copy_into(out, a)
        return out

    def transposed_backward(self, x, saved_dy, w, need_y=True, need_dw=True, out=None) -> tuple:
        arrays = self.arrays
        y = (arrays.empty(self.geom.y_shape, self.dtype) if out is None else out) if need_y else None
        dw = None
        for rows, g in self._pieces():
            xpad = prepare(x[rows], g, arrays)
            if y is not None:
                destination = y[rows]
                part = forward(xpad, w, g, arrays, destination)
                if part is not destination:
                    arrays.copy_into(destination, part)
            if need_dw:
                part = weight_grad(saved_dy.array[rows], xpad, g, arrays)
                if dw is None:
                    dw = part
                else:
                    dw += part
        return y, dw


def _flat(geom: ConvGeometry) -> bool:
    return all(s == 1 for s in geom.stride)


# -- flat shifts (stride 1) --------------------------------------------------------------
#: A batch chunk's stacked operand and partial output take about this many bytes,
#: so that they stay in the last-level cache while every kernel tap reads them.
CHUNK_BYTES = 4 << 20

#: The last kernel axis is always stacked into the GEMM's inner dimension, and
#: further trailing axes while ``channels * stacked taps`` stays within this:
#: fewer, deeper GEMMs and fewer passes over the output, for one copy of the
#: source per stacked tap.  Chosen by a hand-run sweep of fwd+bwd over 1-3 D
#: layers with 1 to 256 channels and k = 3 to 33: stacking the last axis
#: was never slower (up to 1.6x faster, 2-D 16 ch
#: k=5), and stacking more axes paid up to about 128 (3-D 8 ch k=3: 1.2x faster
#: with two axes, 1.2x slower with all three).
STACK_DEPTH = 128


class _Taps:
    """The kernel taps of a flat-shift correlation, split in two.

    The taps of the trailing ``len(stacked_kernel)`` axes are *stacked*: the
    source is copied once per stacked tap into a ``(channels * stacked, span)``
    operand.  The taps of the leading axes are *looped*: one GEMM each, on a
    contiguous slice of that operand.  ``looped`` and ``stacked`` hold the flat
    offsets of the taps, in kernel order, listed only when a pass runs (a
    kernel of a million taps would take seconds to list); the costs read
    their counts and the last looped offset.
    """

    def __init__(self, offsets: Tuple[int, ...], kernel: Tuple[int, ...], split: int):
        self._offsets, self._kernel, self._split = offsets, kernel, split
        self.looped_kernel, self.stacked_kernel = kernel[:split], kernel[split:]
        self.n_looped, self.n_stacked = prod(self.looped_kernel), prod(self.stacked_kernel)
        #: Flat offset of the last looped tap (the largest).
        self.last_looped = sum((k - 1) * off for k, off in zip(self.looped_kernel, offsets))

    def _listed(self, axes) -> Tuple[int, ...]:
        return tuple(sum(j * self._offsets[a] for j, a in zip(jj, axes))
                     for jj in np.ndindex(*(self._kernel[a] for a in axes)))

    @cached_property
    def looped(self) -> Tuple[int, ...]:
        return self._listed(range(self._split))

    @cached_property
    def stacked(self) -> Tuple[int, ...]:
        return self._listed(range(self._split, len(self._kernel)))


def _flat_strides(geom: ConvGeometry) -> Tuple[int, ...]:
    """Flat strides of the padded grid (C order)."""
    pads = geom.padded_size
    return tuple(prod(pads[a + 1:]) for a in range(geom.ndim))


def _flat_length(size, strides) -> int:
    """Flat length that covers a ``size`` box at the origin of a grid with ``strides``."""
    return sum((n - 1) * st for n, st in zip(size, strides)) + 1


def _taps(geom: ConvGeometry, channels: int) -> _Taps:
    """Split the taps for a source of ``channels`` channels (see :data:`STACK_DEPTH`)."""
    k, strides = geom.kernel, _flat_strides(geom)
    split = geom.ndim - 1
    while split > 0 and channels * prod(k[split - 1:]) <= STACK_DEPTH:
        split -= 1

    return _Taps(tuple(d * st for d, st in zip(geom.dilation, strides)), tuple(k), split)


def _sample_bytes(g: int, c: int, o: int, taps: _Taps, span: int, length: int,
                  itemsize: int) -> int:
    """Bytes of one sample's stacked operand and partial outputs in :func:`_correlate`."""
    return g * (c * taps.n_stacked * span + 2 * o * length) * itemsize


def _chunk(n: int, per_sample_bytes: int) -> int:
    """Samples per batch chunk: as many as fit in :data:`CHUNK_BYTES`, at least one."""
    return max(1, min(n, CHUNK_BYTES // max(per_sample_bytes, 1)))


class _Stacker:
    """Builds the stacked operand of one batch chunk at a time (see :class:`_Taps`)
    in one buffer reused across chunks: fresh pages for every chunk cost more
    than the copies (2-D N=8, 16 ch, 128^2, k=3: forward 13 vs 6 ms)."""

    def __init__(self, read, shape, dtype, offsets, start: int, span: int, chunk: int,
                 arrays: Arrays):
        self.read, self.offsets, self.start, self.span = read, offsets, start, span
        self.arrays = arrays
        self.buffer = (None if len(offsets) == 1 else
                       arrays.empty((chunk,) + tuple(shape[1:3]) + (len(offsets), span), dtype))

    def __call__(self, n0: int, n1: int):
        """Samples ``n0:n1`` as ``(n, G, C * stacked, span)``: row ``(c, i)`` is
        ``src[..., c, start + offsets[i]:][:span]``; a view when nothing is stacked."""
        src, start, span = self.read(n0, n1), self.start, self.span
        if self.buffer is None:
            return src[..., start + self.offsets[0]:start + self.offsets[0] + span]
        out = self.buffer[:n1 - n0]
        for i, off in enumerate(self.offsets):
            self.arrays.copy_into(out[..., i, :], src[..., start + off:start + off + span])
        return self.arrays.reshape(out, tuple(out.shape[:2]) + (-1, span))


class _FlatArray:
    """A flat source ``(N, G, C, P)`` already in memory (``dtype``: its numpy dtype)."""

    def __init__(self, a, arrays: Arrays):
        self.a, self.shape, self.dtype = a, tuple(a.shape), arrays.numpy_dtype(a.dtype)

    def reader(self, chunk: int):
        """``read(n0, n1)``: samples ``n0:n1``."""
        return lambda n0, n1: self.a[n0:n1]


class _ShiftedDy:
    """``dy`` on the padded grid at flat offset ``M`` (:func:`_max_offset`), zeros
    elsewhere: a flat source ``(N, G, Og, M + prod(padded))`` that is never
    built whole: each batch chunk is embedded into one reused buffer."""

    def __init__(self, dy, geom: ConvGeometry, arrays: Arrays):
        g = geom.groups
        self.arrays = arrays
        self.dy = arrays.reshape(dy, (geom.batch, g, geom.out_channels // g) + geom.out_size)
        self.offset, self.strides = _max_offset(geom), _flat_strides(geom)
        self.shape = tuple(self.dy.shape[:3]) + (self.offset + prod(geom.padded_size),)
        self.dtype = arrays.numpy_dtype(dy.dtype)

    def reader(self, chunk: int):
        """``read(n0, n1)``: samples ``n0:n1`` embedded (zeros stay zero between chunks)."""
        arrays = self.arrays
        buffer = arrays.zeros((chunk,) + self.shape[1:], self.dtype)
        slots = _on_grid(buffer[..., self.offset:], self.dy.shape[3:], self.strides, arrays)

        def read(n0, n1):
            arrays.copy_into(slots[:n1 - n0], self.dy[n0:n1])
            return buffer[:n1 - n0]
        return read


def _looped_weights(w, taps: _Taps, arrays: Arrays):
    """``(G, O, C, *k)`` -> ``(looped, G, O, C * stacked)`` matching :class:`_Stacker` rows."""
    g, o, c = w.shape[:3]
    w = arrays.reshape(w, (g, o, c, prod(taps.looped_kernel), prod(taps.stacked_kernel)))
    return arrays.reshape(arrays.contiguous(arrays.permute(w, (3, 0, 1, 2, 4))),
                          (-1, g, o, c * w.shape[-1]))


def _on_grid(flat, size, strides, arrays: Arrays):
    """View the positions of a ``size`` box inside a flat ``(..., L)`` array."""
    return arrays.as_strided(flat, tuple(flat.shape[:-1]) + tuple(size),
                             arrays.strides(flat)[:-1] + tuple(strides))


def _correlate(src, w, taps: _Taps, start: int, out, strides, arrays: Arrays, rows=None):
    """``out[n, g, o, *i] = sum_{c, j} w[g, o, c, j] src[n, g, c, start + p(i) + off_j]``.

    ``src`` is a flat ``(N, G, C, P)`` source (:class:`_FlatArray`,
    :class:`_ShiftedDy`), ``w`` ``(G, O, C, *k)``, ``out``
    ``(N, G, O, *size)`` with ``p(i)`` the flat position of ``i``.  Runs over
    batch chunks, so that each chunk's operands stay in cache.

    With ``rows`` ``(N, G, R, P')``, also returns, for every looped tap ``i``,
    ``sum_n rows[n, :, :, start:][..., :L] @ S_i^T`` of shape ``(looped, G, R,
    C * stacked)``, ``S_i`` being the stacked operand's slice that tap ``i``
    multiplies: the weight gradient's GEMMs, which read the same operand.
    """
    n, g, c = src.shape[:3]
    wl = _looped_weights(w, taps, arrays)
    length = _flat_length(out.shape[3:], strides)
    span = length + taps.last_looped
    dtype = np.result_type(src.dtype, _dtype(arrays, w, *(() if rows is None else (rows,))))
    chunk = _chunk(n, _sample_bytes(g, c, wl.shape[2], taps, span, length, dtype.itemsize))
    stack = _Stacker(src.reader(chunk), src.shape, src.dtype, taps.stacked, start, span, chunk,
                     arrays)
    acc = arrays.empty((chunk, g, wl.shape[2], length), dtype)
    term = arrays.empty_like(acc)
    sums = (None if rows is None else
            arrays.zeros((len(taps.looped), g, rows.shape[2], c * len(taps.stacked)), dtype))
    transposed = (0, 1, 3, 2)  # S^T: the last two axes of a stacked slice swapped, a view
    for n0 in range(0, n, chunk):
        nc = min(chunk, n - n0)
        stacked = stack(n0, n0 + nc)
        for i, off in enumerate(taps.looped):
            s_i = stacked[..., off:off + length]
            product = arrays.matmul(wl[i], s_i, out=(term if i else acc)[:nc])
            if i:
                acc[:nc] += product
            if rows is not None and sums is not None:
                # rows @ S^T: BLAS streams the long rows as a row-major operand,
                # 2.5x faster than S @ rows^T (2-D N=8, 16 ch, 128^2: 5.7 vs 14.5 ms)
                sums[i] += arrays.sum(arrays.matmul(rows[n0:n0 + nc, ..., start:start + length],
                                                    arrays.permute(s_i, transposed)), (0,))
        arrays.copy_into(out[n0:n0 + nc], _on_grid(acc[:nc], out.shape[3:], strides, arrays))
    return sums


def _flat_input(xpad, geom: ConvGeometry, arrays: Arrays):
    """``(N, C, *padded)`` -> ``(N, groups, Cg, prod(padded))``, a view."""
    n, c = xpad.shape[:2]
    return arrays.reshape(xpad, (n, geom.groups, c // geom.groups, -1))


def _flat_forward(xpad, w, geom, arrays: Arrays):
    g = geom.groups
    wg = _grouped_kernel(_oriented(w, geom, arrays), g, arrays)
    y = arrays.empty((geom.batch, g, wg.shape[1]) + geom.out_size, _dtype(arrays, xpad, w))
    _correlate(_FlatArray(_flat_input(xpad, geom, arrays), arrays), wg,
               _taps(geom, wg.shape[2]), 0, y, _flat_strides(geom), arrays)
    return arrays.reshape(y, geom.y_shape)


def _max_offset(geom: ConvGeometry) -> int:
    """Flat offset of the last kernel tap."""
    return sum((k - 1) * d * st for k, d, st in
               zip(geom.kernel, geom.dilation, _flat_strides(geom)))


def _flat_backward(dy_big: "_ShiftedDy", xc, w, geom, arrays: Arrays):
    """``(dx, dw)`` from one stacked operand of the shifted ``dy`` per batch chunk
    (``dw`` is ``None`` when ``xc`` is: the input gradient alone).

    With ``S[o, j, t] = dy_big[o, q0 + t + off_j]`` (``q0`` the flat start of the
    input's slots, ``t`` running over them), and tap ``j`` of ``dy_big`` paired
    with tap ``k - 1 - j`` of the kernel:

    * ``dx[c, t] = sum_{o, j} conj(w[o, c, k - 1 - j]) S[o, j, t]`` (the
      correlation with the flipped, transposed, conjugated kernel);
    * ``dw[o, c, k - 1 - j] = sum_t conj(xpad)[c, q0 + t] S[o, j, t]``, over the
      same ``t`` because ``xpad`` is zero outside the input's slots.
    """
    g, strides = geom.groups, _flat_strides(geom)
    wg = _grouped_kernel(_oriented(w, geom, arrays), g, arrays)
    v = _flipped(arrays.conj(arrays.permute(wg, (0, 2, 1) + tuple(range(3, 3 + geom.ndim)))),
                 geom.ndim, arrays)
    taps = _taps(geom, wg.shape[1])
    q0 = sum(lo * st for (lo, _), st in zip(geom.padding, strides))
    dx = arrays.empty((geom.batch, g, wg.shape[2]) + geom.in_size,
                      np.result_type(dy_big.dtype, arrays.numpy_dtype(w.dtype)))
    rows = None if xc is None else _flat_input(xc, geom, arrays)
    sums = _correlate(dy_big, v, taps, q0, dx, strides, arrays, rows=rows)
    return (arrays.reshape(dx, geom.x_shape),
            None if sums is None else _weight_grad_layout(sums, taps, geom, arrays))


def _weight_grad_layout(dws, taps: _Taps, geom: ConvGeometry, arrays: Arrays):
    """``(looped, G, Cg, Og * stacked)`` sums, indexed by the flipped tap, ->
    ``dw`` of shape ``(C_out, Cg, *k)``."""
    nl, ns = len(taps.looped_kernel), len(taps.stacked_kernel)
    g, cg = dws.shape[1:3]
    dw = arrays.reshape(dws, taps.looped_kernel + (g, cg, -1) + taps.stacked_kernel)
    dw = arrays.permute(dw, (nl, nl + 2, nl + 1) + tuple(range(nl))
                        + tuple(range(nl + 3, nl + 3 + ns)))
    dw = arrays.reshape(_flipped(dw, geom.ndim, arrays), (geom.out_channels, cg) + geom.kernel)
    return arrays.contiguous(_oriented(dw, geom, arrays))


def flat_work(geom: ConvGeometry, itemsize: int) -> tuple:
    """``(elements, calls)`` of one flat-shift training step, for the cost model.

    Elements: copied into stacked operands, read by the GEMMs (their memory
    traffic bounds GEMMs with few output channels), accumulated and cropped
    out.  Calls, each with a fixed overhead: numpy calls per batch chunk (a
    copy per stacked tap; per looped tap a GEMM and a sum forward, two GEMMs
    and three sums backward) and the BLAS calls the batched GEMMs make (one per
    sample and group)."""
    strides, g, n = _flat_strides(geom), geom.groups, geom.batch
    c, o = geom.in_channels // g, geom.out_channels // g
    elements = calls = 0
    # (source channels, output channels, output box, GEMMs and numpy calls per
    # looped tap): the forward pass, and the backward pass (dx and dw GEMMs)
    for src, dst, size, gemms, per_tap in ((c, o, geom.out_size, 1, 2),
                                           (o, c, geom.in_size, 2, 5)):
        taps = _taps(geom, src)
        length = _flat_length(size, strides)
        span = length + taps.last_looped
        chunks = -(-n // _chunk(n, _sample_bytes(g, src, dst, taps, span, length, itemsize)))
        stacked = taps.n_stacked if taps.n_stacked > 1 else 0  # 1: a view, no copy
        depth = src * taps.n_stacked  # rows of the stacked operand each GEMM reads
        elements += n * g * (src * stacked * span
                             + (dst + gemms * depth) * length * taps.n_looped)
        calls += chunks * (stacked + per_tap * taps.n_looped)
        calls += gemms * taps.n_looped * n * g
    return elements, calls


# -- patches (any stride) ----------------------------------------------------------------
def _patch_forward(xpad, w, geom: ConvGeometry, arrays: Arrays):
    """``y`` of shape ``(N, C_out, *out)`` (no bias)."""
    g, n = geom.groups, geom.batch
    dtype = _dtype(arrays, xpad, w)
    xpad = _channels_first(xpad, g, arrays)
    wg = _grouped_kernel(_oriented(w, geom, arrays), g, arrays)
    rows = n * prod(geom.out_size)
    acc = arrays.zeros((g, wg.shape[1], rows), dtype)
    for j, window in _kernel_offsets(geom):
        patch = arrays.reshape(xpad[(Ellipsis,) + window], (g, -1, rows))
        acc += arrays.matmul(wg[(Ellipsis,) + j], patch)
    return _batch_first(arrays.reshape(acc, tuple(acc.shape[:2]) + (n,) + geom.out_size), arrays)


def _patch_input_grad(dy, w, geom: ConvGeometry, arrays: Arrays):
    """``dx``: scatter ``conj(w[:, :, j])^T @ dy`` back into each window (adjoint of ``forward``)."""
    g, n = geom.groups, geom.batch
    dyt = arrays.reshape(_channels_first(dy, g, arrays), (g, dy.shape[1] // g, -1))
    wg = _grouped_kernel(arrays.conj(_oriented(w, geom, arrays)), g, arrays)
    dxpad = arrays.zeros((g, geom.in_channels // g, n) + geom.padded_size, _dtype(arrays, dy, w))
    for j, window in _kernel_offsets(geom):
        contribution = arrays.matmul(arrays.permute(wg[(Ellipsis,) + j], (0, 2, 1)), dyt)
        dxpad[(Ellipsis,) + window] += arrays.reshape(
            contribution, tuple(contribution.shape[:2]) + (n,) + geom.out_size)
    return _batch_first(dxpad[(Ellipsis,) + geom.dx_crop], arrays)


def _patch_weight_grad(dy, xc, geom: ConvGeometry, arrays: Arrays):
    """``dw``: correlate ``dy`` with each window of ``xc = conj(xpad)``, summed over the batch."""
    g = geom.groups
    dtype = _dtype(arrays, dy, xc)
    xpad = _channels_first(xc, g, arrays)
    dyt = arrays.reshape(_channels_first(dy, g, arrays), (g, dy.shape[1] // g, -1))
    rows = dyt.shape[-1]
    dw = arrays.empty((g, dyt.shape[1], geom.in_channels // g) + geom.kernel, dtype)
    for j, window in _kernel_offsets(geom):
        patch = arrays.reshape(xpad[(Ellipsis,) + window], (g, -1, rows))
        arrays.copy_into(dw[(Ellipsis,) + j], arrays.matmul(dyt, arrays.permute(patch, (0, 2, 1))))
    dw = arrays.reshape(dw, (geom.out_channels,) + tuple(dw.shape[2:]))
    return arrays.contiguous(_oriented(dw, geom, arrays))


# -- the plugin: cost terms, partition, registry entry ---------------------------------------
def work(geom: ConvGeometry, dtype) -> Work:
    """Units of work of one training step: ``3 * 2 * N * C_out * Cg * prod(out) *
    prod(k)`` GEMM flops, the elements copied and accumulated (column matrices
    on one axis at stride 1, :func:`direct_1d.work`; stacked operands and
    per-tap sums for stride 1 on more axes, :func:`flat_work`; patch copies
    otherwise) and a fixed overhead per GEMM call."""
    p = costs.precision(dtype)
    taps, out = prod(geom.kernel), prod(geom.out_size)
    flops = 6 * geom.batch * geom.out_channels * (geom.in_channels // geom.groups) * out * taps
    flops *= 4 if np.dtype(dtype).kind == "c" else 1
    if direct_1d.applies(geom):
        elements, calls = direct_1d.work(geom, np.dtype(dtype).itemsize)
    elif _flat(geom):
        elements, calls = flat_work(geom, np.dtype(dtype).itemsize)
    else:  # patches: a copy in and an accumulation out per tap and pass
        elements = 3 * taps * geom.batch * (geom.in_channels + geom.out_channels) * out
        calls = 3 * taps
    return {"gemm_flop": flops * p, "direct_element": elements * p,
            "direct_offset": float(calls), "call": 3.0}


ALGORITHM = batch_chunked("direct", DirectEngine, work, workspace_bytes, "direct", spatial=True,
                          strided=True)
