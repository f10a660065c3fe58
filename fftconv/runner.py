"""The layer around an engine: layout, padding modes and transposed roles.

An engine (``fftconv.protocol``) computes one zero-padded correlation and its
gradients, channels-first.  :class:`Runner` turns that into the layer
the caller asked for (``geometry.LayerGeometry``), without a second engine:

* **transposed**: the forward pass is the engine's input gradient and the
  input gradient its forward pass, both from the same spectra (JAX's
  ``_conv_general_dilated_transpose_*``); complex weights enter conjugated,
  so that ``y = sum w x`` as in ``torch.nn.functional.conv_transpose*d``;
* **padding modes**: the input is padded (gathered by
  ``geometry.padding_source``) before a "valid" engine, and the input gradient's halo is folded back onto the input (the
  padding operator's adjoint, ``geometry.padding_source``); circular padding
  on an FFT engine needs neither (``geometry.circular_geometry``);
* **channels-last**: arrays are viewed channels-first; the FFT engines read
  the views while placing operands into their buffers and write results
  through views into channels-last arrays, so no whole array is copied to
  change layout.

Around every engine call the runner also keeps the pass inside the dtype's
range (operands scaled by powers of two, ``fftconv.scaling``) and bounds
BLAS's threads by the ``threads`` setting (``fftconv.runtime``).

Every function takes arrays already checked and cast to the compute dtype, of
one library and device (``fftconv.backends``), and returns arrays of it.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Optional, TypeVar, cast

import numpy as np

from . import runtime, scaling
from .backends import Arrays
from .config import get_settings
from .geometry import LayerGeometry, padding_source
from .protocol import Saved

F = TypeVar("F", bound=Callable[..., Any])


def channels_first(arrays: Arrays, a, layout: str):
    """``(N, *sp, C)`` viewed as ``(N, C, *sp)`` for channels-last; else ``a``."""
    return arrays.moveaxis(a, -1, 1) if layout == "channels_last" else a


def weights_first(arrays: Arrays, w, layout: str):
    """``(*k, Cg, C_out)`` viewed as ``(C_out, Cg, *k)`` for channels-last; else ``w``."""
    if layout != "channels_last":
        return w
    nd = w.ndim - 2
    return arrays.permute(w, (nd + 1, nd) + tuple(range(nd)))


def weights_last(arrays: Arrays, w, layout: str):
    """Inverse of :func:`weights_first`, as a contiguous array."""
    if layout != "channels_last":
        return w
    return arrays.contiguous(arrays.permute(w, tuple(range(2, w.ndim)) + (1, 0)))


def bias_grad(arrays: Arrays, dy_cf):
    """``db[o] = sum over batch and space of dy[:, o]`` (``dy`` channels-first, any strides).

    Single precision is summed in double: ``db`` is one sum of ``N * prod(out)``
    terms that may nearly cancel (a 5-D float32 layer of 2304 outputs gave a
    6.2e-6 relative error summed in float32, 2.3e-8 in float64).
    """
    dtype = arrays.numpy_dtype(dy_cf.dtype)
    wide = np.complex128 if dtype.kind == "c" else np.float64
    return arrays.astype(arrays.sum(dy_cf, (0,) + tuple(range(2, dy_cf.ndim)), wide), dtype)


def pad_by_mode(arrays: Arrays, x_cf, layer: LayerGeometry):
    """``x_cf`` padded by ``layer.padding_mode`` (circular, reflect, replicate): each
    spatial axis gathered through ``geometry.padding_source``."""
    for a, ((lo, hi), n) in enumerate(zip(layer.mode_padding, layer.in_size)):
        if lo or hi:
            x_cf = arrays.take(x_cf, padding_source(n, lo, hi, layer.padding_mode), axis=2 + a)
    return x_cf


def zero_extended(arrays: Arrays, x_cf, extra):
    """``x_cf`` with ``extra[a]`` zeros after its end on spatial axis ``a``."""
    shape = x_cf.shape[:2] + tuple(n + e for n, e in zip(x_cf.shape[2:], extra))
    out = arrays.zeros(shape, arrays.numpy_dtype(x_cf.dtype))
    arrays.copy_into(out[(slice(None), slice(None)) + tuple(slice(0, n) for n in x_cf.shape[2:])],
                     x_cf)
    return out


def fold_padding(arrays: Arrays, dxpad, layer: LayerGeometry, out):
    """The adjoint of padding with ``layer.padding_mode``: each halo sample of
    ``dxpad`` is added onto the input sample it copied; written into ``out``."""
    folded = dxpad
    for a, ((lo, hi), n) in enumerate(zip(layer.mode_padding, layer.in_size)):
        axis = 2 + a
        source = padding_source(n, lo, hi, layer.padding_mode)
        core = arrays.take(folded, range(lo, lo + n), axis=axis)  # a copy
        for p in (*range(lo), *range(lo + n, lo + n + hi)):
            index = [slice(None)] * folded.ndim
            index[axis] = slice(source[p], source[p] + 1)
            halo = [slice(None)] * folded.ndim
            halo[axis] = slice(p, p + 1)
            core[tuple(index)] += folded[tuple(halo)]
        folded = core
    arrays.copy_into(out, folded)
    return out


class Weights(NamedTuple):
    """A weight state: the engine's ``state`` of ``w * 2**-scale`` (``fftconv.scaling``)."""

    state: object
    scale: int


def _allocations_named(method: F) -> F:
    """A :class:`Runner` method whose failed allocations name the layer
    (``runtime.allocation_named``), and which is quiet about non-finite values.

    A NaN or Inf in an operand spreads as CONVENTIONS §5 says, on every path and
    without a ``RuntimeWarning``: numpy's "invalid value" warnings are silenced
    inside the pass (an Inf meets ``inf - inf`` or ``0 * inf`` in the spectra and
    the GEMMs, a NaN meets nothing numpy warns about, so left alone the two would
    behave differently).  Overflow still warns: scaling keeps finite results in
    range, so an overflow warning is a defect to report."""
    @functools.wraps(method)
    def named(self: "Runner", *args: Any, **kwargs: Any) -> Any:
        layer, needed = self._named
        with runtime.allocation_named(self.func, layer, needed,
                                      self.arrays.memory_errors), self.arrays.quiet():
            return method(self, *args, **kwargs)
    return cast(F, named)


class Runner:
    """The passes of one layer on one engine; stateless, so plans, pullbacks and
    the stateless functions all share it.  ``threads`` bounds BLAS inside the
    passes (default: the setting in force at each call)."""

    def __init__(self, layer: LayerGeometry, engine, threads: Optional[int] = None,
                 func: str = "fftconv"):
        self.layer, self.engine, self._threads, self.func = layer, engine, threads, func
        self.arrays: Arrays = engine.arrays
        self.dtype = np.dtype(engine.dtype)
        self._most = scaling.limit(self.dtype, scaling.growth_bits(engine.geom, engine.fft_shape))
        #: What a failed allocation's message names: the layer and the engine's bytes
        #: (fixed per engine; built once, not on every pass).
        self._named = (f"the layer x{layer.x_shape} * w{layer.w_shape}",
                       engine.workspace_bytes + engine.kept_bytes)

    def _blas(self):
        """BLAS bounded by the ``threads`` setting for one pass."""
        return runtime.blas_threads(self._threads or get_settings().threads)

    def _scale(self, a):
        return scaling.scale_for(a, self._most, self.arrays)

    def _scaled_input(self, x_cf) -> tuple:
        """``(engine input * 2**-e, e)`` (:meth:`_engine_input`; scaled in place
        when that is a new array)."""
        xe = self._engine_input(x_cf)
        e = self._scale(xe)
        return scaling.scaled(xe, e, self.arrays, owned=xe is not x_cf), e

    # -- arrays between the caller's layout and the engine's ----------------------------
    def _new(self, shape_cf) -> tuple:
        """A new array in the caller's layout and its channels-first view."""
        layout = self.layer.layout
        shape = self.layer.shown(shape_cf)
        a = self.arrays.empty(shape, self.dtype)
        return a, channels_first(self.arrays, a, layout)

    def _engine_input(self, x_cf):
        """The layer input as the engine reads it: padded by mode, or extended
        by zeros (transposed), else the view itself."""
        layer = self.layer
        if layer.pads_input:
            return pad_by_mode(self.arrays, x_cf, layer)
        if any(layer.extra):
            return zero_extended(self.arrays, x_cf, layer.extra)
        return x_cf

    @property
    def weight_form(self) -> tuple:
        """What :meth:`weights` does to the caller's ``w`` before the engine sees it:
        layers that differ here must not share a weight state."""
        return self.layer.layout, self.layer.transposed and self.dtype.kind == "c"

    @_allocations_named
    def weights(self, w) -> Weights:
        """The engine's weight state for the caller's ``w`` (scaled where needed)."""
        w = weights_first(self.arrays, w, self.layer.layout)
        if self.layer.transposed and self.dtype.kind == "c":
            w = self.arrays.conj(w)
        e = self._scale(w)
        with self._blas():
            return Weights(self.engine.weights(scaling.scaled(w, e, self.arrays)), e)

    # -- passes ------------------------------------------------------------------------
    @_allocations_named
    def forward(self, x, weights: Weights, b, keep: bool) -> tuple:
        """``(y, saved)``: ``y`` in the caller's layout; ``saved`` for :meth:`backward`
        when ``keep`` (else ``None``)."""
        layer = self.layer
        arrays = self.arrays
        y, y_cf = self._new(layer.y_shape_cf)
        saved = None
        if layer.conv.batch == 0:
            arrays.copy_into(y_cf, 0)
        else:
            xe, e = self._scaled_input(channels_first(arrays, x, layer.layout))
            run = self.engine.input_grad if layer.transposed else self.engine.forward
            with self._blas():
                _, saved = run(xe, weights.state, keep=keep, out=y_cf)
            scaling.rescale(y_cf, e + weights.scale, arrays)
            saved = None if saved is None else saved._replace(scale=e)
        if b is not None:
            y_cf += arrays.reshape(b, (-1,) + (1,) * layer.ndim)
        return y, saved

    @_allocations_named
    def save(self, x) -> Saved:
        """What :meth:`backward` needs of ``x`` without a forward pass (may share ``x``)."""
        xe, e = self._scaled_input(channels_first(self.arrays, x, self.layer.layout))
        save = self.engine.save_output if self.layer.transposed else self.engine.save_input
        return save(xe)._replace(scale=e)

    @_allocations_named
    def backward(self, dy, saved: Optional[Saved], weights: Weights,
                 need_dx: bool = True, need_dw: bool = True) -> tuple:
        """``(dx, dw, db)`` in the caller's layout; ``dx``/``dw`` ``None`` when not needed."""
        layer, arrays = self.layer, self.arrays
        dy_cf = channels_first(arrays, dy, layer.layout)
        db = bias_grad(arrays, dy_cf)
        dx, dx_cf = self._new(layer.x_shape_cf) if need_dx else (None, None)
        if layer.conv.batch == 0:
            if need_dx:
                arrays.copy_into(dx, 0)
            dw = arrays.zeros(layer.conv.w_shape, self.dtype) if need_dw else None
        else:
            e = self._scale(dy_cf)
            dy_cf = scaling.scaled(dy_cf, e, arrays)
            with self._blas():
                dw = self._engine_backward(dy_cf, saved, weights.state, dx_cf, need_dw)
            scaling.rescale(dx_cf, e + weights.scale, arrays)
            if dw is not None and saved is not None:
                scaling.rescale(dw, e + saved.scale, arrays)
        if dw is not None:
            dw = weights_last(arrays, dw, layer.layout)
        return dx, dw, db

    def _engine_backward(self, dy_cf, saved, state, dx_cf, need_dw):
        """The engine's gradients: ``dx`` into ``dx_cf`` (when not ``None``, padding
        folded back), ``dw`` returned."""
        layer = self.layer
        if layer.transposed:
            return self._transposed_backward(dy_cf, saved, state, dx_cf, need_dw)
        need_dx = dx_cf is not None
        direct_out = need_dx and not layer.pads_input
        dxe, dw = self.engine.backward(dy_cf, saved, state, need_dx=need_dx,
                                       need_dw=need_dw, out=dx_cf if direct_out else None)
        if need_dx and not direct_out:
            fold_padding(self.arrays, dxe, layer, dx_cf)
        return dw

    def _transposed_backward(self, dy_cf, saved, weights, dx_cf, need_dw):
        """The engine's forward pass of ``dy`` is ``dx`` (cropped by ``extra``) and
        its weight gradient against the saved input is ``dw`` (conjugated back
        for complex weights)."""
        layer = self.layer
        cropped = any(layer.extra)
        ye, dw = self.engine.transposed_backward(
            dy_cf, saved, weights, need_y=dx_cf is not None, need_dw=need_dw,
            out=None if cropped else dx_cf)
        if dx_cf is not None and cropped:
            self.arrays.copy_into(dx_cf, ye[(Ellipsis,) + tuple(slice(0, n)
                                                                for n in layer.in_size)])
        if dw is not None and self.dtype.kind == "c":
            self.arrays.conj(dw, out=dw)
        return dw
