"""Drop-in modules: ``nn.Conv*d`` / ``nn.ConvTranspose*d`` computed by fftconv.

Their constructors are PyTorch's, parameter for parameter, plus the keyword-only
``algorithm`` (default ``"auto"``, as every fftconv entry point).  PyTorch's
``padding=0`` default is the shared default ``padding="valid"`` (no padding) in
PyTorch's spelling; the other defaults (``stride``, ``dilation``, ``groups``,
``padding_mode``, ``output_padding``) are the shared ones
(``fftconv.checks.DEFAULTS``).  The modules are channels-first correlations,
as PyTorch's: ``fftconv.torch.conv`` takes ``layout`` and ``flip_kernel``.
"""
from __future__ import annotations

from typing import Any, List, Optional, Tuple, Union

import torch
import torch.nn as nn

from ..checks import ALGORITHM, DEFAULTS, Ints, PaddingMode
from .bridge import (_native, auto_choice, check_kinds, engine_conv, fallback_reason, measure,
                     warn_once)

#: PyTorch's ``padding`` argument: ints, or ``"valid"``/``"same"`` for a convolution;
#: fftconv's modules also take ``"causal"`` (Keras's meaning, CONVENTIONS §2).
TorchPadding = Union[str, Ints]

#: The padding name PyTorch's constructors do not know: the modules give PyTorch
#: ``padding=0`` and keep ``"causal"`` in ``self.padding``; their native path is
#: :func:`fftconv.torch.native_conv` (``F.pad`` then PyTorch's convolution).
CAUSAL = "causal"


def _is_causal(padding) -> bool:
    return isinstance(padding, str) and padding == CAUSAL


class _FFTConvMixin(nn.Module):
    """Forward through fftconv's engine or, where ``algorithm`` (or ``"auto"``'s
    choice, :func:`fftconv.torch.bridge.auto_choice`) is ``"native"``, through
    PyTorch's own ``forward``: exactly the layer that was replaced, at its cost.
    Everything else is PyTorch's."""

    algorithm = ALGORITHM
    # PyTorch's attributes, set by its constructor
    weight: torch.Tensor
    bias: Optional[torch.Tensor]
    padding: Any
    stride: Tuple[int, ...]
    dilation: Tuple[int, ...]
    groups: int
    padding_mode: PaddingMode

    def __prepare_scriptable__(self):
        """``torch.jit.script`` cannot compile this module (TorchScript cannot run
        fftconv's Python dispatch or its engine): say what can."""
        raise TypeError(
            f"fftconv.torch.{type(self).__name__}: torch.jit.script cannot compile fftconv's "
            f"modules (TorchScript runs no Python); use torch.compile(model) or "
            f"torch.export.export(model, (x,)) instead (fftconv's convolution is the custom "
            f"operator torch.ops.fftconv.conv there), or torch.jit.trace(model, (x,)), or "
            f"fftconv.torch.revert(model) to script PyTorch's own layers")

    def extra_repr(self) -> str:
        return super().extra_repr() + f", algorithm={self.algorithm!r}"

    def layer(self, x, output_size=None) -> dict:
        """fftconv's layer keywords of this module for (batched) input ``x``."""
        return dict(padding=self.padding, stride=self.stride, dilation=self.dilation,
                    groups=self.groups, padding_mode=self.padding_mode,
                    **self._extra_keywords(x, output_size))

    def _extra_keywords(self, x, output_size) -> dict:
        """Keywords beyond the convolution's (transposed modules add theirs)."""
        if output_size is not None:
            raise TypeError(f"{type(self).__name__}.forward() got an unexpected keyword "
                            f"argument 'output_size'")
        return {}

    def choice(self, x, output_size=None) -> str:
        """The algorithm this module runs for input ``x``: ``"native"`` or an fftconv
        algorithm name (with the ``measure`` setting on, the first call at a shape
        times both)."""
        x = self._batched(x)
        return self._algorithm_for(x, self.layer(x, output_size))

    def _batched(self, x):
        """``x`` with a batch axis (PyTorch's modules also take one unbatched sample)."""
        return x.unsqueeze(0) if x.dim() == self.weight.dim() - 1 else x

    def _algorithm_for(self, x, layer: dict, warn: bool = False) -> str:
        reason = fallback_reason(x, self.weight, self.bias, algorithm=self.algorithm)
        if reason is None and x.dtype != self.weight.dtype:
            reason = "native"    # PyTorch's forward raises its own dtype error
        if reason is not None:
            if warn and reason != "native":
                warn_once(reason, stacklevel=5)
            return "native"
        if self.algorithm != "auto":
            return self.algorithm
        return auto_choice(x, self.weight, layer).algorithm

    def forward(self, x, output_size=None):
        """PyTorch's own ``forward`` where :meth:`choice` is ``"native"`` (a fallback
        warns once), else fftconv's engine."""
        check_kinds(f"fftconv.torch.{type(self).__name__}", x, self.weight, self.bias)
        batched = self._batched(x)
        layer = self.layer(batched, output_size)
        algorithm = self._algorithm_for(batched, layer, warn=True)
        if algorithm == "native" and _is_causal(self.padding):   # PyTorch has no causal mode
            y = _native(batched, self.weight, self.bias, layer)
            return y if batched is x else y.squeeze(0)
        if algorithm == "native":
            return super().forward(x) if output_size is None else super().forward(x, output_size)
        y = engine_conv(batched, self.weight, self.bias, layer, algorithm)
        return y if batched is x else y.squeeze(0)


class _FFTConv(_FFTConvMixin):
    """``nn.Conv*d``'s constructor, plus ``algorithm``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Ints,
                 stride: Ints = DEFAULTS.stride, padding: TorchPadding = 0,
                 dilation: Ints = DEFAULTS.dilation, groups: int = DEFAULTS.groups,
                 bias: bool = True, padding_mode: PaddingMode = DEFAULTS.padding_mode,
                 device: Any = None, dtype: Optional[torch.dtype] = None, *,
                 algorithm: str = ALGORITHM) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride,
                         0 if _is_causal(padding) else padding, dilation, groups, bias,
                         padding_mode, device, dtype)
        if _is_causal(padding):
            self.padding = CAUSAL
        self.algorithm = algorithm


class _FFTConvTranspose(_FFTConvMixin):
    """``nn.ConvTranspose*d``'s constructor, plus ``algorithm``."""

    kernel_size: Tuple[int, ...]
    output_padding: Tuple[int, ...]
    _output_padding: Any

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Ints,
                 stride: Ints = DEFAULTS.stride, padding: Ints = 0,
                 output_padding: Ints = DEFAULTS.output_padding, groups: int = DEFAULTS.groups,
                 bias: bool = True, dilation: Ints = DEFAULTS.dilation,
                 padding_mode: PaddingMode = DEFAULTS.padding_mode, device: Any = None,
                 dtype: Optional[torch.dtype] = None, *, algorithm: str = ALGORITHM) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride,
                         0 if _is_causal(padding) else padding, output_padding, groups, bias,
                         dilation, padding_mode, device, dtype)
        if _is_causal(padding):
            if any(self.output_padding):
                raise ValueError(f"{type(self).__name__}: output_padding must be 0 with "
                                 f"padding='causal' (the output is n * stride long), got "
                                 f"output_padding={output_padding!r}")
            self.padding = CAUSAL
        self.algorithm = algorithm

    def _extra_keywords(self, x, output_size) -> dict:
        if _is_causal(self.padding):
            if output_size is not None:
                raise ValueError(f"{type(self).__name__}.forward: output_size is not taken with "
                                 f"padding='causal' (the output is n * stride long), got "
                                 f"output_size={output_size!r}")
            return dict(transposed=True, output_padding=0)
        output_padding: List[int] = self._output_padding(
            x, output_size, self.stride, self.padding, self.kernel_size, len(self.kernel_size),
            self.dilation)
        return dict(transposed=True, output_padding=tuple(output_padding))


def _doc(base, transposed: bool) -> str:
    what = ("the input gradient of the matching convolution, from the same engine; "
            "``padding=\"causal\"`` stays causal instead"
            if transposed else "same constructor, parameters, initialisation and "
                               "``state_dict``")
    return (f"``nn.{base.__name__}`` computed by fftconv ({what}); ``algorithm=`` as "
            f":func:`fftconv.plan`, or ``\"native\"`` for PyTorch's own.")


class FFTConv1d(_FFTConv, nn.Conv1d):
    __doc__ = _doc(nn.Conv1d, False)


class FFTConv2d(_FFTConv, nn.Conv2d):
    __doc__ = _doc(nn.Conv2d, False)


class FFTConv3d(_FFTConv, nn.Conv3d):
    __doc__ = _doc(nn.Conv3d, False)


class FFTConvTranspose1d(_FFTConvTranspose, nn.ConvTranspose1d):
    __doc__ = _doc(nn.ConvTranspose1d, True)


class FFTConvTranspose2d(_FFTConvTranspose, nn.ConvTranspose2d):
    __doc__ = _doc(nn.ConvTranspose2d, True)


class FFTConvTranspose3d(_FFTConvTranspose, nn.ConvTranspose3d):
    __doc__ = _doc(nn.ConvTranspose3d, True)


#: PyTorch's layer class -> fftconv's
FFT_OF = {nn.Conv1d: FFTConv1d, nn.Conv2d: FFTConv2d, nn.Conv3d: FFTConv3d,
          nn.ConvTranspose1d: FFTConvTranspose1d, nn.ConvTranspose2d: FFTConvTranspose2d,
          nn.ConvTranspose3d: FFTConvTranspose3d}
TORCH_OF = {v: k for k, v in FFT_OF.items()}


def _swapped(module, table, drop=(), **attributes):
    """``module`` as an instance of ``table[type(module)]`` sharing its parameters,
    with ``attributes`` set and the attributes named in ``drop`` removed."""
    new = table[type(module)].__new__(table[type(module)])
    new.__dict__.update(module.__dict__)
    new.__dict__.update(attributes)
    for name in drop:
        new.__dict__.pop(name, None)
    return new


def _swap(model, table, drop=(), **attributes):
    if type(model) in table:
        return _swapped(model, table, drop, **attributes)
    for name, child in model.named_children():
        setattr(model, name, _swap(child, table, drop, **attributes))
    return model


def convert(model: nn.Module, example_input=None, *, algorithm: str = "auto") -> nn.Module:
    """Swap every ``nn.Conv{1,2,3}d`` / ``nn.ConvTranspose{1,2,3}d`` in ``model`` for
    fftconv's module of the same kind, sharing the same parameters: outputs and
    ``state_dict`` are unchanged.  Submodules are swapped in place; the result
    is returned (a new object when ``model`` itself is a convolution).

    With ``example_input`` (a tensor, or a tuple of the model's positional
    arguments), the model runs once on it, in eval mode and without touching
    the global random state, and every swapped ``"auto"`` layer is timed at
    the input it saw, natively and with fftconv's measured best algorithm
    (:func:`fftconv.torch.autoselect.measure_choice`, persisted); its
    ``algorithm`` becomes the faster one, for every later input shape too.
    """
    if example_input is not None and not isinstance(example_input, (torch.Tensor, tuple)):
        raise TypeError("fftconv.torch.convert: example_input must be a tensor or a tuple of "
                        f"the model's positional arguments, got {type(example_input).__name__}")
    model = _swap(model, FFT_OF, algorithm=algorithm)
    if example_input is not None:
        _measure_layers(model, example_input)
    return model


def _inputs_seen(model: nn.Module, example_input) -> dict:
    """``{module: (batched input, output_size)}`` for every ``"auto"`` fftconv layer,
    from one forward pass of ``model`` in eval mode that leaves no trace (batch-norm
    statistics, the random state and the training flags are as before)."""
    seen: dict = {}

    def record(module, args, kwargs):
        output_size = args[1] if len(args) > 1 else kwargs.get("output_size")
        seen.setdefault(module, (module._batched(args[0].detach()), output_size))
    hooks = [m.register_forward_pre_hook(record, with_kwargs=True) for m in model.modules()
             if isinstance(m, _FFTConvMixin) and m.algorithm == "auto"]
    training = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad(), torch.random.fork_rng():
            model(*example_input) if isinstance(example_input, tuple) else model(example_input)
    finally:
        for hook in hooks:
            hook.remove()
        for m, flag in training.items():
            m.training = flag
    return seen


def _measure_layers(model: nn.Module, example_input):
    """Set each ``"auto"`` fftconv layer's ``algorithm`` by measurement at the input
    it sees when ``model`` runs on ``example_input``."""
    for module, (x, output_size) in _inputs_seen(model, example_input).items():
        if (fallback_reason(x, module.weight, module.bias) is not None
                or x.dtype != module.weight.dtype):
            continue     # runs natively whatever the verdict
        module.algorithm = measure(x, module.weight, module.layer(x, output_size)).algorithm


def revert(model: nn.Module) -> nn.Module:
    """The inverse of :func:`convert`: fftconv's modules back to PyTorch's (a module
    with ``padding="causal"``, which PyTorch's layers do not have, is a ``ValueError``)."""
    causal = [name or type(model).__name__ for name, m in model.named_modules()
              if isinstance(m, _FFTConvMixin) and _is_causal(m.padding)]
    if causal:
        raise ValueError(f"fftconv.torch.revert: PyTorch's layers have no padding='causal', "
                         f"got it in {', '.join(causal)}; pad with F.pad(x, (d*(k-1), 0)) "
                         f"before a padding=0 layer instead")
    return _swap(model, TORCH_OF, drop=("algorithm",))
