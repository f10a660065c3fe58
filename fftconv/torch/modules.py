"""Drop-in modules: ``nn.Conv*d`` / ``nn.ConvTranspose*d`` computed by fftconv."""
from __future__ import annotations

import torch
import torch.nn as nn

from ..checks import dtypes_for
from .bridge import auto_choice, engine_conv, fallback_reason, native_conv, warn_once
from .selection import measure_choice


class _FFTConvMixin:
    """Forward through fftconv's engine or, where ``algorithm`` (or ``"auto"``'s
    choice, :func:`fftconv.torch.bridge.auto_choice`) is ``"native"``, through
    PyTorch's own ``forward``: exactly the layer that was replaced, at its cost.
    Everything else is PyTorch's."""

    algorithm = "auto"

    def extra_repr(self) -> str:
        return super().extra_repr() + f", algorithm={self.algorithm!r}"

    def layer(self, x, output_size=None) -> dict:
        """fftconv's layer keywords of this module for input ``x``."""
        return dict(padding=self.padding, stride=self.stride, dilation=self.dilation,
                    groups=self.groups, padding_mode=self.padding_mode,
                    **self._transposed_keywords(x, output_size))

    def _transposed_keywords(self, x, output_size) -> dict:
        if output_size is not None:
            raise TypeError(f"{type(self).__name__}.forward() got an unexpected keyword "
                            f"argument 'output_size'")
        return {}

    def choice(self, x, output_size=None) -> str:
        """The algorithm this module runs for input ``x``: ``"native"`` or an
        fftconv algorithm name."""
        return self._algorithm_for(x, self.layer(x, output_size))

    def _algorithm_for(self, x, layer: dict, warn: bool = False) -> str:
        reason = fallback_reason(x, self.weight, self.bias, algorithm=self.algorithm)
        if reason is not None:
            if warn and reason != "native":
                warn_once(reason)
            return "native"
        if self.algorithm != "auto":
            return self.algorithm
        return auto_choice(x, self.weight, layer).algorithm

    def forward(self, x, output_size=None):
        """PyTorch's own ``forward`` where :meth:`choice` is ``"native"`` (a fallback
        warns once), else fftconv's engine."""
        layer = self.layer(x, output_size)
        algorithm = self._algorithm_for(x, layer, warn=True)
        if algorithm == "native":
            return super().forward(x) if output_size is None else super().forward(x, output_size)
        return engine_conv(x, self.weight, self.bias, layer, algorithm)


def _conv_class(base):
    class FFTConv(_FFTConvMixin, base):
        __doc__ = (f"``nn.{base.__name__}`` computed by fftconv (``algorithm=`` as "
                   f":func:`fftconv.plan`, or ``\"native\"``); same constructor, parameters, "
                   f"initialisation and ``state_dict``.")

        def __init__(self, *args, algorithm="auto", **kwargs):
            super().__init__(*args, **kwargs)
            self.algorithm = algorithm

    FFTConv.__name__ = FFTConv.__qualname__ = "FFT" + base.__name__
    return FFTConv


def _transposed_class(base, nd):
    class FFTConvTranspose(_FFTConvMixin, base):
        __doc__ = (f"``nn.{base.__name__}`` computed by fftconv (the input gradient of the "
                   f"matching convolution, from the same engine).")

        def __init__(self, *args, algorithm="auto", **kwargs):
            super().__init__(*args, **kwargs)
            self.algorithm = algorithm

        def _transposed_keywords(self, x, output_size) -> dict:
            output_padding = self._output_padding(x, output_size, self.stride, self.padding,
                                                  self.kernel_size, nd, self.dilation)
            return dict(transposed=True, output_padding=tuple(output_padding))
    FFTConvTranspose.__name__ = FFTConvTranspose.__qualname__ = "FFT" + base.__name__
    return FFTConvTranspose


FFTConv1d, FFTConv2d, FFTConv3d = (_conv_class(c) for c in (nn.Conv1d, nn.Conv2d, nn.Conv3d))
FFTConvTranspose1d, FFTConvTranspose2d, FFTConvTranspose3d = (
    _transposed_class(c, nd) for nd, c in
    ((1, nn.ConvTranspose1d), (2, nn.ConvTranspose2d), (3, nn.ConvTranspose3d)))

#: PyTorch's layer class -> fftconv's
FFT_OF = {nn.Conv1d: FFTConv1d, nn.Conv2d: FFTConv2d, nn.Conv3d: FFTConv3d,
          nn.ConvTranspose1d: FFTConvTranspose1d, nn.ConvTranspose2d: FFTConvTranspose2d,
          nn.ConvTranspose3d: FFTConvTranspose3d}
TORCH_OF = {v: k for k, v in FFT_OF.items()}


def _swapped(module, table, **attributes):
    """``module`` as an instance of ``table[type(module)]`` sharing its parameters."""
    new = table[type(module)].__new__(table[type(module)])
    new.__dict__.update(module.__dict__)
    new.__dict__.update(attributes)
    return new


def _swap(model, table, **attributes):
    if type(model) in table:
        return _swapped(model, table, **attributes)
    for name, child in model.named_children():
        setattr(model, name, _swap(child, table, **attributes))
    return model


def convert(model: nn.Module, example_input=None, *, algorithm: str = "auto") -> nn.Module:
    """Swap every ``nn.Conv{1,2,3}d`` / ``nn.ConvTranspose{1,2,3}d`` in ``model`` (in
    place, and returned) for fftconv's module of the same kind, sharing the same
    parameters: outputs and ``state_dict`` are unchanged.

    With ``example_input`` (a tensor, or a tuple of the model's positional
    arguments), the model runs once on it and every swapped ``"auto"`` layer
    is timed at the input shape it saw, natively and with fftconv's measured
    best algorithm (:func:`fftconv.torch.selection.measure_choice`, persisted);
    its ``algorithm`` becomes the faster one.
    """
    model = _swap(model, FFT_OF, algorithm=algorithm)
    if example_input is not None:
        _measure_layers(model, example_input)
    return model


def _measure_layers(model: nn.Module, example_input):
    """Set each ``"auto"`` fftconv layer's ``algorithm`` by measurement at the input
    it sees when ``model`` runs on ``example_input``."""
    seen = {}

    def record(module, args):
        seen.setdefault(module, (args[0].detach(), args[1] if len(args) > 1 else None))
    hooks = [m.register_forward_pre_hook(record) for m in model.modules()
             if isinstance(m, _FFTConvMixin) and m.algorithm == "auto"]
    try:
        with torch.no_grad():
            model(*example_input) if isinstance(example_input, tuple) else model(example_input)
    finally:
        for hook in hooks:
            hook.remove()
    for module, (x, output_size) in seen.items():
        if fallback_reason(x, module.weight, module.bias) is not None:
            continue
        layer = module.layer(x, output_size)
        compute = dtypes_for("fftconv.torch.convert", torch.empty(0, dtype=x.dtype).numpy())[0]
        module.algorithm = measure_choice(
            tuple(x.shape), tuple(module.weight.shape), compute, layer,
            native=lambda *t, layer=layer: native_conv(*t, **layer),
            fft=lambda *t, algorithm, layer=layer: engine_conv(*t, layer, algorithm)).algorithm


def revert(model: nn.Module) -> nn.Module:
    """The inverse of :func:`convert`: fftconv's modules back to PyTorch's."""
    model = _swap(model, TORCH_OF)
    for m in model.modules():
        m.__dict__.pop("algorithm", None)
    return model
