"""CuPy: device memory, cuFFT (``cupy.fft``, with CuPy's plan cache) and cuBLAS
(``cupy.matmul`` over frequency-major blocks).  The numpy-API code is
:class:`~fftconv.backends.numpy_arrays.NumpyLike`'s; this module adds the
device, the FFTs and the device's memory."""
from __future__ import annotations

import contextlib
import sys
from typing import Optional

from .numpy_arrays import NumpyLike


class CupyArrays(NumpyLike):
    """CuPy arrays on one GPU."""

    name = "cupy"
    host = False

    def __init__(self, device_id: int):
        import array_api_compat.cupy as xp
        import cupy
        super().__init__(xp, cupy, cupy.cuda.Device(device_id))
        self.memory_errors = (MemoryError, cupy.cuda.memory.OutOfMemoryError)

    @classmethod
    def owns(cls, a) -> bool:
        cupy = sys.modules.get("cupy")
        return cupy is not None and isinstance(a, cupy.ndarray)

    @classmethod
    def key_of(cls, a) -> tuple:
        return ("cupy", a.device.id)

    @classmethod
    def for_array(cls, a) -> "CupyArrays":
        return cls(a.device.id)

    @property
    def key(self) -> tuple:
        return ("cupy", self.device.id)

    def describe(self) -> str:
        return f"a CuPy array on cuda:{self.device.id}"

    def empty(self, shape, dtype):
        with self.device:
            return super().empty(shape, dtype)

    def zeros(self, shape, dtype):
        with self.device:
            return super().zeros(shape, dtype)

    def asarray(self, a, dtype=None):
        with self.device:
            return super().asarray(a, dtype)

    def _new_index(self, values):
        with self.device:
            return super()._new_index(values)

    def _new_mesh(self, nested):
        with self.device:
            return super()._new_mesh(nested)

    @contextlib.contextmanager
    def quiet(self):
        """A pass runs with this backend's GPU current: its kernels, cuFFT plans and
        temporaries land there whatever device CuPy had current."""
        with super().quiet(), self.device:
            yield

    def to_host(self, a):
        return a.get()

    def magnitude(self, a):
        parts = (a.real, a.imag) if a.dtype.kind == "c" else (a,)
        lib = self.lib
        return lib.max(lib.stack([lib.max(lib.abs(p)) for p in parts]))

    def to_float(self, a) -> float:
        return float(a.get())

    def rfftn(self, a, axes, threads=1, out=None):
        return self.lib.fft.rfftn(a, axes=axes)

    def fftn(self, a, axes, threads=1, out=None):
        return self.lib.fft.fftn(a, axes=axes)

    def irfftn(self, a, shape, axes, threads=1):
        return self.lib.fft.irfftn(a, s=shape, axes=axes)

    def ifftn(self, a, axes, threads=1):
        return self.lib.fft.ifftn(a, axes=axes)

    def device_memory(self) -> Optional[int]:
        """Free device memory plus what CuPy's pool holds unused."""
        with self.device:
            free, _ = self.lib.cuda.runtime.memGetInfo()
            return int(free) + int(self.lib.get_default_memory_pool().free_bytes())

    def synchronize(self) -> None:
        self.device.synchronize()
