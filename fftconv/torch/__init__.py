"""fftconv in PyTorch models: an autograd-aware ``conv`` and drop-in modules.

``pip install "fftconv[torch]"``; this subpackage imports torch, the core never
does.

>>> import fftconv.torch as ft                                   # doctest: +SKIP
>>> y = ft.conv(x, w, b, padding="same", algorithm="auto")        # doctest: +SKIP
>>> m = ft.FFTConv2d(16, 32, 15, padding="same")                  # doctest: +SKIP
>>> model = ft.convert(model)      # nn.Conv*, nn.ConvTranspose* swapped  # doctest: +SKIP

* :func:`conv` is a ``torch.autograd.Function`` on the pullbacks of
  :func:`fftconv.vjp`: the forward pass keeps only the pullback (the spectrum
  of ``x`` and a reference to the shared weight spectrum), the backward pass
  computes ``dx`` and ``dw`` only where ``needs_input_grad`` asks, and a
  layer used twice in one graph gets one pullback per use.
* CPU tensors are handed to numpy without copies where their layout allows
  (pyFFTW is the faster library there); CUDA tensors are handed to the engine as
  tensors and it runs on their GPU (``torch.fft``, ``torch.matmul``): nothing
  crosses to the host, and the results are tensors on the same device.
* ``"auto"`` keeps PyTorch's own convolution (cuDNN on a GPU) among its
  candidates; on CUDA it measures both with CUDA events at a layer's first
  eager call (:mod:`fftconv.torch.autoselect`).
* Tensors on other devices, dtypes the engine does not have (bfloat16; float16
  on CUDA), an algorithm the device's backend cannot run, ``algorithm="native"``
  and double backward run PyTorch's own convolution with the same semantics
  (:func:`native_conv`); a once-per-process warning says so for the cases the
  caller did not ask for.  None is an error.
* Under ``torch.compile``, ``torch.export`` and ``torch.jit.trace`` the engine
  runs as the custom operator ``torch.ops.fftconv.conv`` (:mod:`fftconv.torch.ops`),
  and ``"auto"`` chooses at trace time from the shapes; ``torch.jit.script``
  cannot compile the modules and says so.
* The modules subclass ``nn.Conv{1,2,3}d`` / ``nn.ConvTranspose{1,2,3}d``:
  constructor, parameters, initialisation, ``state_dict``, ``padding_mode`` and
  ``repr`` are PyTorch's (plus ``algorithm``).
"""
from .bridge import FallbackWarning, conv, native_conv, to_numpy
from .modules import (FFTConv1d, FFTConv2d, FFTConv3d, FFTConvTranspose1d, FFTConvTranspose2d,
                      FFTConvTranspose3d, convert, revert)

__all__ = ["conv", "native_conv", "to_numpy", "FallbackWarning", "FFTConv1d", "FFTConv2d",
           "FFTConv3d", "FFTConvTranspose1d", "FFTConvTranspose2d", "FFTConvTranspose3d",
           "convert", "revert"]
