"""Drop-in modules: ``nn.Conv*d`` / ``nn.ConvTranspose*d`` computed by fftconv."""
from __future__ import annotations

import torch.nn as nn

from .bridge import conv


class _FFTConvMixin:
    """Forward through :func:`fftconv.torch.conv`; everything else is PyTorch's."""

    algorithm = "auto"

    def extra_repr(self) -> str:
        return super().extra_repr() + f", algorithm={self.algorithm!r}"

    def _layer(self) -> dict:
        return dict(padding=self.padding, stride=self.stride, dilation=self.dilation,
                    groups=self.groups, padding_mode=self.padding_mode,
                    algorithm=self.algorithm)


def _conv_class(base):
    class FFTConv(_FFTConvMixin, base):
        __doc__ = (f"``nn.{base.__name__}`` computed by fftconv (``algorithm=`` as "
                   f":func:`fftconv.plan`, or ``\"native\"``); same constructor, parameters, "
                   f"initialisation and ``state_dict``.")

        def __init__(self, *args, algorithm="auto", **kwargs):
            super().__init__(*args, **kwargs)
            self.algorithm = algorithm

        def forward(self, x):
            return conv(x, self.weight, self.bias, **self._layer())
    FFTConv.__name__ = FFTConv.__qualname__ = "FFT" + base.__name__
    return FFTConv


def _transposed_class(base, nd):
    class FFTConvTranspose(_FFTConvMixin, base):
        __doc__ = (f"``nn.{base.__name__}`` computed by fftconv (the input gradient of the "
                   f"matching convolution, from the same engine).")

        def __init__(self, *args, algorithm="auto", **kwargs):
            super().__init__(*args, **kwargs)
            self.algorithm = algorithm

        def forward(self, x, output_size=None):
            output_padding = self._output_padding(x, output_size, self.stride, self.padding,
                                                  self.kernel_size, nd, self.dilation)
            return conv(x, self.weight, self.bias, transposed=True,
                        output_padding=tuple(output_padding), **self._layer())
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


def convert(model: nn.Module, algorithm: str = "auto") -> nn.Module:
    """Swap every ``nn.Conv{1,2,3}d`` / ``nn.ConvTranspose{1,2,3}d`` in ``model`` (in
    place, and returned) for fftconv's module of the same kind, sharing the same
    parameters: outputs and ``state_dict`` are unchanged."""
    return _swap(model, FFT_OF, algorithm=algorithm)


def revert(model: nn.Module) -> nn.Module:
    """The inverse of :func:`convert`: fftconv's modules back to PyTorch's."""
    model = _swap(model, TORCH_OF)
    for m in model.modules():
        m.__dict__.pop("algorithm", None)
    return model
