"""PyTorch tensors, on the CPU or a CUDA device: ``torch.fft`` and
``torch.matmul``, written into destinations with ``out=`` or ``copy_``.

A tensor that requires grad never gets here (``fftconv.checks`` refuses it:
``fftconv.torch`` is the differentiable entry point); the engines work on
plain tensors, outside autograd (``torch.no_grad`` is not needed: nothing
requires grad).
"""
from __future__ import annotations

import sys
from typing import Any, Optional

import numpy as np

from .base import Arrays


class TorchArrays(Arrays):
    """PyTorch tensors on one device."""

    name = "torch"
    fft_into = True
    strided = True

    def __init__(self, device: Any):
        import array_api_compat.torch as xp
        import torch
        super().__init__(xp, torch.device(device))
        self.torch = torch
        self.memory_errors = (MemoryError, torch.OutOfMemoryError)

    @property
    def host(self) -> bool:  # type: ignore[override]
        """CPU tensors are read without a synchronisation; CUDA tensors are not."""
        return self.device.type == "cpu"

    @classmethod
    def owns(cls, a) -> bool:
        torch = sys.modules.get("torch")
        return torch is not None and isinstance(a, torch.Tensor)

    @classmethod
    def key_of(cls, a) -> tuple:
        return ("torch", str(a.device))

    @classmethod
    def for_array(cls, a) -> "TorchArrays":
        return cls(a.device)

    @property
    def key(self) -> tuple:
        return ("torch", str(self.device))

    def describe(self) -> str:
        return f"a torch tensor on {self.device}"

    def numpy_dtype(self, native) -> np.dtype:
        if native == self.torch.bfloat16:
            raise TypeError("dtype torch.bfloat16 is not supported: cast to float32 "
                            "(fftconv.torch runs bfloat16 layers with PyTorch's own "
                            "convolution)")
        return super().numpy_dtype(native)

    def astype(self, a, dtype, copy: bool = False):
        native = self.dtype(dtype)
        if a.dtype == native and not copy:
            return a
        return a.to(native, copy=True)

    def asarray(self, a, dtype=None):
        native = None if dtype is None else self.dtype(dtype)
        if isinstance(a, np.ndarray):
            return self.torch.as_tensor(a, dtype=native, device=self.device)
        return self.xp.asarray(a, dtype=native, device=self.device)

    def _new_mesh(self, nested):
        return self.torch.as_tensor(np.asarray(nested, dtype=np.int64), device=self.device)

    def _new_index(self, values):
        return self.torch.as_tensor(np.asarray(values, dtype=np.int64), device=self.device)

    def copy(self, a):
        return a.clone(memory_format=self.torch.contiguous_format)

    def contiguous(self, a):
        return a.contiguous()

    def to_host(self, a) -> np.ndarray:
        return a.detach().cpu().numpy()

    def flip(self, a, axes):
        return self.torch.flip(a, dims=tuple(axes)) if axes else a

    def as_strided(self, a, shape, strides):
        return a.as_strided(tuple(shape), tuple(strides), a.storage_offset())

    def strides(self, a):
        return tuple(a.stride())

    def copy_into(self, out, a) -> None:
        if hasattr(a, "shape"):
            out.copy_(a)
        else:
            out.fill_(a)

    def matmul(self, a, b, out=None):
        if out is not None and out.is_contiguous():
            return self.torch.matmul(a, b, out=out)
        return self._into(self.torch.matmul(a, b), out)

    def multiply(self, a, b, out=None):
        return self.torch.mul(a, b, out=out) if out is not None else self.torch.mul(a, b)

    def conj(self, a, out=None):
        if out is None:
            return self.torch.conj_physical(a)
        return self.torch.conj_physical(a, out=out)

    def ldexp(self, a, e, out=None):
        return super().ldexp(a, e, out)

    def magnitude(self, a):
        return (self.torch.view_as_real(a) if a.is_complex() else a).abs().amax()

    def equal(self, a, b) -> bool:
        return a.shape == b.shape and bool(self.torch.equal(a, b))

    def to_float(self, a) -> float:
        return float(a)

    def rfftn(self, a, axes, threads=1, out=None):
        return self._forward_fft(self.torch.fft.rfftn, a, axes, out)

    def fftn(self, a, axes, threads=1, out=None):
        return self._forward_fft(self.torch.fft.fftn, a, axes, out)

    @staticmethod
    def _forward_fft(fft, a, axes, out):
        """``fft`` over ``axes``, written into ``out`` when it is contiguous."""
        if out is not None and out.is_contiguous():
            return fft(a, dim=tuple(axes), out=out)
        return fft(a, dim=tuple(axes))

    def irfftn(self, a, shape, axes, threads=1):
        return self.torch.fft.irfftn(a, s=tuple(shape), dim=tuple(axes))

    def ifftn(self, a, axes, threads=1):
        return self.torch.fft.ifftn(a, dim=tuple(axes))

    def device_memory(self) -> Optional[int]:
        """Free CUDA memory plus what PyTorch's caching allocator holds unused;
        ``None`` on the CPU (host memory)."""
        if self.device.type != "cuda":
            return None
        free, _ = self.torch.cuda.mem_get_info(self.device)
        cached = (self.torch.cuda.memory_reserved(self.device)
                  - self.torch.cuda.memory_allocated(self.device))
        return int(free) + int(cached)

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)
