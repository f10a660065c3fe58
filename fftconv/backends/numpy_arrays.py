"""numpy: host memory, ``out=`` destinations everywhere, FFTs by ``scipy.fft``
(``fftconv.transforms`` plans FFTW on these buffers instead when pyFFTW is
installed).

:class:`NumpyLike` is written against numpy's own API, which CuPy repeats, so
the CuPy backend is this class with another library and its device; every
line of it runs in CI on numpy.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np
import scipy.fft

from .base import Arrays


class NumpyLike(Arrays):
    """A library with numpy's API (``lib``: numpy or cupy) and its compat namespace."""

    strided = True

    def __init__(self, xp: Any, lib: Any, device: Any = None):
        super().__init__(xp, device)
        self.lib = lib

    def dtype(self, dtype) -> Any:
        return np.dtype(dtype)

    def numpy_dtype(self, native) -> np.dtype:
        return np.dtype(native)

    def astype(self, a, dtype, copy: bool = False):
        return a.astype(dtype, copy=copy)

    def empty(self, shape, dtype):
        return self.lib.empty(tuple(shape), dtype=dtype)

    def zeros(self, shape, dtype):
        return self.lib.zeros(tuple(shape), dtype=dtype)

    def empty_like(self, a):
        return self.lib.empty_like(a)

    def asarray(self, a, dtype=None):
        return self.lib.asarray(a, dtype=dtype)

    def _new_mesh(self, nested):
        return self.lib.asarray(np.asarray(nested, dtype=np.intp))

    def _new_index(self, values):
        return self.lib.asarray(np.asarray(values, dtype=np.intp))

    def copy(self, a):
        return self.lib.array(a, copy=True, order="C")

    def contiguous(self, a):
        return self.lib.ascontiguousarray(a)

    def reshape(self, a, shape):
        return a.reshape(tuple(shape))

    def permute(self, a, axes):
        return a.transpose(tuple(axes))

    def moveaxis(self, a, source, destination):
        return self.lib.moveaxis(a, source, destination)

    def flip(self, a, axes):
        index = [slice(None)] * a.ndim
        for axis in axes:
            index[axis] = slice(None, None, -1)
        return a[tuple(index)]

    def take(self, a, indices, axis):
        return self.lib.take(a, self.index(indices), axis=axis)

    def as_strided(self, a, shape, strides):
        size = a.dtype.itemsize
        return self.lib.lib.stride_tricks.as_strided(
            a, shape=tuple(shape), strides=tuple(s * size for s in strides))

    def strides(self, a):
        size = a.dtype.itemsize
        return tuple(s // size for s in a.strides)

    def copy_into(self, out, a) -> None:
        self.lib.copyto(out, a)

    def matmul(self, a, b, out=None):
        return self.lib.matmul(a, b, out=out)

    def multiply(self, a, b, out=None):
        return self.lib.multiply(a, b, out=out)

    def conj(self, a, out=None):
        return self.lib.conjugate(a, out=out)

    def ldexp(self, a, e, out=None):
        if not isinstance(e, int):
            e = e.astype(np.int32)
        if a.dtype.kind == "c":
            out = self.lib.empty_like(a) if out is None else out
            self.lib.ldexp(a.real, e, out=out.real)
            self.lib.ldexp(a.imag, e, out=out.imag)
            return out
        return self.lib.ldexp(a, e, out=out)

    def sum(self, a, axes, dtype=None):
        return a.sum(axis=tuple(axes), dtype=dtype)

    def mean(self, a, axis):
        return a.mean(axis=axis)

    def magnitude(self, a):
        parts = (a.real, a.imag) if a.dtype.kind == "c" else (a,)
        return max(max(p.max(), -p.min()) for p in parts)

    def equal(self, a, b) -> bool:
        return a.shape == b.shape and bool(self.lib.array_equal(a, b))


class NumpyArrays(NumpyLike):
    """numpy arrays, in host memory."""

    name = "numpy"
    fftw = True
    compiled = True

    def __init__(self):
        import array_api_compat.numpy as xp
        super().__init__(xp, np)

    @classmethod
    def owns(cls, a) -> bool:
        return isinstance(a, (np.ndarray, np.generic))

    @classmethod
    def key_of(cls, a) -> tuple:
        return ("numpy",)

    @classmethod
    def for_array(cls, a) -> "NumpyArrays":
        return cls()

    @property
    def key(self) -> tuple:
        return ("numpy",)

    def describe(self) -> str:
        return "a numpy array"

    def to_host(self, a) -> np.ndarray:
        return a

    def rfftn(self, a, axes, threads=1, out=None):
        return scipy.fft.rfftn(a, axes=axes, workers=threads)

    def fftn(self, a, axes, threads=1, out=None):
        return scipy.fft.fftn(a, axes=axes, workers=threads)

    def irfftn(self, a, shape: Tuple[int, ...], axes, threads=1):
        return scipy.fft.irfftn(a, s=shape, axes=axes, workers=threads)

    def ifftn(self, a, axes, threads=1):
        return scipy.fft.ifftn(a, axes=axes, workers=threads)

    def device_memory(self) -> Optional[int]:
        return None
