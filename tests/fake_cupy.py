"""A stand-in for CuPy made of numpy, so that the CuPy backend's own code
(``fftconv.backends.cupy_arrays``: its device context, FFTs, memory query and
magnitude) runs in CI without a GPU.  The arithmetic is numpy's, which CuPy
repeats; what this checks is that the backend calls only what CuPy has and
keeps everything an array of its own library."""
import sys
import types

import numpy as np


class Device:
    """``cupy.cuda.Device``: a context manager with an id."""

    def __init__(self, device_id=0):
        self.id = device_id

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def synchronize(self):
        pass

    def __repr__(self):
        return f"<CUDA Device {self.id}>"


class ndarray(np.ndarray):
    """A numpy array that the stand-in calls its own, on device 0."""

    @property
    def device(self):
        return Device(0)

    def get(self):
        return np.asarray(self).view(np.ndarray)


def _ours(value):
    if isinstance(value, np.ndarray) and not isinstance(value, ndarray):
        return value.view(ndarray)
    return value


def _wrapped(fn):
    def call(*args, **kwargs):
        return _ours(fn(*args, **kwargs))
    call.__name__ = getattr(fn, "__name__", "call")
    return call


class _Module(types.ModuleType):
    """numpy's functions, returning the stand-in's arrays."""

    def __init__(self, name, source):
        super().__init__(name)
        self._source = source

    def __getattr__(self, name):
        value = getattr(self._source, name)
        return _wrapped(value) if callable(value) and not isinstance(value, type) else value


def install(setitem=None):
    """Put the stand-in in ``sys.modules`` as ``cupy`` (``setitem(mapping, key,
    value)``: pytest's ``monkeypatch.setitem``, to undo it); returns it."""
    cupy = _Module("cupy", np)
    cupy.__version__ = "13.0.0"
    cupy.ndarray = ndarray
    cupy.fft = _Module("cupy.fft", np.fft)
    cupy.linalg = _Module("cupy.linalg", np.linalg)
    cupy.lib = types.SimpleNamespace(stride_tricks=_Module("cupy.lib.stride_tricks",
                                                           np.lib.stride_tricks))
    cuda = types.ModuleType("cupy.cuda")
    device = types.ModuleType("cupy.cuda.device")
    device.Device = Device
    cuda.device, cuda.Device = device, Device
    cuda.memory = types.SimpleNamespace(OutOfMemoryError=type("OutOfMemoryError",
                                                              (MemoryError,), {}))
    cuda.runtime = types.SimpleNamespace(memGetInfo=lambda: (1 << 34, 1 << 35))
    cupy.cuda = cuda
    cupy.get_default_memory_pool = lambda: types.SimpleNamespace(free_bytes=lambda: 1 << 20)
    cupy.asarray = lambda a, dtype=None: _ours(np.asarray(a, dtype=dtype))
    for name, module in [("cupy", cupy), ("cupy.fft", cupy.fft), ("cupy.linalg", cupy.linalg),
                         ("cupy.cuda", cuda), ("cupy.cuda.device", device)]:
        (setitem or dict.__setitem__)(sys.modules, name, module)
    return cupy


def use(monkeypatch):
    """Install the stand-in for one test (undone after it) and make fftconv's CuPy
    backend claim its arrays before numpy's does; returns the stand-in."""
    from fftconv import backends
    for name in [n for n in sys.modules if n == "array_api_compat.cupy"
                 or n.startswith("array_api_compat.cupy.")]:
        monkeypatch.delitem(sys.modules, name)
    cupy = install(monkeypatch.setitem)
    monkeypatch.setattr(backends, "BACKENDS", (backends.CupyArrays,) + tuple(
        b for b in backends.BACKENDS if b is not backends.CupyArrays))
    monkeypatch.setattr(backends, "_made", {})
    return cupy
