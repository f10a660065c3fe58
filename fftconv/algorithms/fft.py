"""The FFT algorithm for one layer geometry: transforms + frequency-domain sums.

An :class:`FFTEngine` owns the six batched transforms of one training step,
three forward ones (``x``, ``w``, ``dy``) and three inverse ones (``y``,
``dx``, ``dw``), and composes them with the channel contraction like scipy's
``_freq_domain_conv``.  The forward pass and both gradients are the same
machinery with roles exchanged (CONVENTIONS §3):

* ``y  = crop_y (IFFT(X K))``            with ``K = conj(FFT(conj w))``,
* ``dx = crop_x (IFFT(DY conj(K)))``     (a convolution with the flipped weights),
* ``dw = crop_w (IFFT(X conj(DY)))``     (the input correlated with ``dy``),

where ``FFT(dy)`` is the transform of the zero-upsampled ``dy`` (stride) and
``FFT(w)`` that of the zero-dilated kernel (dilation).  Neither is built with
zeros: ``dy`` and ``w`` are transformed on their coarse grids and their
spectra tiled, and ``y`` and ``dw`` are folded onto the coarse grids before
their (smaller) inverse transforms (``resampling``, ``geometry``).

Memory: the batch is processed ``chunk`` samples at a time.  With one chunk
(the default) a forward pass that keeps (``keep=True``) returns a new
frequency-major spectrum of ``x`` (a :class:`~fftconv.protocol.Saved` owned by
the caller, a pullback), which the backward pass reuses; with several, it
returns a copy of ``x`` and the backward pass transforms it again, chunk by
chunk, summing the weight-gradient spectra over chunks before its single
inverse transform.  A transposed layer keeps ``conj(DY)`` the same way.
Transforms are built lazily, so a forward-only user never allocates gradient
buffers.
"""
from __future__ import annotations

import dataclasses
import math
import threading
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np

from .. import budget, config, contraction, costs, resampling
from ..backends import Arrays
from ..config import Settings
from ..costs import Work
from ..geometry import ConvGeometry
from ..protocol import Algorithm, Engine, GroupShares, Partition, Saved
from ..transforms import (COMPLEX_OF, ForwardTransform, InverseTransform, PrunedForward,
                          PrunedInverse, prunable, prunable_forward, pruned_extent,
                          signal_bytes, spectrum_bytes)

def buffer_list(geom: ConvGeometry, chunk: int) -> list:
    """``(name, rows, grid, has_signal)`` for every buffer of an engine.

    Six transforms own a signal and a spectrum buffer each.  Spectrum-only
    arrays: the kept frequency-major ``K``; the kept frequency-major ``X`` of
    one outstanding pullback (unchunked only); the tiled ``w`` spectrum (with
    dilation); the tiled ``dy`` spectrum and unfolded ``y`` product (with
    stride); the unfolded or chunk-summed ``dw`` product.
    """
    full, by_stride, by_dilation = geom.fft_shape, geom.stride_fft_shape, geom.dilation_fft_shape
    weights = geom.out_channels * (geom.in_channels // geom.groups)
    x_rows, y_rows = chunk * geom.in_channels, chunk * geom.out_channels
    strided, dilated = by_stride != full, by_dilation != full
    buffers = [("x", x_rows, full, True), ("dx", x_rows, full, True),
               ("dy", y_rows, by_stride, True), ("y", y_rows, by_stride, True),
               ("w", weights, by_dilation, True), ("dw", weights, by_dilation, True),
               ("k", weights, full, False)]
    buffers += [("x kept", x_rows, full, False)] if chunk >= geom.batch else []
    buffers += [("w tiled", weights, full, False)] if dilated else []
    buffers += [("dy tiled", y_rows, full, False), ("y", y_rows, full, False)] if strided else []
    buffers += [("dw", weights, full, False)] if dilated or chunk < geom.batch else []
    return buffers


def workspace_bytes(geom: ConvGeometry, dtype, chunk: int) -> int:
    """Bytes of all buffers of an engine that processes ``chunk`` samples at a time."""
    return sum(spectrum_bytes(rows, grid, dtype) + (signal_bytes(rows, grid, dtype) if sig else 0)
               for _, rows, grid, sig in buffer_list(geom, chunk))


class Passes:
    """The spectral passes of one geometry: its six batched transforms and their
    buffers, and the forward, backward and transposed pass of one *piece* (a
    chunk of the batch for :class:`FFTEngine`, a pass of tiles for
    ``overlap_add``), the weight gradient summed over the pieces.

    Not re-entrant: the spectra it returns live in its own buffers.
    """

    def __init__(self, geom: ConvGeometry, dtype, settings: Settings, rows: int,
                 arrays: Arrays):
        self.geom = geom
        self.dtype = np.dtype(dtype)
        self.settings = settings
        self.rows = rows
        self.arrays = arrays
        #: The channel products: GEMMs per frequency, compiled kernels, or elementwise
        #: (depthwise).
        self.products = contraction.products_for(
            geom.groups, geom.in_channels, arrays, geom.spectrum_size, settings.compiled,
            rows=rows, out_channels=geom.out_channels, itemsize=np.finfo(self.dtype).bits // 8)
        self._transforms: Dict[str, Union[ForwardTransform, InverseTransform]] = {}
        self._unfolded: Dict[str, Any] = {}
        self._direct: Dict[str, Any] = {}
        # Derived geometry, computed once: every pass reads these (the geometry's
        # properties recompute them on each access).
        self.fft_shape = geom.fft_shape
        self.spectrum_shape = geom.spectrum_shape
        self.placements = {"x": geom.x_placement, "w": geom.w_placement,
                           "dy": geom.dy_placement}
        self.crops = {"y": geom.y_crop, "dx": geom.dx_crop, "dw": geom.dw_crop}
        weight_rows = (geom.out_channels, geom.in_channels // geom.groups)
        self._layouts = {"x": ((rows, geom.in_channels), geom.fft_shape),
                         "dx": ((rows, geom.in_channels), geom.fft_shape),
                         "dy": ((rows, geom.out_channels), geom.stride_fft_shape),
                         "y": ((rows, geom.out_channels), geom.stride_fft_shape),
                         "w": (weight_rows, geom.dilation_fft_shape),
                         "dw": (weight_rows, geom.dilation_fft_shape)}

    def _transform(self, name: str) -> Any:
        """The transform for operand ``name``, built on first use."""
        if name not in self._transforms:
            batch_shape, grid = self._layouts[name]
            if name == "dw" and prunable(batch_shape, grid, self.crops["dw"], self.dtype,
                                         self.settings, self.arrays):
                self._transforms[name] = PrunedInverse(batch_shape, grid, self.dtype,
                                                       self.settings, self.arrays,
                                                       self.crops["dw"])
            elif name in ("y", "dx", "dw"):  # dw batch-major: see transforms' docstring
                major = name != "dw" and self.products.frequency_major
                self._transforms[name] = InverseTransform(batch_shape, grid, self.dtype,
                                                          self.settings, self.arrays,
                                                          frequency_major=major)
            elif name == "w" and prunable_forward(batch_shape, grid, self.placements["w"],
                                                  self.dtype, self.settings, self.arrays):
                self._transforms[name] = PrunedForward(batch_shape, grid, self.dtype,
                                                       self.settings, self.arrays,
                                                       self.placements["w"])
            else:
                self._transforms[name] = ForwardTransform(batch_shape, grid, self.dtype,
                                                          self.settings, self.arrays)
        return self._transforms[name]

    @property
    def transform_counts(self) -> dict:
        """Batched transforms executed so far: ``{"forward": int, "inverse": int}``."""
        counts = {"forward": 0, "inverse": 0}
        for t in self._transforms.values():
            counts["inverse" if isinstance(t, InverseTransform) else "forward"] += t.calls
        return counts

    def _spectrum(self, name: str, operand):
        """Transform ``operand`` on its grid; the spectrum tiled to the full grid,
        batch-major ``(rows, cols, F)``."""
        transform = self._transform(name)
        spec = transform(operand, self.placements[name])
        if transform.fft_shape != self.fft_shape:
            spec = resampling.tile(self.arrays, spec, transform.fft_shape, self.fft_shape,
                                   transform.real, axis0=2)
        return self.arrays.reshape(spec, spec.shape[:2] + (-1,))

    def _product_buffer(self, name: str, scratch: bool = False):
        """Where a full-grid product for inverse transform ``name`` goes: straight
        into its spectrum buffer, or into a scratch array when it must be folded
        (coarse grid) or summed over chunks (``scratch=True``) first."""
        transform = self._transform(name)
        if transform.fft_shape == self.fft_shape and not scratch:
            if name not in self._direct:  # a view of a persistent buffer: made once
                self._direct[name] = self._flat(transform, transform.spectrum)
            return self._direct[name]
        if name not in self._unfolded:
            self._unfolded[name] = self._flat(transform, self.arrays.empty(
                self._spectrum_shape(transform, self.spectrum_shape),
                COMPLEX_OF[self.dtype]))
        return self._unfolded[name]

    @staticmethod
    def _spectrum_shape(transform, freq_shape) -> tuple:
        freq_shape = tuple(freq_shape)
        return (freq_shape + transform.batch_shape if transform.frequency_major
                else transform.batch_shape + freq_shape)

    def _flat(self, transform, spec):
        """``(F, rows, cols)`` if frequency-major, else ``(rows, cols, F)``."""
        return self.arrays.reshape(spec, (-1,) + transform.batch_shape if transform.frequency_major
                                   else transform.batch_shape + (-1,))

    def _deliver(self, name: str, product, accumulate: bool = False):
        """Put ``product`` (from :meth:`_product_buffer`) into the spectrum buffer of
        inverse transform ``name``, folded onto its grid, replacing or adding."""
        if product is not self._unfolded.get(name):
            return  # already there
        transform = self._transform(name)
        full = self.arrays.reshape(product, self._spectrum_shape(transform, self.spectrum_shape))
        folded = resampling.fold(self.arrays, full, self.fft_shape, transform.fft_shape,
                                 transform.real, axis0=0 if transform.frequency_major else 2)
        if accumulate:
            transform.spectrum += folded
        else:
            self.arrays.copy_into(transform.spectrum, folded)

    # -- spectra of the operands ---------------------------------------------------------
    def x_spectrum(self, x_rows):
        """``X`` of up to ``chunk`` samples, ``(chunk, C_in, F)``."""
        return self._spectrum("x", x_rows)

    def _spatial_axes(self, a) -> tuple:
        return tuple(range(a.ndim - self.geom.ndim, a.ndim))

    def weight_spectrum(self, w):
        """``K`` of the (flipped, dilated) kernel, in :attr:`products`' layout."""
        if self.geom.flip_kernel:
            w = self.arrays.flip(w, self._spatial_axes(w))
        conj_k = self._spectrum("w", self.arrays.conj(w) if self.dtype.kind == "c" else w)
        return self.products.kernel(conj_k, self.settings.threads)

    def dy_spectrum(self, dy_rows):
        """``DY`` of the zero-upsampled ``dy`` of up to ``chunk`` samples."""
        return self._spectrum("dy", dy_rows)

    def new_kept_spectrum(self, channels: int):
        """A new spectrum of ``channels`` channels for a forward pass to keep, in
        :attr:`products`' layout."""
        shape = self.products.kept_shape(self.geom.spectrum_size, self.rows, channels)
        return self.arrays.empty(shape, COMPLEX_OF[self.dtype])

    # -- one piece --------------------------------------------------------------------
    def forward_piece(self, x_piece, k, out, x_keep=None):
        """``out`` = ``y`` (no bias) of ``x_piece`` (up to ``chunk`` samples); ``x_keep``
        receives ``X`` (:meth:`new_kept_spectrum`)."""
        product = self._product_buffer("y")
        self.products.forward(self.x_spectrum(x_piece), k, out=product, x_keep=x_keep,
                              threads=self.settings.threads)
        self._deliver("y", product)
        self._transform("y")(self.crops["y"], rows=out.shape[0], out=out)

    def backward_piece(self, dy_piece, k, out=None, x_piece=None, x_spec=None,
                       accumulate: bool = False, dy_keep=None):
        """``out`` = ``dx`` of one piece (skipped if ``None``); with ``x_piece`` (to
        transform) or a kept ``x_spec``, its weight-gradient spectrum replaces (or,
        with ``accumulate``, adds to) the one :meth:`weight_grad` inverts.
        ``dy_keep`` receives what :meth:`transposed_piece` reads of ``DY``."""
        xs = x_spec if x_spec is not None else (
            None if x_piece is None else self.x_spectrum(x_piece))
        dw_product = None if xs is None else self._product_buffer("dw", scratch=accumulate)
        self.products.backward(xs, self.dy_spectrum(dy_piece), k,
                               dx_out=None if out is None else self._product_buffer("dx"),
                               dw_out=dw_product, dy_keep=dy_keep, threads=self.settings.threads)
        if out is not None:
            self._transform("dx")(self.crops["dx"], rows=out.shape[0], out=out)
        if dw_product is not None:
            self._deliver("dw", dw_product, accumulate=accumulate)

    def transposed_piece(self, x_piece, k, out=None, dy_piece=None, dy_spec=None,
                         accumulate: bool = False):
        """``out`` = ``y`` of one piece (skipped if ``None``) and, with ``dy_piece`` or
        a kept ``dy_spec`` (``dy_keep`` of :meth:`backward_piece`), the
        weight-gradient spectrum of ``x_piece`` against it, from one transform of
        ``x_piece``."""
        ds = dy_spec if dy_spec is not None else (
            None if dy_piece is None else self.dy_spectrum(dy_piece))
        y_product = None if out is None else self._product_buffer("y")
        dw_product = None if ds is None else self._product_buffer("dw", scratch=accumulate)
        self.products.transposed(self.x_spectrum(x_piece), ds, k, y_out=y_product,
                                 dw_out=dw_product, threads=self.settings.threads)
        if out is not None and y_product is not None:
            self._deliver("y", y_product)
            self._transform("y")(self.crops["y"], rows=out.shape[0], out=out)
        if dw_product is not None:
            self._deliver("dw", dw_product, accumulate=accumulate)

    def weight_grad(self):
        """``dw`` from the weight-gradient spectrum summed over the pieces so far."""
        a = self.arrays
        dw = self._transform("dw")(self.crops["dw"])
        if self.dtype.kind == "c":
            a.conj(dw, out=dw)
        if self.geom.flip_kernel:
            dw = a.contiguous(a.flip(dw, self._spatial_axes(dw)))
        return dw


class SpectralEngine:
    """What the engines that run :class:`Passes` share: their weight state is the
    kernel's spectrum, a saved operand is the signal itself (unless a forward pass
    keeps its spectrum), and their transforms are the passes'."""

    passes: Passes

    @property
    def transform_counts(self) -> Dict[str, int]:
        return self.passes.transform_counts

    def weights(self, w):
        return self.passes.weight_spectrum(w)

    @staticmethod
    def save_input(x) -> Saved:
        return Saved("signal", x)

    save_output = save_input


class TiledEngine(SpectralEngine):
    """What the engines that cut the output into tiles and run the tiles' windows
    through one :class:`Passes` share (overlap-add, small FFT tiles): the FFT size
    of a window, the kept spectrum, and the input gradient as a backward pass."""

    geom: ConvGeometry
    tile_geom: ConvGeometry
    dtype: np.dtype
    arrays: Arrays
    #: Every tile runs in one pass, so a forward pass can keep their spectrum.
    single_pass: bool

    @property
    def fft_shape(self) -> tuple:
        """FFT size of one tile's window."""
        return self.tile_geom.fft_shape

    @property
    def kept_bytes(self) -> int:
        """Bytes a forward pass keeps beyond the workspace: none in one pass (the kept
        spectrum is one of the pass engine's buffers), else a copy of its input."""
        return 0 if self.single_pass else math.prod(self.geom.x_shape) * self.dtype.itemsize

    def new_kept(self, keep: bool):
        """The buffer a forward pass keeps the windows' spectrum in, where it can."""
        return (self.passes.new_kept_spectrum(self.geom.in_channels)
                if keep and self.single_pass else None)

    def forward_result(self, x, y, kept, keep: bool) -> tuple:
        """``(y, saved)``: the kept spectrum where one pass held it, else ``x`` copied."""
        if not keep:
            return y, None
        if kept is not None:
            return y, Saved("spectrum", kept)
        return y, Saved("signal", self.arrays.copy(x))

    def input_grad(self, dy, k, keep=False, out=None) -> tuple:
        dx, _ = self.backward(dy, None, k, need_dw=False, out=out)
        return dx, Saved("signal", self.arrays.copy(dy)) if keep else None

    def backward(self, dy, saved_x, k, need_dx=True, need_dw=True, out=None) -> tuple:
        """The input and weight gradients: each tiled engine has its own."""
        raise NotImplementedError


class FFTEngine(SpectralEngine):
    """The FFT algorithm behind the engine protocol (``fftconv.protocol``): the
    batch in chunks of ``chunk`` samples, each run by :class:`Passes`.

    Not re-entrant: the spectra it returns live in its buffers.  Callers that
    share an engine between threads hold :attr:`lock` for the whole call.
    """

    def __init__(self, geom: ConvGeometry, dtype, settings: Settings, arrays: Arrays,
                 chunk: Optional[int] = None):
        self.geom = geom
        self.dtype = np.dtype(dtype)
        self.settings = settings
        self.arrays = arrays
        self.chunk = min(chunk or geom.batch, geom.batch)
        self.lock = threading.Lock()
        #: The output tile when overlap-add runs a single tile on this engine.
        self.tile: Optional[Tuple[int, ...]] = None
        self.passes = Passes(geom, self.dtype, settings, self.chunk, arrays)
        self._chunks = tuple(slice(i, i + self.chunk)
                             for i in range(0, geom.batch, max(self.chunk, 1)))
        self._workspace = workspace_bytes(geom, self.dtype, self.chunk)
        self._x_shape, self._y_shape = geom.x_shape, geom.y_shape

    @property
    def chunked(self) -> bool:
        return self.chunk < self.geom.batch

    @property
    def keeps_x_spectrum(self) -> bool:
        """Whether :meth:`forward` returns ``X`` for :meth:`backward` (one chunk only)."""
        return not self.chunked

    def chunks(self):
        """Row slices of the batch, ``chunk`` samples each."""
        return self._chunks

    @property
    def workspace_bytes(self) -> int:
        """Bytes this engine needs for a whole training step (allocated or not)."""
        return self._workspace

    @property
    def kept_bytes(self) -> int:
        """Bytes a forward pass keeps beyond :attr:`workspace_bytes`: none unchunked
        (the kept spectrum is one of its buffers), else a copy of the input."""
        g = self.geom
        return 0 if self.keeps_x_spectrum else g.batch * g.in_channels * math.prod(
            g.in_size) * self.dtype.itemsize

    # -- the engine protocol (fftconv.protocol) ---------------------------------------
    @property
    def fft_shape(self) -> tuple:
        return self.passes.fft_shape

    def _kept(self, channels: int, keep: bool):
        """A spectrum for a forward pass to keep, when asked and unchunked (a
        chunked engine keeps the signal)."""
        return self.passes.new_kept_spectrum(channels) if keep and self.keeps_x_spectrum else None

    def _saved(self, kept, operand, keep: bool) -> Optional[Saved]:
        if not keep:
            return None
        return (Saved("spectrum", kept) if kept is not None
                else Saved("signal", self.arrays.copy(operand)))

    @staticmethod
    def _piece(saved: Optional[Saved], rows: slice) -> tuple:
        """``(spectrum, signal rows)`` of a saved operand for one chunk; at most one set."""
        if saved is None:
            return None, None
        return (saved.array, None) if saved.kind == "spectrum" else (None, saved.array[rows, ...])

    def forward(self, x, k, keep=False, out=None) -> tuple:
        return self._keeping_walk(self.passes.forward_piece, x, k, self._y_shape,
                                  self.geom.in_channels, keep, out)

    def input_grad(self, dy, k, keep=False, out=None) -> tuple:
        return self._keeping_walk(lambda dy_rows, k_, out_rows, kept: self.passes.backward_piece(
                                      dy_rows, k_, out_rows, dy_keep=kept),
                                  dy, k, self._x_shape, self.geom.out_channels, keep, out)

    def _keeping_walk(self, piece, operand, k, shape, channels, keep, out) -> tuple:
        """Run ``piece(rows, k, out_rows, kept)`` over the batch chunks of ``operand``;
        returns the result and, with ``keep``, the :class:`Saved` operand (its new
        spectrum of ``channels`` channels, or a copy when chunked)."""
        result = self.arrays.empty(shape, self.dtype) if out is None else out
        kept = self._kept(channels, keep)
        for rows in self.chunks():
            piece(operand[rows, ...], k, result[rows, ...], kept)
        return result, self._saved(kept, operand, keep)

    def backward(self, dy, saved_x, k, need_dx=True, need_dw=True, out=None) -> tuple:
        return self._walk(self.passes.backward_piece, dy, saved_x if need_dw else None, k,
                          self._x_shape if need_dx else None, out)

    def transposed_backward(self, x, saved_dy, k, need_y=True, need_dw=True, out=None) -> tuple:
        return self._walk(self.passes.transposed_piece, x, saved_dy if need_dw else None, k,
                          self._y_shape if need_y else None, out)

    def _walk(self, piece, operand, saved, k, shape, out) -> tuple:
        """Run ``piece`` over the batch chunks of ``operand``, each with the matching
        part of the ``saved`` other operand (kept spectrum or rows); its results go
        to ``out`` (a new array of ``shape``; skipped when ``shape`` is ``None``).
        Returns ``(result, dw)``, ``dw`` summed over the chunks when ``saved``."""
        result = (None if shape is None
                  else self.arrays.empty(shape, self.dtype) if out is None else out)
        for i, rows in enumerate(self.chunks()):
            spec, other_rows = self._piece(saved, rows)
            piece(operand[rows, ...], k, None if result is None else result[rows, ...], other_rows, spec,
                  i > 0)
        return result, self.passes.weight_grad() if saved is not None else None

class GroupShareEngine(SpectralEngine):
    """The FFT algorithm on a share of a grouped layer's groups at a time, for
    layers whose whole weight spectrum, or one sample of all groups, exceeds the
    workspace budget (32 depthwise channels of a million-sample kernel take
    256 MiB of weight spectrum alone).  One :class:`FFTEngine` for ``groups``
    groups runs each share in turn; the weight state is ``w`` itself and each
    pass transforms its share of it, so a step transforms the weights three
    times, not once.  A saved operand is a copy of the signal."""

    def __init__(self, geom: ConvGeometry, dtype, settings: Settings, arrays: Arrays,
                 groups: int, chunk: int):
        self.geom, self.dtype, self.arrays = geom, np.dtype(dtype), arrays
        self.inner = FFTEngine(group_share(geom, groups), self.dtype, settings, arrays, chunk)
        self.passes, self.lock, self.chunk = self.inner.passes, self.inner.lock, self.inner.chunk
        self.tile: Optional[Tuple[int, ...]] = None
        cg, og = geom.in_channels // geom.groups, geom.out_channels // geom.groups
        #: (input channels, output channels) of each share of the groups
        self.shares = [(slice(g * cg, (g + groups) * cg), slice(g * og, (g + groups) * og))
                       for g in range(0, geom.groups, groups)]

    @property
    def fft_shape(self) -> tuple:
        return self.geom.fft_shape

    @property
    def workspace_bytes(self) -> int:
        return self.inner.workspace_bytes

    @property
    def kept_bytes(self) -> int:
        """A forward pass keeps a copy of its input (``x``, or ``dy`` for a
        transposed layer's :meth:`input_grad`): the larger."""
        g = self.geom
        return max(math.prod(g.x_shape), math.prod(g.y_shape)) * self.dtype.itemsize

    def weights(self, w):
        return w

    def _new(self, shape, out=None, needed: bool = True):
        if not needed:
            return None
        return self.arrays.empty(shape, self.dtype) if out is None else out

    def _kept_copy(self, operand, keep: bool) -> Optional[Saved]:
        return Saved("signal", self.arrays.copy(operand)) if keep else None

    def forward(self, x, w, keep=False, out=None) -> tuple:
        y = self._new(self.geom.y_shape, out)
        for ci, co in self.shares:
            self.inner.forward(x[:, ci, ...], self.inner.weights(w[co, ...]), out=y[:, co, ...])
        return y, self._kept_copy(x, keep)

    def input_grad(self, dy, w, keep=False, out=None) -> tuple:
        dx = self._new(self.geom.x_shape, out)
        for ci, co in self.shares:
            self.inner.input_grad(dy[:, co, ...], self.inner.weights(w[co, ...]), out=dx[:, ci, ...])
        return dx, self._kept_copy(dy, keep)

    def backward(self, dy, saved_x, w, need_dx=True, need_dw=True, out=None) -> tuple:
        dx = self._new(self.geom.x_shape, out, need_dx)
        dw = self._new(self.geom.w_shape, None, need_dw)
        for ci, co in self.shares:
            part_x = None if dx is None else dx[:, ci, ...]
            _, part_w = self.inner.backward(dy[:, co, ...], Saved("signal", saved_x.array[:, ci, ...]),
                                            self.inner.weights(w[co, ...]), need_dx, need_dw,
                                            out=part_x)
            if dw is not None:
                self.arrays.copy_into(dw[co, ...], part_w)
        return dx, dw

    def transposed_backward(self, x, saved_dy, w, need_y=True, need_dw=True, out=None) -> tuple:
        y = self._new(self.geom.y_shape, out, need_y)
        dw = self._new(self.geom.w_shape, None, need_dw)
        for ci, co in self.shares:
            part_y = None if y is None else y[:, co, ...]
            _, part_w = self.inner.transposed_backward(
                x[:, ci, ...], Saved("signal", saved_dy.array[:, co, ...]), self.inner.weights(w[co, ...]),
                need_y, need_dw, out=part_y)
            if dw is not None:
                self.arrays.copy_into(dw[co, ...], part_w)
        return y, dw


def group_share(geom: ConvGeometry, groups: int) -> ConvGeometry:
    """``geom`` restricted to ``groups`` of its groups."""
    cg, og = geom.in_channels // geom.groups, geom.out_channels // geom.groups
    return dataclasses.replace(geom, in_channels=groups * cg, out_channels=groups * og,
                               groups=groups)


# -- the plugin: cost terms, partition, registry entry ---------------------------------------
def work(geom: ConvGeometry, dtype, weight_transforms: bool = True,
         input_transforms: int = 1) -> Work:
    """Units of work of one training step (``input_transforms=2`` when the
    backward pass transforms ``x`` again): a fixed cost per pass (six transform
    calls, the products' Python loop), six batched transforms (halved for real
    data), the per-frequency channel products priced by the kind that runs them
    (``contraction.product_work``), and copying operands in and results out."""
    g, p = geom, costs.precision(dtype)
    x_rows, y_rows = g.batch * g.in_channels, g.batch * g.out_channels
    transforms = {k: v * (1 + input_transforms) for k, v in
                  costs.transform_work(x_rows, g.fft_shape, g.real).items()}
    transforms = costs.add(transforms, costs.transform_work(y_rows, g.stride_fft_shape, g.real),
                           scale=2)
    products = contraction.product_work(g.batch, g.in_channels, g.out_channels, g.groups,
                                        g.spectrum_size, config.get_settings().compiled,
                                        itemsize=np.finfo(dtype).bits // 8)
    units = {"signal_element": (2 * x_rows + 2 * y_rows) * math.prod(g.fft_shape) * p,
             "call": 3.0, "fft_call": 3.0}
    units = costs.add(units, products, scale=p)
    units = costs.add(units, transforms, scale=p)
    return costs.add(units, weight_transform_work(g, dtype)) if weight_transforms else units


def weight_transform_work(geom: ConvGeometry, dtype) -> Work:
    """Units of one step's weight transforms, ``w`` forward and ``dw`` inverse, each
    priced pruned where :class:`Passes` builds it pruned (FFTW plans: a small kernel
    in a large grid costs a fraction of the whole transform)."""
    g = geom
    rows, grid = (g.out_channels, g.in_channels // g.groups), g.dilation_fft_shape
    fftw = config.get_settings().backend == "pyfftw"
    units: Work = {}
    for pruned, region in ((PrunedForward, g.w_placement), (PrunedInverse, g.dw_crop)):
        kept = pruned_extent(pruned, rows, grid, region, dtype) if fftw else None
        units = costs.add(units, costs.transform_work(math.prod(rows), grid, g.real)
                          if kept is None else
                          costs.pruned_transform_work(math.prod(rows), grid, kept, g.real))
    return {k: v * costs.precision(dtype) for k, v in units.items()}


def partition(func: str, geom: ConvGeometry, dtype: np.dtype, limit: Optional[int],
              tile: Optional[Tuple[int, ...]] = None) -> Partition:
    """The most samples per pass that fit ``limit`` bytes; when not even one sample
    fits and the layer is grouped, :class:`~fftconv.protocol.GroupShares`: the
    most groups per pass (a divisor of ``groups``), then the most samples."""
    chunk = budget.most_that_fit(geom.batch, limit, lambda c: workspace_bytes(geom, dtype, c))
    if chunk or limit is None:
        return chunk
    for groups in sorted((d for d in range(1, geom.groups) if geom.groups % d == 0),
                         reverse=True):
        share = group_share(geom, groups)
        chunk = budget.most_that_fit(geom.batch, limit,
                                     lambda c: workspace_bytes(share, dtype, c))
        if chunk:
            return GroupShares(groups, chunk)
    smallest = group_share(geom, 1) if geom.groups > 1 else geom
    raise budget.too_small(func, limit, "one sample" + (" of one group" if geom.groups > 1
                                                         else ""),
                           workspace_bytes(smallest, dtype, 1), "FFT")


def _build(geom: ConvGeometry, dtype: np.dtype, settings: Settings, part: Partition,
           arrays: Arrays) -> Engine:
    if isinstance(part, GroupShares):
        return GroupShareEngine(geom, dtype, settings, arrays, part.groups, part.chunk)
    assert isinstance(part, int), part
    return FFTEngine(geom, dtype, settings, arrays, part)


def _work(geom: ConvGeometry, dtype: np.dtype, part: Optional[Partition]) -> Work:
    """:func:`work`, plus the weight transforms a :class:`GroupShareEngine` repeats."""
    units = work(geom, dtype)
    if not isinstance(part, GroupShares):
        return units
    w_rows = geom.out_channels * (geom.in_channels // geom.groups)
    again = costs.transform_work(w_rows, geom.dilation_fft_shape, geom.real)
    passes = geom.groups // part.groups
    units = costs.add(units, {"call": 3.0 * (passes - 1), "fft_call": 3.0 * (passes - 1)})
    return costs.add(units, again, scale=2 * costs.precision(dtype))


ALGORITHM = Algorithm("fft", build=_build, partition=partition, work=_work,
                      estimate=lambda geom, dtype: (costs.seconds(work(geom, dtype)), None),
                      circular_fast=True)
