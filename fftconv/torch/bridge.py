"""``conv``: fftconv as a ``torch.autograd.Function``, and its native fallback."""
from __future__ import annotations

import operator
import warnings
from typing import Callable, Dict, Optional, Set

import numpy as np
import torch
import torch.nn.functional as F

from .. import api, registry
from ..autoselect import Choice
from ..backends.torch_tensors import TorchArrays
from ..checks import (ALGORITHM, DEFAULTS, Ints, Layout, Padding, PaddingMode, check_algorithm,
                      check_bias_shape, check_instance, check_layer, check_layer_keywords,
                      check_one_kind, dtypes_for, keywords_checked)
from ..config import get_settings
from ..docstrings import LAYER
from ..registry import NAMES
from . import autoselect
from . import ops
from .ops import from_engine, to_engine, to_numpy, traced_conv

#: dtypes the engine computes (float16 is computed in float32 and returned as float16).
ENGINE_DTYPES = (torch.float16, torch.float32, torch.float64, torch.complex64, torch.complex128)
#: dtypes the engine computes on a device of :data:`fftconv.torch.ops.TENSOR_DEVICES`:
#: not float16, whose float32 computation would cost a float32 copy of every operand
#: and is no faster than cuDNN's half-precision kernels (it falls back, with the warning).
DEVICE_DTYPES = (torch.float32, torch.float64, torch.complex64, torch.complex128)


class FallbackWarning(UserWarning):
    """fftconv ran PyTorch's own convolution for a call it cannot serve."""


_warned: Set[str] = set()


@torch.compiler.assume_constant_result
def warn_once(reason: str, stacklevel: int = 3):
    """A :class:`FallbackWarning` for ``reason``, once per process; ``stacklevel``
    counts from the caller of this function's caller.  Under ``torch.compile`` it
    runs once, at trace time (Dynamo cannot trace ``warnings.warn``)."""
    if reason not in _warned:
        _warned.add(reason)
        warnings.warn(f"fftconv.torch: {reason}; running PyTorch's own convolution "
                      f"(same results)", FallbackWarning, stacklevel=stacklevel)


def tracing() -> bool:
    """Whether this call is being traced, by ``torch.compile`` (Dynamo),
    ``torch.export`` or ``torch.jit.trace``: fftconv's engine then runs as the
    custom operator ``fftconv::conv`` (:mod:`fftconv.torch.ops`), a node the graph
    can hold, and ``"auto"`` chooses at trace time (:func:`auto_choice`)."""
    return torch.compiler.is_compiling() or torch.jit.is_tracing()


def fallback_reason(*tensors, algorithm: str = "auto"):
    """Why a call must run natively, or ``None`` when fftconv's engine can serve it.

    CPU tensors reach the engine as numpy arrays, CUDA tensors as tensors (it runs
    on their device); tensors on another device type, or on different devices
    (PyTorch's own convolution then raises its error), dtypes the engine does not
    compute there (bfloat16; float16 on CUDA) and an algorithm the device's
    backend cannot run (``"direct"`` where it lacks strided views) run natively."""
    if algorithm == "native":
        return "native"
    present = [t for t in tensors if t is not None]
    devices = [t.device for t in present]
    for d in devices:
        if d.type not in ops.HOST_DEVICES and d.type not in ops.TENSOR_DEVICES:
            return f"tensors on device '{d.type}'"
    if any(d != devices[0] for d in devices):
        return "native"
    for t in present:
        if t.dtype not in ENGINE_DTYPES:
            return f"dtype {t.dtype} is not one the engine computes"
    device = devices[0].type if devices else "cpu"
    if device in ops.TENSOR_DEVICES:
        for t in present:
            if t.dtype not in DEVICE_DTYPES:
                return (f"dtype {t.dtype} on device '{device}' is not one the engine "
                        f"computes there")
        if algorithm != "auto" and not runs_on_device(algorithm, device):
            return (f"algorithm {algorithm!r} does not run on torch tensors on device "
                    f"'{device}' (it needs strided views the backend lacks)")
    return None


_runs_on: Dict[tuple, bool] = {}


@torch.compiler.assume_constant_result
def runs_on_device(algorithm: str, device: str) -> bool:
    """Whether fftconv's ``algorithm`` runs on torch tensors on ``device`` (a device
    type), as the registry says for that backend (``Algorithm.runs_on``); an
    unknown name is left to the algorithm check.  A constant of a Dynamo trace."""
    key = (algorithm, device)
    if key not in _runs_on:
        entry = registry.REGISTRY.get(algorithm)
        _runs_on[key] = entry is None or entry.runs_on(TorchArrays(torch.device(device)))
    return _runs_on[key]


#: Checked geometries of eager calls, per ``(func, shapes, real, layer keywords)``: the
#: checks are pure functions of these, and a step of a small layer on a GPU takes
#: about as long as they do (a converted module must not be slower than PyTorch's).
_geometries: dict = {}
_MAX_GEOMETRIES = 1024


def _layer(x, w, layer: dict, func: str = "fftconv.torch.conv"):
    """The checked ``LayerGeometry`` of a call (PyTorch's tensors, fftconv's rules;
    keywords missing from ``layer`` take the shared defaults, ``fftconv.checks.DEFAULTS``);
    remembered for eager calls whose keywords are hashable (a failed check is not)."""
    real = not (x.is_complex() or w.is_complex())
    key = None
    if not tracing():
        key = (func, tuple(x.shape), tuple(w.shape), real, tuple(layer.items()))
        try:
            found = _geometries.get(key)
        except TypeError:    # a list among the keywords: check every time
            key = found = None
        if found is not None:
            return found
    geometry = check_layer(func, tuple(x.shape), tuple(w.shape), real=real,
                           **check_layer_keywords(func, layer))
    if key is not None:
        if len(_geometries) >= _MAX_GEOMETRIES:
            _geometries.clear()
        _geometries[key] = geometry
    return geometry


def check_kinds(func: str, x, w, b) -> None:
    """``x``, ``w`` and ``b`` all real or all complex, as PyTorch's convolutions
    require (``fftconv.checks.check_one_kind``): a mix would run a complex forward
    whose backward autograd refuses."""
    tensors = {"x": x, "w": w, "b": b}
    check_one_kind(func, {name: None if t is None else t.dtype for name, t in tensors.items()},
                   {name for name, t in tensors.items() if t is not None and t.is_complex()})


def _unbatched(func: str, x, w, b) -> bool:
    """Check the operands are tensors; whether ``x`` is one sample without its batch
    axis (as ``F.conv*d`` takes it): ``w``'s rank fixes the number of spatial axes,
    so an ``x`` one dimension short is unambiguous."""
    hint = "fftconv.forward takes numpy arrays"
    check_instance(func, "x", x, torch.Tensor, hint)
    check_instance(func, "w", w, torch.Tensor, hint)
    if b is not None:
        check_instance(func, "b", b, torch.Tensor, hint)
    return w.dim() >= 3 and x.dim() == w.dim() - 1


def _checked_call(func: str, x, w, b, layer: dict, algorithm: str,
                  run: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``run(x)`` after every check, ``x`` given a batch axis when it came without
    one (autograd carries the gradient through the view) and ``y`` returned as
    ``x`` came."""
    unbatched = _unbatched(func, x, w, b)
    if unbatched:
        x = x.unsqueeze(0)
    _check_call(func, x, w, b, layer, algorithm)
    y = run(x)
    return y.squeeze(0) if unbatched else y


def _check_call(func: str, x, w, b, layer: dict, algorithm: str) -> None:
    """Every check of a call, before any work (``x`` batched): the kinds, the layer,
    the bias's shape and the algorithm, in messages that name ``func``."""
    check_kinds(func, x, w, b)
    geometry = _layer(x, w, layer, func)
    if b is not None:
        check_bias_shape(func, b.shape, geometry.out_channels)
    check_algorithm(func, algorithm, ("native",) + tuple(NAMES))


_Conv = Callable[..., torch.Tensor]
#: PyTorch's convolutions per number of spatial axes.
_CONVS: Dict[int, _Conv] = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_TRANSPOSED: Dict[int, _Conv] = {1: F.conv_transpose1d, 2: F.conv_transpose2d,
                                 3: F.conv_transpose3d}


@keywords_checked("fftconv.torch.native_conv")
def native_conv(x: torch.Tensor, w: torch.Tensor, b: Optional[torch.Tensor] = None, *,
                padding: Padding = DEFAULTS.padding, stride: Ints = DEFAULTS.stride,
                dilation: Ints = DEFAULTS.dilation, groups: int = DEFAULTS.groups,
                flip_kernel: bool = DEFAULTS.flip_kernel, transposed: bool = DEFAULTS.transposed,
                output_padding: Ints = DEFAULTS.output_padding,
                padding_mode: PaddingMode = DEFAULTS.padding_mode,
                layout: Layout = DEFAULTS.layout) -> torch.Tensor:
    """PyTorch's own convolution with fftconv's semantics; differentiable.

    Every layer keyword of :func:`conv`, with the same defaults and meaning
    (every padding form, ``padding_mode``, ``transposed``, ``output_padding``,
    ``flip_kernel``, ``layout``), run by ``torch.nn.functional``: what
    ``algorithm="native"`` and the fallbacks of :func:`conv` run.  Up to three
    spatial axes (PyTorch has no 4-d convolution).  Like ``F.conv*d`` it takes an
    unbatched ``x`` (one dimension fewer than ``w``) and returns an unbatched ``y``.
    """
    layer = dict(padding=padding, stride=stride, dilation=dilation, groups=groups,
                 flip_kernel=flip_kernel, transposed=transposed, output_padding=output_padding,
                 padding_mode=padding_mode, layout=layout)    # not locals(): Dynamo traces this
    return _checked_call("fftconv.torch.native_conv", x, w, b, layer, "native",
                         lambda x: _native(x, w, b, layer))


def _native(x, w, b, layer: dict) -> torch.Tensor:
    """:func:`native_conv` with the layer keywords as a dict; operands of different
    real dtypes are promoted first, as fftconv's engines promote them (PyTorch's
    convolution refuses the mix)."""
    dtype = torch.promote_types(x.dtype, w.dtype)
    if b is not None:
        dtype = torch.promote_types(dtype, b.dtype)
    if x.dtype != dtype or w.dtype != dtype or (b is not None and b.dtype != dtype):
        x, w = x.to(dtype), w.to(dtype)
        b = None if b is None else b.to(dtype)
    geometry = _layer(x, w, layer)
    nd = geometry.ndim
    last = geometry.layout == "channels_last"
    if last:   # channels-first views: x (N, C, *s), w (C_a, C_b, *k)
        x = x.movedim(-1, 1)
        w = w.permute((nd + 1, nd) + tuple(range(nd)))
    if layer.get("flip_kernel"):
        w = w.flip(tuple(range(2, nd + 2)))
    y = _native_first(x, w, b, geometry)
    return y.movedim(1, -1) if last else y


def _native_first(x, w, b, geometry) -> torch.Tensor:
    """The channels-first correlation (or transposed correlation) ``geometry`` describes."""
    nd = geometry.ndim
    pads = [p for lo_hi in reversed(geometry.padding) for p in lo_hi]   # F.pad order
    stride, dilation, groups = geometry.conv.stride, geometry.conv.dilation, geometry.conv.groups
    symmetric = all(lo == hi for lo, hi in geometry.padding)
    if not geometry.transposed:
        fn = _CONVS.get(nd)
        if fn is None:
            raise ValueError(f"fftconv.torch.conv: PyTorch has no {nd}-d convolution to fall "
                             f"back to, got x.shape={tuple(x.shape)}")
        if geometry.padding_mode == "zeros" and symmetric:   # torch pads without a copy
            return fn(x, w, b, stride, tuple(lo for lo, _ in geometry.padding), dilation, groups)
        mode = geometry.padding_mode
        x = F.pad(x, pads) if mode == "zeros" else F.pad(x, pads, mode=mode)
        return fn(x, w, b, stride, 0, dilation, groups)
    fn = _TRANSPOSED.get(nd)
    if fn is None:
        raise ValueError(f"fftconv.torch.conv: PyTorch has no {nd}-d transposed convolution to "
                         f"fall back to, got x.shape={tuple(x.shape)}")
    torch_sized = all(op < max(s, d) for op, s, d in
                      zip(geometry.output_padding, stride, dilation))
    if symmetric and torch_sized:      # PyTorch's own sizes: its call crops in place
        return fn(x, w, b, stride, tuple(lo for lo, _ in geometry.padding),
                  geometry.output_padding, groups, dilation)
    full = fn(x, w, None, stride, 0, 0, groups, dilation)    # no padding: crop or extend below
    out = geometry.out_size
    for axis, ((lo, _), n) in enumerate(zip(geometry.padding, out)):
        dim = 2 + axis
        have = full.shape[dim] - lo
        full = full.narrow(dim, lo, min(n, have))
        if n > have:   # output_padding beyond the last input's reach: zeros
            shape = list(full.shape)
            shape[dim] = n - have
            full = torch.cat([full, full.new_zeros(shape)], dim)
    return full if b is None else full + b.reshape((1, -1) + (1,) * nd)


class _FFTConv(torch.autograd.Function):
    """Forward by :func:`fftconv.vjp`; backward by its pullback."""

    @staticmethod
    def forward(ctx, x, w, b, layer, algorithm):
        y, pullback = api.vjp(to_engine(x), to_engine(w), to_engine(b), algorithm=algorithm,
                              **layer)
        ctx.pullback, ctx.layer = pullback, layer
        ctx.save_for_backward(x, w, b)     # references, for double backward only
        return from_engine(y)

    @staticmethod
    def backward(ctx, dy):
        need_dx, need_dw, need_db = ctx.needs_input_grad[:3]
        if torch.is_grad_enabled():         # create_graph=True: a differentiable backward
            warn_once("double backward")
            x, w, b = ctx.saved_tensors
            inputs = [t for t, need in zip((x, w, b), (need_dx, need_dw, need_db)) if need]
            with torch.enable_grad():
                y = _native(x, w, b, ctx.layer)
            grads = iter(torch.autograd.grad(y, inputs, dy, create_graph=True))
            return tuple(next(grads) if need else None
                         for need in (need_dx, need_dw, need_db)) + (None, None)
        dx, dw, db = ctx.pullback(to_engine(dy), need_dx=need_dx, need_dw=need_dw or need_db)
        return (from_engine(dx) if need_dx else None,
                from_engine(dw) if need_dw else None,
                from_engine(db) if need_db else None, None, None)


#: ``auto_choice`` verdicts of this process, per call signature and settings.
_choices: dict = {}
_MAX_CHOICES = 4096


def auto_choice(x, w, layer: dict) -> Choice:
    """``algorithm="auto"`` for this call: ``"native"`` or an fftconv algorithm,
    by the cost model or, with the ``measure`` setting, by timing (which runs
    here, once per shape; :mod:`fftconv.torch.autoselect`); remembered per
    shapes, dtypes, layer and settings.

    On CUDA there is no fitted cost model of cuDNN: the first eager call at a
    shape times a training step natively and on fftconv's engine with CUDA
    events, whatever the ``measure`` setting (:func:`fftconv.torch.autoselect.measure_choice`,
    persisted per GPU model), so a converted module is never slower than the
    layer it replaced there either.

    While tracing (:func:`tracing`) the choice is made at trace time from the
    shapes: the verdict this process already holds for them (an eager call's,
    measured or not), else the cost model's (on CUDA: a persisted measurement,
    else ``"native"``: run one eager step or ``convert(model, example_input)``
    first to have fftconv chosen); nothing is timed in a trace, and the
    graph holds the chosen path only.  ``torch.compile`` specialises an
    ``"auto"`` layer's sizes (a recompile per input shape, with or without
    ``dynamic=True``); ``torch.export`` with ``dynamic_shapes`` (symbolic sizes)
    gets ``"auto"``: fftconv's own choice among its engines, made by the
    operator at run time ("native" is then no candidate)."""
    traced = tracing()
    if traced and any(isinstance(n, torch.SymInt) for n in tuple(x.shape) + tuple(w.shape)):
        return Choice("auto", None, "symbolic shapes in a trace: fftconv's own 'auto' "
                                    "chooses its engine at run time; 'native' is not a candidate")
    if traced:
        # operator.index: Dynamo specialises a size it made dynamic (a guard and a
        # recompile per shape, as the choice depends on it), where int() would not
        x_shape = tuple(operator.index(n) for n in x.shape)
        w_shape = tuple(operator.index(n) for n in w.shape)
    else:
        x_shape, w_shape = tuple(x.shape), tuple(w.shape)
    return _choice(x_shape, w_shape, x.dtype, w.dtype, layer, traced, str(x.device))


@torch.compiler.assume_constant_result
def _choice(x_shape, w_shape, x_dtype, w_dtype, layer: dict, traced: bool,
            device: str = "cpu") -> Choice:
    """:func:`auto_choice` from shapes, dtypes, the layer keywords and the device: a
    constant of the trace under ``torch.compile``."""
    settings = get_settings()
    on_device = device != "cpu"
    keywords = tuple(sorted(layer.items()))
    try:
        hash(keywords)
    except TypeError:    # a list among the keywords
        keywords = repr(keywords)    # type: ignore[assignment]
    cache_key = (x_shape, w_shape, x_dtype, w_dtype, keywords, settings,
                 torch.get_num_threads()) + (_device_settings(device) if on_device else ())
    verdict = _choices.get(cache_key)
    if verdict is None:
        real = not (x_dtype.is_complex or w_dtype.is_complex)
        func = "fftconv.torch.conv"     # the whole shapes: the batch prices the choice
        conv_geometry = check_layer(func, x_shape, w_shape, real=real,
                                    **check_layer_keywords(func, layer)).conv
        dtype = compute_dtype(x_dtype, w_dtype)
        if (settings.measure or on_device) and not traced:
            verdict = autoselect.measure_choice(
                x_shape, w_shape, x_dtype, dtype, layer,
                native=lambda x, w, b: _native(x, w, b, layer),
                fft=lambda x, w, b, algorithm: engine_conv(x, w, b, layer, algorithm),
                device=device)
        elif on_device:   # traced: a persisted measurement, else PyTorch's own
            return autoselect.stored_choice(x_shape, w_shape, x_dtype, layer, device) or Choice(
                "native", None, f"auto chose 'native': no measured verdict for this layer on "
                                f"{device} while tracing (run one eager step, or "
                                f"fftconv.torch.convert(model, example_input), first)")
        else:
            verdict = autoselect.estimate_choice(conv_geometry, dtype)
        if traced and settings.measure:
            return verdict    # an estimate, not what a measuring eager call would find
        if len(_choices) >= _MAX_CHOICES:
            _choices.clear()
        _choices[cache_key] = verdict
    return verdict


def _device_settings(device: str) -> tuple:
    """What a verdict on a GPU depends on beyond the layer: the device and PyTorch's
    cuDNN and TF32 settings (cuDNN's speed changes with them)."""
    return (device, torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32,
            torch.backends.cuda.matmul.allow_tf32)


def compute_dtype(*dtypes: torch.dtype) -> np.dtype:
    """The numpy dtype fftconv computes tensors of these dtypes in (CONVENTIONS §4),
    from the dtypes alone."""
    return dtypes_for(*(np.empty(0, np.dtype(str(d).removeprefix("torch."))) for d in dtypes))[0]


def measure(x, w, layer: dict) -> Choice:
    """Time this call's layer natively and on fftconv's engine, at the shapes and
    dtypes of ``x`` and ``w`` (:func:`fftconv.torch.autoselect.measure_choice`)."""
    return autoselect.measure_choice(
        tuple(x.shape), tuple(w.shape), x.dtype, compute_dtype(x.dtype, w.dtype), layer,
        native=lambda x, w, b: _native(x, w, b, layer),
        fft=lambda x, w, b, algorithm: engine_conv(x, w, b, layer, algorithm),
        device=str(x.device))


@keywords_checked("fftconv.torch.conv")
def conv(x: torch.Tensor, w: torch.Tensor, b: Optional[torch.Tensor] = None, *,
         padding: Padding = DEFAULTS.padding, stride: Ints = DEFAULTS.stride,
         dilation: Ints = DEFAULTS.dilation, groups: int = DEFAULTS.groups,
         flip_kernel: bool = DEFAULTS.flip_kernel, transposed: bool = DEFAULTS.transposed,
         output_padding: Ints = DEFAULTS.output_padding,
         padding_mode: PaddingMode = DEFAULTS.padding_mode, layout: Layout = DEFAULTS.layout,
         algorithm: str = ALGORITHM) -> torch.Tensor:
    """N-d convolution of torch tensors by fftconv, differentiable.

    Semantics, keywords and defaults are :func:`fftconv.forward`'s (PyTorch's
    ``F.conv*d``/``F.conv_transpose*d`` for what they share), for any number
    of spatial axes.  The workspace bound and ``measure`` are the settings
    (``fftconv.using(max_workspace_bytes=..., measure=True)``).

    Parameters
    ----------
    x : Tensor, shape ``(N, C_in, *spatial)``
        Or one unbatched sample ``(C_in, *spatial)``, as ``F.conv*d`` takes it
        (``w``'s rank fixes the number of spatial axes); ``y`` is then unbatched
        too, and the gradients flow as for a batch of one.
    w : Tensor, shape ``(C_out, C_in // groups, *kernel)``
    b : Tensor, shape ``(C_out,)``, optional{params}
    algorithm : {{"auto", "native", "fft", "direct", "overlap_add", "winograd", "fft_tiles"}}, optional
        fftconv's algorithms, or ``"native"``: PyTorch's own convolution
        (:func:`native_conv`).  ``"auto"`` (default) has ``"native"`` among its
        candidates, so a call is not slower than PyTorch's where the cost model
        (or, with the ``measure`` setting, and always on CUDA, a measurement)
        says PyTorch is faster (:func:`auto_choice`).

    Returns
    -------
    Tensor
        ``y``, on ``x``'s device, with an autograd node when an input needs grad.
        CPU tensors reach the engine as numpy arrays sharing their memory, CUDA
        tensors as tensors (the engine runs on their GPU).  Tensors on other
        devices, bfloat16, float16 on CUDA, an algorithm the tensors' backend
        cannot run and double backward run
        :func:`native_conv` (a :class:`FallbackWarning` once per process says so).

    Raises
    ------
    TypeError
        A mix of real and complex operands (a real ``x`` and ``w`` with a complex
        ``b``, say), which PyTorch refuses too; an operand that is not a tensor.
    ValueError
        Shapes or keywords that do not make a layer (``fftconv.forward``'s rules),
        named ``fftconv.torch.conv``.

    Examples
    --------
    >>> import torch, fftconv.torch as ft
    >>> x = torch.ones(1, 1, 8, requires_grad=True)
    >>> y = ft.conv(x, torch.ones(1, 1, 3), padding="same", algorithm="fft")
    >>> y.detach().numpy().round(12)
    array([[[2., 3., 3., 3., 3., 3., 3., 2.]]], dtype=float32)
    """
    layer = dict(padding=padding, stride=stride, dilation=dilation, groups=groups,
                 flip_kernel=flip_kernel, transposed=transposed, output_padding=output_padding,
                 padding_mode=padding_mode, layout=layout)    # not locals(): Dynamo traces this
    return _checked_call("fftconv.torch.conv", x, w, b, layer, algorithm,
                         lambda x: _dispatched(x, w, b, layer, algorithm))


def _dispatched(x, w, b, layer: dict, algorithm: str) -> torch.Tensor:
    """A checked, batched :func:`conv`: PyTorch's own convolution where ``auto`` or a
    fallback says so, else fftconv's engine."""
    reason = fallback_reason(x, w, b, algorithm=algorithm)
    if reason is None and algorithm == "auto" and x.dim() <= 5:
        algorithm = auto_choice(x, w, layer).algorithm
        reason = "native" if algorithm == "native" else None
    if reason is None:
        return engine_conv(x, w, b, layer, algorithm)
    if reason != "native":
        warn_once(reason)
    return _native(x, w, b, layer)


if conv.__doc__:  # None under python -OO
    conv.__doc__ = conv.__doc__.format(params=LAYER)


def engine_conv(x, w, b, layer: dict, algorithm: str) -> torch.Tensor:
    """The call on fftconv's engine ``algorithm`` (not ``"native"``): an autograd
    node holding one pullback, or a plain forward pass when nothing needs grad."""
    if tracing():
        return traced_conv(x, w, b, layer, algorithm)
    tracked = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, w, b))
    if not tracked:    # no_grad or nothing to differentiate: keep nothing
        return from_engine(api.forward(to_engine(x), to_engine(w), to_engine(b),
                                       algorithm=algorithm, **layer))
    return _FFTConv.apply(x, w, b, layer, algorithm)
