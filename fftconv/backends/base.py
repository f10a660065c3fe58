"""The generic backend: any array library that implements the array API standard.

:class:`Arrays` is what every module of fftconv calls on operands instead of
numpy, written against the standard alone (``array_api_compat`` wraps numpy,
CuPy and PyTorch into it).  A library with more than the standard (``out=``
destinations, ``as_strided``, its own FFT plans) subclasses it and overrides
the methods where that saves copies; the subclasses are the only code that
knows which library it runs on.

Dtypes: fftconv plans in numpy dtypes (``np.dtype``); :meth:`Arrays.dtype`
maps one to the library's own and :meth:`Arrays.numpy_dtype` back.
"""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence, Tuple, Type

import numpy as np

#: The dtypes fftconv maps between numpy and a library, by their standard names.
DTYPE_NAMES = ("float16", "float32", "float64", "complex64", "complex128", "int8", "int16",
               "int32", "int64", "uint8", "uint16", "uint32", "uint64", "bool")


#: Index arrays kept per backend (:meth:`Arrays.index`).
INDEX_CACHE = 512


class Arrays:
    """One array library on one device: creation, products, layout, reductions,
    FFTs and memory, for arrays of that library only.

    ``host``: values are read without a device synchronisation (numpy, CPU
    tensors), so a pass may branch on them (``fftconv.scaling``) and split
    work over threads.  ``fftw``: the buffers are numpy arrays FFTW can plan on.
    ``strided``: arrays can be viewed with explicit strides (:meth:`as_strided`),
    which the direct algorithm needs.  ``compiled``: numba's kernels can read
    them (numpy's host arrays).
    """

    name = "array API"
    host = True
    fftw = False
    strided = False
    #: numba's compiled kernels (``fftconv.compiled``) can read these arrays.
    compiled = False
    #: The library's forward FFTs write into a given array (:meth:`rfftn`'s ``out``).
    fft_into = False
    #: Exceptions the library raises when the device runs out of memory.
    memory_errors: Tuple[Type[BaseException], ...] = (MemoryError,)

    def __init__(self, xp: Any, device: Any = None):
        self.xp, self.device = xp, device
        self._native = {np.dtype(n): getattr(xp, n) for n in DTYPE_NAMES if hasattr(xp, n)}
        self._numpy = {v: k for k, v in self._native.items()}
        self._indices: dict = {}

    # -- recognising arrays -------------------------------------------------------------
    @classmethod
    def owns(cls, a) -> bool:
        """Whether ``a`` is an array of this backend's library."""
        return hasattr(a, "__array_namespace__") and hasattr(a, "shape")

    @classmethod
    def key_of(cls, a) -> tuple:
        """What tells two arrays' backends apart: library and device."""
        return (cls.name, type(a).__module__, str(getattr(a, "device", None)))

    @classmethod
    def for_array(cls, a) -> "Arrays":
        """The backend of ``a`` (``owns(a)`` is true)."""
        return cls(a.__array_namespace__(), getattr(a, "device", None))

    @property
    def key(self) -> tuple:
        """Library and device: part of every engine cache key."""
        return (self.name, getattr(self.xp, "__name__", ""), str(self.device))

    def describe(self) -> str:
        """``"a numpy array"``, ``"a torch tensor on cuda:0"``, ... for messages and reprs."""
        where = "" if self.device is None else f" on {self.device}"
        return f"an array of {getattr(self.xp, '__name__', self.name)}{where}"

    def __repr__(self) -> str:
        return f"<fftconv backend: {self.describe()}>"

    # -- dtypes ---------------------------------------------------------------------
    def dtype(self, dtype) -> Any:
        """The library's dtype for numpy ``dtype``."""
        return self._native[np.dtype(dtype)]

    def numpy_dtype(self, native) -> np.dtype:
        """The numpy dtype of the library's ``native`` dtype; a ``TypeError`` for one
        numpy has no equal of (bfloat16, say)."""
        try:
            return self._numpy[native]
        except KeyError:
            raise TypeError(f"dtype {native} is not supported: cast to float32 or "
                            f"float64") from None

    def astype(self, a, dtype, copy: bool = False):
        """``a`` in numpy ``dtype`` (``a`` itself when it already is, unless ``copy``)."""
        if not copy and self.numpy_dtype(a.dtype) == np.dtype(dtype):
            return a
        return self.xp.astype(a, self.dtype(dtype), copy=True)

    # -- creation ---------------------------------------------------------------------
    def empty(self, shape: Sequence[int], dtype):
        return self.xp.empty(tuple(shape), dtype=self.dtype(dtype), device=self.device)

    def zeros(self, shape: Sequence[int], dtype):
        return self.xp.zeros(tuple(shape), dtype=self.dtype(dtype), device=self.device)

    def empty_like(self, a):
        return self.xp.empty(a.shape, dtype=a.dtype, device=self.device)

    def asarray(self, a, dtype=None):
        """``a`` (host data, a numpy array, an array of this library) on this device."""
        if isinstance(a, np.ndarray) and not self.owns(a):
            a = a.tolist() if a.ndim else a.item()
        native = None if dtype is None else self.dtype(dtype)
        return self.xp.asarray(a, dtype=native, device=self.device)

    def index(self, values) -> Any:
        """Integer indices (host values) as an index array on this device, for
        :meth:`take`; kept per set of values, so a geometry's gathers upload their
        indices to a device once."""
        key = tuple(int(v) for v in values)
        return self.constant(key, lambda: self._new_index(key))

    def _new_index(self, values: tuple) -> Any:
        return self.asarray(list(values), np.int64)

    def copy(self, a):
        """A new array with ``a``'s values, in C order."""
        return self.xp.asarray(a, copy=True)

    def contiguous(self, a):
        """``a`` in C order (a copy unless it already is)."""
        return self.copy(a)

    def to_host(self, a) -> np.ndarray:
        """A numpy copy (tests and reprs only: never inside a pass)."""
        return np.asarray(a)

    # -- layout -----------------------------------------------------------------------
    def reshape(self, a, shape: Sequence[int]):
        return self.xp.reshape(a, tuple(shape))

    def permute(self, a, axes: Sequence[int]):
        return self.xp.permute_dims(a, tuple(axes))

    def moveaxis(self, a, source, destination):
        source = (source,) if isinstance(source, int) else tuple(source)
        destination = (destination,) if isinstance(destination, int) else tuple(destination)
        n = a.ndim
        source = tuple(s % n for s in source)
        destination = tuple(d % n for d in destination)
        order = [i for i in range(n) if i not in source]
        for d, s in sorted(zip(destination, source)):
            order.insert(d, s)
        return self.permute(a, order)

    def flip(self, a, axes: Sequence[int]):
        """``a`` reversed along ``axes``."""
        return self.xp.flip(a, axis=tuple(axes)) if axes else a

    def take(self, a, indices, axis: int):
        """``a`` at host ``indices`` along ``axis``."""
        return self.xp.take(a, self.index(indices), axis=axis)

    def at(self, a, index: tuple):
        """``a[index]``, where ``index`` may hold nested lists of ints (an open mesh,
        ``geometry.open_mesh``): those pick by integer arrays on this device."""
        return a[self._indexer(index)]

    def put(self, a, index: tuple, values) -> None:
        """``a[index] = values``, ``index`` as for :meth:`at`."""
        a[self._indexer(index)] = values

    def _indexer(self, index: tuple) -> tuple:
        if not any(isinstance(i, list) for i in index):
            return index
        return tuple(self._mesh(i) if isinstance(i, list) else i for i in index)

    def _mesh(self, nested: list) -> Any:
        return self.constant(("mesh", repr(nested)), lambda: self._new_mesh(nested))

    def constant(self, key: tuple, make) -> Any:
        """``make()``, an array that depends on ``key`` alone (a geometry's index
        or mask), made once per backend: a pass on a device then uploads
        nothing."""
        found = self._indices.get(key)
        if found is None:
            if len(self._indices) >= INDEX_CACHE:
                self._indices.clear()
            found = self._indices[key] = make()
        return found

    def _new_mesh(self, nested: list) -> Any:
        return self.asarray(nested, np.int64)

    def as_strided(self, a, shape, strides):
        """A view of ``a`` with ``strides`` counted in elements."""
        raise NotImplementedError(f"{self.describe()} have no strided views")

    def strides(self, a) -> Tuple[int, ...]:
        """``a``'s strides counted in elements, as :meth:`as_strided` takes them."""
        raise NotImplementedError(f"{self.describe()} have no strided views")

    # -- arithmetic with a destination ---------------------------------------------------
    def copy_into(self, out, a) -> None:
        """``out[...] = a`` (``out`` may be a view)."""
        out[...] = a

    def matmul(self, a, b, out=None):
        """``a @ b``, batched, into ``out`` when given."""
        return self._into(self.xp.matmul(a, b), out)

    def multiply(self, a, b, out=None):
        return self._into(self.xp.multiply(a, b), out)

    def conj(self, a, out=None):
        return self._into(self.xp.conj(a), out)

    def ldexp(self, a, e, out=None):
        """``a * 2**e`` exactly; ``e`` an int or a 0-d array of whole numbers.  Three
        factors, each inside the range of float32 for any exponent a scaling takes
        (``fftconv.scaling``); the intermediate values lie between ``a`` and the
        result, so none overflows or loses bits where the result does not."""
        first = e // 3
        second = (e - first) // 2
        r = a
        for part in (first, second, e - first - second):
            r = self.xp.multiply(r, 2.0 ** part)
        return self._into(r, out)

    @staticmethod
    def _into(result, out):
        if out is None:
            return result
        out[...] = result
        return out

    # -- reductions ---------------------------------------------------------------------
    def sum(self, a, axes: Sequence[int], dtype=None):
        native = None if dtype is None else self.dtype(dtype)
        return self.xp.sum(a, axis=tuple(axes), dtype=native)

    def mean(self, a, axis: int):
        return self.xp.mean(a, axis=axis)

    def magnitude(self, a):
        """``max |a|`` over real and imaginary parts, a 0-d array (no host read)."""
        xp = self.xp
        if self.numpy_dtype(a.dtype).kind == "c":
            return xp.maximum(xp.max(xp.abs(xp.real(a))), xp.max(xp.abs(xp.imag(a))))
        return xp.max(xp.abs(a))

    def equal(self, a, b) -> bool:
        """Whether ``a`` and ``b`` hold the same values (compared on the device; one
        boolean is read back)."""
        return a.shape == b.shape and bool(self.xp.all(a == b))

    def to_float(self, a) -> float:
        """A 0-d array's value on the host (a synchronisation on a device)."""
        return float(a)

    # -- FFTs: normalised like numpy.fft ("backward") ---------------------------------------
    def rfftn(self, a, axes: Tuple[int, ...], threads: int = 1, out=None):
        """The spectrum of real ``a`` over ``axes``: written into ``out`` where the
        library can write a transform into a given array (no copy), else a new
        array (the caller uses what is returned)."""
        return self.xp.fft.rfftn(a, axes=axes)

    def fftn(self, a, axes: Tuple[int, ...], threads: int = 1, out=None):
        """As :meth:`rfftn`, for complex ``a``."""
        return self.xp.fft.fftn(a, axes=axes)

    def irfftn(self, a, shape: Tuple[int, ...], axes: Tuple[int, ...], threads: int = 1):
        return self.xp.fft.irfftn(a, s=shape, axes=axes)

    def ifftn(self, a, axes: Tuple[int, ...], threads: int = 1):
        return self.xp.fft.ifftn(a, axes=axes)

    # -- memory and execution -------------------------------------------------------------
    def device_memory(self) -> Optional[int]:
        """Bytes free on the device, or ``None`` for host memory (``fftconv.runtime``
        queries the host)."""
        return None

    def quiet(self):
        """A context in which invalid-value arithmetic (``inf - inf``) does not warn
        (numpy's warnings: the only library here that warns, and the one several
        array API libraries compute with)."""
        return np.errstate(invalid="ignore")

    def synchronize(self) -> None:
        """Wait for the device's queued work (timing only)."""

    def nbytes(self, a) -> int:
        return math.prod(a.shape) * self.numpy_dtype(a.dtype).itemsize
