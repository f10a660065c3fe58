"""The array-namespace seam: which array library and device an operand lives on.

fftconv's modules never call numpy on an operand.  They ask this package for
the :class:`~fftconv.backends.base.Arrays` of the operands (scipy's
``xp = array_namespace(x)`` pattern, on top of ``array_api_compat``) and
call it: creation on the operands' device, the products, layout changes,
reductions, the FFTs and the device's memory.  Each backend is one module:

* :mod:`~fftconv.backends.numpy_arrays`: numpy (host memory; ``transforms``
  plans FFTW on its buffers when pyFFTW is installed, else ``scipy.fft``);
* :mod:`~fftconv.backends.cupy_arrays`: CuPy (cuFFT with its plan cache,
  cuBLAS through ``cupy.matmul``);
* :mod:`~fftconv.backends.torch_tensors`: PyTorch tensors, CPU and CUDA
  (``torch.fft``, ``torch.matmul``);
* :mod:`~fftconv.backends.base`: any other namespace of the array API
  standard, by the standard alone (``array_api_strict`` in the tests).

Adding a backend is one module with an :class:`Arrays` subclass and one line
in :data:`BACKENDS`.  Nothing here imports an optional library: an array is
recognised by its type's module, and its library is imported only then.
"""
from __future__ import annotations

from typing import Dict, List, Tuple, Type

import numpy as np

from .base import Arrays
from .cupy_arrays import CupyArrays
from .numpy_arrays import NumpyArrays
from .torch_tensors import TorchArrays

#: The backends, most specific first; the array API fallback comes last.
BACKENDS: Tuple[Type[Arrays], ...] = (NumpyArrays, CupyArrays, TorchArrays, Arrays)

_made: Dict[tuple, Arrays] = {}


class KindError(TypeError):
    """Operands of different array libraries, or on different devices."""


def arrays_of(a) -> Arrays:
    """The :class:`Arrays` of one array (numpy for anything that is not an array of
    a known library, e.g. a list)."""
    for backend in BACKENDS:
        if backend.owns(a):
            key = backend.key_of(a)
            if key not in _made:
                _made[key] = backend.for_array(a)
            return _made[key]
    return host()


def host() -> Arrays:
    """numpy's :class:`Arrays`."""
    return arrays_of(np.empty(0))


def common(named: Dict[str, object]) -> Arrays:
    """The one :class:`Arrays` of several named operands (``None`` skipped); a
    :class:`KindError` that names them when they differ in library or device.
    Python sequences (no library of their own) take the others' kind."""
    kinds: List[Tuple[str, Arrays]] = [(n, arrays_of(a)) for n, a in named.items()
                                       if a is not None and _is_array(a)]
    if not kinds:
        return host()
    first_name, first = kinds[0]
    for name, other in kinds[1:]:
        if other.key != first.key:
            raise KindError(f"{first_name} is {first.describe()} but {name} is "
                            f"{other.describe()}; pass operands of one array library on "
                            f"one device (move them with the library's own conversion: "
                            f"cupy.asarray, torch.as_tensor(..., device=...), .get(), "
                            f".cpu())")
    return first


def _is_array(a) -> bool:
    return hasattr(a, "shape") and hasattr(a, "dtype")


def like(a) -> Arrays:
    """The :class:`Arrays` of ``like=`` (an array of the library and device a plan or a
    layer is to run on), or numpy for ``None``."""
    if a is None:
        return host()
    if not _is_array(a):
        raise TypeError(f"like must be an array (numpy, CuPy, torch tensor) whose library "
                        f"and device to use, got {type(a).__name__}")
    return arrays_of(a)


__all__ = ["Arrays", "BACKENDS", "KindError", "arrays_of", "common", "host", "like"]
