"""The channel sums of a convolution layer, done per frequency as batched GEMMs.

At each of the ``F`` frequencies the layer is three small complex matrix
products (Mathieu, Henaff & LeCun 2013), per group ``g``:

===========  =================================================  ====================
product      per frequency                                       GEMM shapes
===========  =================================================  ====================
forward      ``Y[n, o]  = sum_c X[n, c] K[o, c]``                   ``(N x Cg)(Cg x Og)``
input grad   ``DX[n, c] = conj(sum_o conj(DY[n, o]) K[o, c])``      ``(N x Og)(Og x Cg)``
weight grad  ``DW[o, c] = sum_n conj(DY[n, o]) X[n, c]``            ``(Og x N)(N x Cg)``
===========  =================================================  ====================

with ``K = conj(FFT(conj w))`` (``conj(FFT(w))`` for real ``w``), so that
``IFFT(X K)`` is the cross-correlation of CONVENTIONS §1.  Only ``K`` is
kept; the input gradient conjugates its small per-frequency result instead of
keeping ``conj(K)`` too.

Layout (see ``transforms``): ``X`` and ``DY`` arrive batch-major
``(rows, cols, F)`` from the forward transforms; ``K`` is kept frequency-major
``(F, groups, Og, Cg)``, transposed once per weight update; ``Y`` and ``DX``
are written frequency-major ``(F, rows, cols)`` and ``DW`` batch-major
``(C_out, Cg, F)``, straight into the inverse transforms' buffers.  The products
walk the frequencies in blocks of about :data:`BLOCK_BYTES`: each block of ``X``/``DY`` is transposed to
``(Fb, groups, N, C)`` while it sits in cache and multiplied with one
``np.matmul`` (a batched BLAS GEMM over frequencies and groups).  The backward
pass does both gradient products in one walk, so ``DY`` is read once, and
reuses the frequency-major ``X`` the forward pass kept.

The blocks are independent, so ``threads`` splits them into contiguous shares
run at once (``runtime.run_shares``; numpy releases the GIL in the GEMMs and
copies) wherever the GEMMs are neither too small (:data:`PARALLEL_MIN_MACS`)
nor large (:data:`PARALLEL_MAX_MACS`).  The GEMMs are tiny (8x16 by 16x16 on
the bench case), so numpy's ``matmul`` runs at its per-GEMM call rate, about
25 GFLOP/s on one core of the reference VM.  How the thresholds were measured,
and the compiled kernels tried, are in ``docs/design-notes.md``.
"""
from __future__ import annotations

from typing import Optional

from . import compiled, runtime
from .backends import Arrays

#: Target working set of one frequency block.  Measured on the 2-D bench case
#: (N=8, 16->16 channels, 128x128, float32): forward+backward products took
#: 30 ms with 16 KiB blocks (Python overhead), 20 ms with 256 KiB, 18 ms with
#: 1 MiB; 256 KiB keeps a block well inside L2 on smaller caches.
BLOCK_BYTES = 1 << 18

#: Smallest per-frequency GEMM (complex multiply-adds) whose blocks run on
#: several threads.  Below it numpy makes one tiny BLAS call per frequency and
#: two threads contend for it: a training step of the 3-D perf cases (N=2,
#: 8->8 channels, 128 multiply-adds) took 0.97-1.43x as long (min) on two
#: threads, while the 1-D k1023 (1024) and 2-D 128x128 (2048) cases took
#: 0.83-1.05x (a plan step timed serial against shared, side by side; see
#: ``docs/design-notes.md``).
PARALLEL_MIN_MACS = 512
#: Largest per-frequency GEMM whose blocks run on several threads.  Measured on
#: 2-D layers, a plan step shared/serial, min and median:
#: 8192 multiply-adds 0.65/0.79, 32768 0.71/0.84, but 65536 1.08/1.34 and 131072
#: 1.02-1.11/1.18-1.22: a block then holds only a few frequencies of large
#: matrices, and two threads of them contend for the cache.  (OpenBLAS threads
#: a GEMM itself only from 262144, its ``GEMM_MULTITHREAD_THRESHOLD``.)
PARALLEL_MAX_MACS = 1 << 15


def _blocks(n_freq: int, bytes_per_frequency: int):
    step = max(8, BLOCK_BYTES // max(bytes_per_frequency, 1))
    return [slice(f, min(f + step, n_freq)) for f in range(0, n_freq, step)]


def _walk(a: Arrays, n_freq: int, bytes_per_frequency: int, body, threads: int,
          gemm_macs: Optional[int] = None) -> None:
    """``body(sl)`` for every frequency block, in up to ``threads`` shares at once,
    or on the calling thread when each frequency's GEMM (``gemm_macs``
    multiply-adds; ``None`` for a plain copy) is outside
    [:data:`PARALLEL_MIN_MACS`, :data:`PARALLEL_MAX_MACS`].  On a device every
    frequency is one block: one batched GEMM (cuBLAS) instead of many small
    launches."""
    if not a.host:  # one batched GEMM over every frequency: the device's own parallelism
        body(slice(0, n_freq))
        return
    if gemm_macs is not None and not PARALLEL_MIN_MACS <= gemm_macs <= PARALLEL_MAX_MACS:
        threads = 1
    runtime.run_shares(body, _blocks(n_freq, bytes_per_frequency), threads)


def _macs(n: int, k) -> int:
    """Complex multiply-adds of one frequency's GEMM, per group: ``N x Og x Cg``."""
    return n * k.shape[2] * k.shape[3]


def _itemsize(a: Arrays, spec) -> int:
    return a.numpy_dtype(spec.dtype).itemsize


def _frequency_major(a: Arrays, spec, sl: slice, groups: int, out=None,
                     conjugate: bool = False):
    """Block ``sl`` of ``(R, C, F)`` as a contiguous ``(Fb, groups, R, C // groups)``,
    conjugated if asked, in one pass, into ``out`` if given (a block of a kept
    spectrum: no second copy)."""
    r, c = spec.shape[:2]
    block = a.permute(a.reshape(spec[:, :, sl], (r, groups, c // groups, -1)), (3, 1, 0, 2))
    out = a.empty(block.shape, a.numpy_dtype(spec.dtype)) if out is None else out
    if conjugate:
        return a.conj(block, out=out)
    a.copy_into(out, block)
    return out


def _grouped(a: Arrays, out, groups: int):
    """View a frequency-major ``(F, R, C)`` as ``(F, groups, R, C // groups)``."""
    f, r, c = out.shape
    return a.permute(a.reshape(out, (f, r, groups, c // groups)), (0, 2, 1, 3))


def _transposed(a: Arrays, m):
    """The last two axes of ``m`` exchanged (a view)."""
    return a.permute(m, tuple(range(m.ndim - 2)) + (m.ndim - 1, m.ndim - 2))


def _bytes_per_frequency(n: int, k, itemsize: int) -> int:
    """Bytes one frequency of a gradient walk touches: ``X``/``DX`` twice, ``DY``, ``DW``."""
    groups, og, cg = k.shape[1:]
    return (2 * n * groups * cg + n * groups * og + groups * og * cg) * itemsize


def kernel_spectrum(a: Arrays, conj_k_spec, groups: int, threads: int = 1):
    """``K = conj(FFT(conj w))`` frequency-major ``(F, groups, Og, Cg)``, from the
    batch-major spectrum of ``conj w`` ``(C_out, Cg, F)``, in one pass."""
    c_out, cg, f = conj_k_spec.shape
    k = a.empty((f, groups, c_out // groups, cg), a.numpy_dtype(conj_k_spec.dtype))
    src = a.permute(a.reshape(conj_k_spec, (groups, c_out // groups, cg, f)), (3, 0, 1, 2))
    _walk(a, f, 2 * c_out * cg * _itemsize(a, k), lambda sl: a.conj(src[sl, ...], out=k[sl, ...]),
          threads)
    return k


def forward_product(a: Arrays, x_spec, k, groups, out, x_keep=None, threads=1):
    """``out (F, N, C_out)``: ``Y = X K^T`` per frequency and group.

    ``x_keep``, if given, receives ``X`` frequency-major ``(F, groups, N, Cg)``
    for :func:`backward_products`, which then need not transpose it again.
    """
    n, c, f = x_spec.shape
    out_g = _grouped(a, out, groups)

    def block(sl):
        xb = _frequency_major(a, x_spec, sl, groups, out=None if x_keep is None else x_keep[sl, ...])
        a.matmul(xb, _transposed(a, k[sl, ...]), out=out_g[sl, ...])

    _walk(a, f, (n * c + out.shape[1] * out.shape[2]) * _itemsize(a, x_spec), block, threads,
          _macs(n, k))
    return out


def _weight_product(a: Arrays, conj_dy, xb, dw_g, sl) -> None:
    """``dw_g[..., sl] = conj(DY)^T X`` of one block, batch-major ``(G, Og, Cg, Fb)``."""
    a.copy_into(dw_g[..., sl], a.permute(a.matmul(_transposed(a, conj_dy), xb), (1, 2, 3, 0)))


def backward_products(a: Arrays, x_spec, dy_spec, k, groups, dx_out=None, dw_out=None,
                      dy_keep=None, threads=1):
    """Both gradient products in one walk over the frequencies; either may be skipped.

    ``x_spec`` is ``X`` batch-major ``(N, C_in, F)`` or, as kept by
    :func:`forward_product`, frequency-major ``(F, groups, N, Cg)``.
    ``dx_out (F, N, C_in)`` gets ``DX``; ``dw_out (C_out, Cg, F)`` gets ``DW``,
    summed over the batch (skipped when ``dw_out`` or ``x_spec`` is ``None``).
    ``dy_keep``, if given, receives ``conj(DY)`` frequency-major ``(F, groups,
    N, Og)`` for :func:`transposed_products`.
    """
    n, c_out, f = dy_spec.shape
    dx_g = None if dx_out is None else _grouped(a, dx_out, groups)
    dw_g = (None if dw_out is None or x_spec is None
            else a.reshape(dw_out, (groups, c_out // groups, dw_out.shape[1], f)))

    def block(sl):
        conj_dy = _frequency_major(a, dy_spec, sl, groups, conjugate=True,
                                   out=None if dy_keep is None else dy_keep[sl, ...])
        if dx_g is not None:
            dx = a.matmul(conj_dy, k[sl, ...], out=dx_g[sl, ...])
            a.conj(dx, out=dx)
        if dw_g is not None:
            xb = x_spec[sl, ...] if x_spec.ndim == 4 else _frequency_major(a, x_spec, sl, groups)
            _weight_product(a, conj_dy, xb, dw_g, sl)

    _walk(a, f, _bytes_per_frequency(n, k, _itemsize(a, dy_spec)), block, threads, _macs(n, k))
    return dx_out, dw_out


def transposed_products(a: Arrays, x_spec, dy_spec, k, groups, y_out=None, dw_out=None,
                        threads=1):
    """The forward product and the weight-gradient product from one ``X``.

    A transposed layer's backward pass: its input gradient is the forward
    product ``Y = X K^T`` of its output gradient ``X``, and its weight
    gradient ``DW = conj(DY)^T X`` pairs ``X`` with its input, here in the
    role of ``DY``: either the ``conj(DY)`` kept frequency-major ``(F,
    groups, N, Og)`` by :func:`backward_products`, or ``DY`` batch-major
    ``(N, C_out, F)``.  ``y_out (F, N, C_out)``, ``dw_out (C_out, Cg, F)``;
    either may be ``None``.
    """
    n, c, f = x_spec.shape
    y_g = None if y_out is None else _grouped(a, y_out, groups)
    c_out = k.shape[1] * k.shape[2]
    dw_g = (None if dw_out is None
            else a.reshape(dw_out, (groups, c_out // groups, c // groups, f)))

    def block(sl):
        xb = _frequency_major(a, x_spec, sl, groups)
        if y_g is not None:
            a.matmul(xb, _transposed(a, k[sl, ...]), out=y_g[sl, ...])
        if dw_g is not None:
            if dy_spec.ndim == 4:
                conj_dy = dy_spec[sl, ...]
            else:
                conj_dy = _frequency_major(a, dy_spec, sl, groups, conjugate=True)
            _weight_product(a, conj_dy, xb, dw_g, sl)

    _walk(a, f, _bytes_per_frequency(n, k, _itemsize(a, x_spec)), block, threads, _macs(n, k))
    return y_out, dw_out


# -- the two ways to run the products -------------------------------------------------------
class GemmProducts:
    """The products as batched GEMMs per frequency and group (any grouping): ``K``
    frequency-major ``(F, groups, Og, Cg)``, ``Y`` and ``DX`` written frequency-major."""

    #: The layout ``Y`` and ``DX`` are written in (``DW`` is always batch-major).
    frequency_major = True

    def __init__(self, groups: int, arrays: Arrays):
        self.groups, self.arrays = groups, arrays

    def kernel(self, conj_k_spec, threads: int = 1):
        return kernel_spectrum(self.arrays, conj_k_spec, self.groups, threads)

    def kept_shape(self, n_freq: int, rows: int, channels: int) -> tuple:
        """Shape of the ``X`` a forward pass keeps (frequency-major)."""
        return (n_freq, self.groups, rows, channels // self.groups)

    def forward(self, x_spec, k, out, x_keep=None, threads=1):
        return forward_product(self.arrays, x_spec, k, self.groups, out, x_keep, threads)

    def backward(self, x_spec, dy_spec, k, dx_out=None, dw_out=None, dy_keep=None, threads=1):
        return backward_products(self.arrays, x_spec, dy_spec, k, self.groups, dx_out, dw_out,
                                 dy_keep, threads)

    def transposed(self, x_spec, dy_spec, k, y_out=None, dw_out=None, threads=1):
        return transposed_products(self.arrays, x_spec, dy_spec, k, self.groups, y_out, dw_out,
                                   threads)


class ElementwiseProducts:
    """The products of a layer with one input channel per group (depthwise,
    ``groups == C_in``, any channel multiplier ``Og``): per frequency every
    product is elementwise, ``Y[n, g, o] = X[n, g] K[g, o]``, so everything stays
    batch-major ``(rows, channels, F)`` as the transforms leave it: no GEMMs and
    no transposes.  ``K`` is ``(C_out, F)``; a kept ``DY`` is ``DY`` itself.  The
    groups are split into ``threads`` contiguous shares run at once; each share
    streams whole rows."""

    frequency_major = False

    def __init__(self, groups: int, arrays: Arrays):
        self.groups, self.arrays = groups, arrays

    def kernel(self, conj_k_spec, threads: int = 1):
        """``K = conj(FFT(conj w))`` as ``(C_out, F)`` from ``(C_out, 1, F)``."""
        return self.arrays.conj(conj_k_spec[:, 0, :])

    @staticmethod
    def kept_shape(n_freq: int, rows: int, channels: int) -> tuple:
        return (rows, channels, n_freq)

    def _split(self, k, *operands):
        """``K`` as ``(G, Og, F)``, and ``(N, C_out, F)`` arrays as ``(N, G, Og, F)``."""
        og = k.shape[0] // self.groups
        reshape = self.arrays.reshape
        return (reshape(k, (self.groups, og, -1)),) + tuple(
            None if a is None else reshape(a, (a.shape[0], self.groups, og, a.shape[-1]))
            for a in operands)

    def _walk(self, body, threads: int) -> None:
        """``body(gs)`` for contiguous slices ``gs`` of the groups, ``threads`` at once
        (one on a device)."""
        threads = max(threads, 1) if self.arrays.host else 1
        step = -(-self.groups // threads)
        runtime.run_shares(body, [slice(g, min(g + step, self.groups))
                                  for g in range(0, self.groups, step)], threads)

    def _weight_grad(self, dy_g, x_spec, gs: slice, dw_g) -> None:
        """``dw_g[gs] = sum_n conj(DY[n, gs]) X[n, gs]``, one sample at a time (no
        temporary of the batch's size)."""
        a = self.arrays
        tmp = a.empty(dw_g[gs, 0, ...].shape, a.numpy_dtype(dw_g.dtype))
        for o in range(dw_g.shape[1]):
            acc = dw_g[gs, o, ...]
            a.conj(dy_g[0, gs, o, ...], out=acc)
            acc *= x_spec[0, gs, ...]
            for n in range(1, x_spec.shape[0]):
                a.conj(dy_g[n, gs, o, ...], out=tmp)
                tmp *= x_spec[n, gs, ...]
                acc += tmp

    def forward(self, x_spec, k, out, x_keep=None, threads=1):
        kg, out_g = self._split(k, out)
        a = self.arrays

        def block(gs):
            a.multiply(x_spec[:, gs, None, ...], kg[gs, ...], out=out_g[:, gs, ...])
            if x_keep is not None:
                a.copy_into(x_keep[:, gs, ...], x_spec[:, gs, ...])

        self._walk(block, threads)
        return out

    def backward(self, x_spec, dy_spec, k, dx_out=None, dw_out=None, dy_keep=None, threads=1):
        """``DX = sum_o DY conj(K)``, ``DW = sum_n conj(DY) X`` (``dw_out`` ``(C_out, 1, F)``)."""
        kg, dy_g, keep_g = self._split(k, dy_spec, dy_keep)
        a = self.arrays
        dw_g = None if dw_out is None or x_spec is None else a.reshape(dw_out, kg.shape)

        def block(gs):
            if keep_g is not None:
                a.copy_into(keep_g[:, gs, ...], dy_g[:, gs, ...])
            if dx_out is not None:
                conj_k = a.conj(kg[gs, ...])
                dx = dx_out[:, gs, ...]
                a.multiply(dy_g[:, gs, 0, ...], conj_k[:, 0, ...], out=dx)
                for o in range(1, conj_k.shape[1]):
                    dx += dy_g[:, gs, o, ...] * conj_k[:, o, ...]
            if dw_g is not None:
                self._weight_grad(dy_g, x_spec, gs, dw_g)

        self._walk(block, threads)
        return dx_out, dw_out

    def transposed(self, x_spec, dy_spec, k, y_out=None, dw_out=None, threads=1):
        """``Y = X K`` and ``DW = sum_n conj(DY) X`` from one ``X``; ``dy_spec`` is
        ``DY`` (kept or transformed) ``(N, C_out, F)``."""
        kg, y_g, dy_g = self._split(k, y_out, dy_spec)
        a = self.arrays
        dw_g = None if dw_out is None else a.reshape(dw_out, kg.shape)

        def block(gs):
            if y_g is not None:
                a.multiply(x_spec[:, gs, None, ...], kg[gs, ...], out=y_g[:, gs, ...])
            if dw_g is not None:
                self._weight_grad(dy_g, x_spec, gs, dw_g)

        self._walk(block, threads)
        return y_out, dw_out


#: Fewest frequencies for the compiled products: their kernel spectrum is padded
#: to whole tasks of ``compiled.TASK_LANES`` frequencies per group, under 12.5%
#: more from this size on.
COMPILED_MIN_FREQUENCIES = 8 * compiled.TASK_LANES
#: The compiled micro-kernel keeps the slice of ``K`` of four output channels
#: and one sub-block of frequencies (``4 * channels * 2 * LANES`` floats) in L1
#: while it walks the rows.  Past this many bytes, with
#: :data:`COMPILED_MAX_SPILL_ROWS` rows or more, the batched GEMMs win.
#: Measured on the 2-core Xeon (48 KiB L1d), forward and backward products,
#: compiled/GEMM: float64 N32 64->64 F684 (64 KiB slice) 1.53, N64 1.68,
#: float32 N32 128->128 (64 KiB) 1.27; but float64 N16 64->64 0.80, N8
#: 128->128 0.74, and every slice up to 48 KiB 0.31-0.95.
COMPILED_L1_BYTES = 48 << 10
COMPILED_MAX_SPILL_ROWS = 32


def product_kind(groups: int, in_channels: int, n_freq: int, use_compiled: bool,
                 arrays: Optional[Arrays] = None, rows: int = 0,
                 out_channels: Optional[int] = None, itemsize: int = 4) -> str:
    """Which products a layer runs: ``"elementwise"`` for one input channel per
    group; else, with ``use_compiled`` (the setting), numba installed, arrays its
    kernels read (numpy; any host array when ``arrays`` is ``None``, as the cost
    model asks), at least :data:`COMPILED_MIN_FREQUENCIES` frequencies and no
    kernel slice past L1 over many rows (:data:`COMPILED_L1_BYTES`; ``rows`` per
    pass, ``itemsize`` of the real dtype), ``"compiled"``; else ``"gemm"``."""
    if in_channels == groups:
        return "elementwise"
    widest = max(in_channels, in_channels if out_channels is None else out_channels) // groups
    spills = (4 * widest * 2 * compiled.LANES * itemsize > COMPILED_L1_BYTES
              and rows >= COMPILED_MAX_SPILL_ROWS)
    if (use_compiled and compiled.AVAILABLE and (arrays is None or arrays.compiled)
            and n_freq >= COMPILED_MIN_FREQUENCIES and not spills):
        return "compiled"
    return "gemm"


def products_for(groups: int, in_channels: int, arrays: Arrays, n_freq: int = 0,
                 use_compiled: bool = False, rows: int = 0,
                 out_channels: Optional[int] = None, itemsize: int = 4):
    """The products of a layer on ``arrays`` (:func:`product_kind`):
    :class:`ElementwiseProducts`, the compiled products (``fftconv.compiled``) or
    :class:`GemmProducts`."""
    kind = product_kind(groups, in_channels, n_freq, use_compiled, arrays, rows, out_channels,
                        itemsize)
    if kind == "elementwise":
        return ElementwiseProducts(groups, arrays)
    if kind == "compiled":
        return compiled.CompiledProducts(groups, arrays)
    return GemmProducts(groups, arrays)


#: The unit of :data:`fftconv.costs.RATES` that prices one complex multiply-add of
#: each kind of products.
MAC_UNITS = {"gemm": "spectrum_mac", "compiled": "compiled_mac",
             "elementwise": "elementwise_mac"}


def product_work(batch: int, in_channels: int, out_channels: int, groups: int,
                 n_freq: int, use_compiled: bool, itemsize: int = 4) -> dict:
    """Units of the three products of one training step (forward, input and weight
    gradients): ``3 * F * N * C_out * Cg`` complex multiply-adds, priced by the
    kind of products that runs them (:data:`MAC_UNITS`), since a multiply-add
    costs very differently in a tiny per-frequency GEMM, a compiled tuple GEMM
    and a streaming elementwise product; the GEMMs also move every spectrum
    through their block transposes (``spectrum_element``)."""
    kind = product_kind(groups, in_channels, n_freq, use_compiled, rows=batch,
                        out_channels=out_channels, itemsize=itemsize)
    units = {MAC_UNITS[kind]: 3.0 * n_freq * batch * out_channels * (in_channels // groups)}
    if kind == "gemm":
        rows = 3 * batch * (in_channels + out_channels) + 2 * out_channels * (in_channels // groups)
        units["spectrum_element"] = float(n_freq * rows)
    return units
