"""Argument checking for ``fftconv.dask``: the core's checks, plus what Dask adds.

Every check runs before a graph is built: ``x`` and ``dy`` must be Dask arrays
with known chunk sizes, the channel axis must be one chunk (else it is
rechunked, with a :class:`ChunkWarning`) and ``dy`` must be chunked as the
forward pass chunks ``y`` (else it is rechunked, with a warning).  The chunks'
library is ``x._meta``'s: ``dy``'s chunks must be of it, and ``w`` and ``b``
numpy arrays or arrays of it (a ``TypeError`` that names both kinds).  The layer
itself is checked by ``fftconv.checks.check_layer``, as for the numpy
functions, with the same messages.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
from dask.array import Array

from ..backends import Arrays, arrays_of, host
from ..checks import (check_algorithm, check_array, check_layer, check_plan_options, dtypes_for,
                      fail)
from ..config import get_settings
from ..registry import NAMES


class ChunkWarning(UserWarning):
    """An operand was rechunked to the chunks a block-wise layer needs."""


def check_dask(func: str, name: str, a) -> Array:
    """``a`` must be a ``dask.array.Array`` with known chunk sizes."""
    if not isinstance(a, Array):
        fail(func, f"{name} must be a dask.array.Array, got {type(a).__module__}."
                   f"{type(a).__qualname__}; use fftconv.{func.rsplit('.', 1)[-1]} for numpy "
                   f"arrays, or wrap it with dask.array.from_array({name}, chunks=...)",
             TypeError)
    if any(math.isnan(c) for chunks in a.chunks for c in chunks):
        fail(func, f"{name} must have known chunk sizes, got {name}.chunks={a.chunks}; call "
                   f"{name}.compute_chunk_sizes() first")
    return a


def chunk_arrays(x: Array) -> Arrays:
    """The library and device of ``x``'s chunks, as ``x._meta`` says."""
    return arrays_of(x._meta)


def check_kinds(func: str, x: Array, **operands) -> None:
    """``operands`` (``w``, ``b``: arrays; ``dy``: a Dask array) against ``x``'s chunks'
    library: numpy or that library for arrays, that library for a Dask array's
    chunks; else a ``TypeError`` naming both."""
    chunks = chunk_arrays(x)
    for name, a in operands.items():
        if a is None or not hasattr(a, "shape"):
            continue
        if isinstance(a, Array):
            other = chunk_arrays(a)
            if other.key != chunks.key:
                fail(func, f"each of {name}'s chunks is {other.describe()} but each of x's "
                           f"is {chunks.describe()}; convert one of them (e.g. "
                           f"{name}.map_blocks(cupy.asarray) or .map_blocks(cupy.asnumpy))",
                     TypeError)
            continue
        other = arrays_of(a)
        if other.key not in (chunks.key, host().key):
            fail(func, f"{name} is {other.describe()} but each of x's chunks is "
                       f"{chunks.describe()}; pass {name} as a numpy array or as an array of "
                       f"the chunks' kind", TypeError)


def channel_axis(layout: str, ndim: int) -> int:
    return ndim - 1 if layout == "channels_last" else 1


def whole_channels(func: str, name: str, a: Array, axis: int) -> Array:
    """``a`` with its channel axis in one chunk (rechunked, with a warning, if not)."""
    if len(a.chunks[axis]) == 1:
        return a
    warnings.warn(f"{func}: {name} is chunked along its channel axis ({axis}) as "
                  f"{a.chunks[axis]}; channels stay whole within a block, so {name} is "
                  f"rechunked to one chunk on that axis", ChunkWarning, stacklevel=4)
    return a.rechunk({axis: -1})


def matching_chunks(func: str, dy: Array, chunks: tuple) -> Array:
    """``dy`` chunked as ``chunks`` (the forward pass's ``y``), rechunked with a warning
    if it is not."""
    if tuple(dy.chunks) == tuple(chunks):
        return dy
    warnings.warn(f"{func}: dy's chunks {dy.chunks} do not line up with the output blocks "
                  f"of x's chunking {chunks}; dy is rechunked to them", ChunkWarning,
                  stacklevel=4)
    return dy.rechunk(chunks)


def check_call(func: str, x, w, others, algorithm, options: dict, max_workspace_bytes,
               measure=None) -> tuple:
    """Check a call; returns ``(layer, compute dtype, result dtype, w, settings)``.

    ``others`` are the remaining operands that take part in the dtype (``b``, ``dy``);
    ``settings`` are what each block's call runs under (``options``: the layer
    keywords, every one given).
    """
    check_dask(func, "x", x)
    w = check_array(func, "w", w)
    check_kinds(func, x, w=w)
    check_algorithm(func, algorithm, NAMES)
    compute, result = dtypes_for(x, w, *[a for a in others if a is not None])
    layer = check_layer(func, x.shape, w.shape, real=compute.kind == "f", **options)
    if layer.transposed:
        fail(func, "transposed=True is not supported on Dask arrays; use the matching "
                   "convolution's input gradient (fftconv.dask.backward) or the numpy "
                   "functions")
    workspace, timed, _ = check_plan_options(func, max_workspace_bytes, measure, None, algorithm,
                                             layer.ndim, get_settings(), ())
    settings: dict = {} if workspace is None else {"max_workspace_bytes": workspace}
    if measure is not None:   # given: every block's call (on any worker) uses it
        settings["measure"] = timed
    return layer, np.dtype(compute), np.dtype(result), w, settings
