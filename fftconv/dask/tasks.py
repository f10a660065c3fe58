"""What a Dask task runs on one block: arrays of the chunks' library in, the same
out, no dask here.

Each function assembles its window from pieces (the parts of neighbouring
blocks a window needs, already cut on the workers that hold them, see
``graph``), then calls the ordinary stateless functions ``fftconv.forward``
and ``fftconv.backward`` on it with ``padding="valid"`` semantics.  Those
functions keep one engine per geometry, dtype, settings and backend in each
process (``fftconv.planner.ENGINE_CACHE``, bounded LRU), so a worker plans
once per block shape, not once per task: blocks of a regular chunking have at
most a few distinct window shapes per axis (first, interior, last).  FFTW
wisdom and ``algorithm="auto"``'s measured choices reach every worker through
the per-user cache directory (``fftconv.wisdom``).

Every array a task makes is made by the blocks' own backend
(``fftconv.backends``, :func:`backend`): numpy chunks give numpy windows,
CuPy chunks CuPy windows on the chunk's GPU, and the whole block runs there.
The weights arrive as the graph holds them (numpy, or the chunks' kind) and
are moved to the blocks' kind once per task (a no-op when they already are).

A *placement* is ``(slices, steps)`` over the spatial axes: where a piece goes
(or comes from) in the window, and which axes it is reversed on (a reflected
halo).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .. import api, config
from ..backends import Arrays, arrays_of
from ..checks import dtype_of


def backend(blocks: Sequence[Any], meta: Any) -> Arrays:
    """The backend of a task's block data: the first block's library and device, or
    ``meta``'s (the input's ``_meta``) for a task that reads no block."""
    for block in blocks:
        return arrays_of(block)
    return arrays_of(meta)


def _oriented(arrays: Arrays, piece, steps):
    """``piece`` reversed on the spatial axes whose run steps by -1."""
    lead = piece.ndim - len(steps)
    return arrays.flip(piece, [lead + i for i, st in enumerate(steps) if st < 0])


def _spatial(slices) -> tuple:
    return (Ellipsis,) + tuple(slices)


def _moved(arrays: Arrays, a):
    """``a`` (the weights or the bias, numpy or the blocks' kind) as an array of the
    blocks' kind, in its own dtype; ``None`` stays ``None``."""
    return None if a is None else arrays.asarray(a, dtype_of(a))


def assemble(arrays: Arrays, shape, dtype, pieces, placements):
    """A window of ``shape``: zeros, with each piece copied to its placement."""
    window = arrays.zeros(shape, dtype)
    for piece, (slices, steps) in zip(pieces, placements):
        arrays.put(window, _spatial(slices), _oriented(arrays, piece, steps))
    return window


def scatter(shape, dtype, pieces, placements, meta):
    """An input-gradient block of ``shape``: the sum of the pieces, each added at its
    placement (the adjoint of :func:`assemble`: a halo folds back onto the sample
    it copied)."""
    arrays = backend(pieces, meta)
    block = arrays.zeros(shape, dtype)
    for piece, (slices, steps) in zip(pieces, placements):
        index = _spatial(slices)
        arrays.put(block, index, arrays.at(block, index) + _oriented(arrays, piece, steps))
    return block


def _run(call, settings: dict):
    with config.using(**settings):
        return call()


def forward_block(window_shape, pieces, placements, w, b, meta, layer: dict, settings: dict):
    """``y`` of one output block: the "valid" layer over its assembled window."""
    arrays = backend(pieces, meta)
    window = assemble(arrays, window_shape, dtype_of(w), pieces, placements)
    w, b = _moved(arrays, w), _moved(arrays, b)
    return _run(lambda: api.forward(window, w, b, padding="valid", **layer), settings)


def dxpad_block(shape, dy_shape, pieces, placements, crop, w_t, meta, layer: dict,
                settings: dict):
    """``dxpad`` (the padded input's gradient) on one block of padded positions:
    the transposed convolution of the ``dy`` window that touches it, cropped
    (``crop``: per spatial axis, ``(slice in the result, slice in the block)``).
    ``w_t`` is ``w`` as a transposed layer takes it (conjugated when complex)."""
    arrays = backend(pieces, meta)
    dtype = dtype_of(w_t)
    out = arrays.zeros(shape, dtype)
    if 0 in dy_shape:
        return out
    dy = assemble(arrays, dy_shape, dtype, pieces, placements)
    w_t = _moved(arrays, w_t)
    t = _run(lambda: api.forward(dy, w_t, padding=0, transposed=True, **layer), settings)
    arrays.put(out, _spatial(c[1] for c in crop), arrays.at(t, _spatial(c[0] for c in crop)))
    return out


def grad_block(window_shape, pieces, placements, dy, w, meta, layer: dict, settings: dict):
    """``(dw, db)`` of one output block, in double precision for the tree sum: the
    weight and bias gradients of the "valid" layer over its window, with a leading
    axis of 1 (one partial sum).  ``fftconv.backward`` also returns the window's
    input gradient, which is dropped: ``dx`` is computed from ``dy``'s own
    windows (:func:`dxpad_block`), so that it can be computed later, alone."""
    arrays = backend([dy], meta)
    dtype = dtype_of(w)
    window = assemble(arrays, window_shape, dtype, pieces, placements)
    w = _moved(arrays, w)
    grads = _run(lambda: api.backward(dy, window, w, padding="valid", **layer), settings)
    wide = np.complex128 if dtype.kind == "c" else np.float64

    def partial(g):
        return arrays.reshape(arrays.astype(g, wide), (1,) + tuple(g.shape))
    return partial(grads.dw), partial(grads.db)


def empty(shape, dtype, meta):
    """An output block with no samples (an input chunk shorter than the stride), of
    ``meta``'s kind."""
    return arrays_of(meta).zeros(shape, dtype)
