"""What a Dask task runs on one block: numpy in, numpy out, no dask here.

Each function assembles its window from pieces (the parts of neighbouring
blocks a window needs, already cut on the workers that hold them, see
``graph``), then calls the ordinary stateless functions ``fftconv.forward``
and ``fftconv.backward`` on it with ``padding="valid"`` semantics.  Those
functions keep one engine per geometry, dtype and settings in each process
(``fftconv.planner.ENGINE_CACHE``, bounded LRU), so a worker plans once per
block shape, not once per task: blocks of a regular chunking have at most a
few distinct window shapes per axis (first, interior, last).  FFTW wisdom and
``algorithm="auto"``'s measured choices reach every worker through the
per-user cache directory (``fftconv.wisdom``).

A *placement* is ``(slices, steps)`` over the spatial axes: where a piece goes
(or comes from) in the window, and which axes it is reversed on (a reflected
halo).
"""
from __future__ import annotations

import numpy as np

from .. import api, config


def _oriented(piece: np.ndarray, steps) -> np.ndarray:
    """``piece`` reversed on the spatial axes whose run steps by -1 (a view)."""
    lead = piece.ndim - len(steps)
    return piece[(slice(None),) * lead + tuple(slice(None, None, st) for st in steps)]


def _spatial(slices) -> tuple:
    return (Ellipsis,) + tuple(slices)


def assemble(shape, dtype, pieces, placements) -> np.ndarray:
    """A window of ``shape``: zeros, with each piece copied to its placement."""
    window = np.zeros(shape, dtype)
    for piece, (slices, steps) in zip(pieces, placements):
        window[_spatial(slices)] = _oriented(piece, steps)
    return window


def scatter(shape, dtype, pieces, placements) -> np.ndarray:
    """An input-gradient block of ``shape``: the sum of the pieces, each added at its
    placement (the adjoint of :func:`assemble`: a halo folds back onto the sample
    it copied)."""
    block = np.zeros(shape, dtype)
    for piece, (slices, steps) in zip(pieces, placements):
        block[_spatial(slices)] += _oriented(piece, steps)
    return block


def _run(call, settings: dict):
    with config.using(**settings):
        return call()


def forward_block(window_shape, pieces, placements, w, b, layer: dict, settings: dict):
    """``y`` of one output block: the "valid" layer over its assembled window."""
    window = assemble(window_shape, w.dtype, pieces, placements)
    return _run(lambda: api.forward(window, w, b, padding="valid", **layer), settings)


def dxpad_block(shape, dy_shape, pieces, placements, crop, w_t, layer: dict, settings: dict):
    """``dxpad`` (the padded input's gradient) on one block of padded positions:
    the transposed convolution of the ``dy`` window that touches it, cropped
    (``crop``: per spatial axis, ``(slice in the result, slice in the block)``).
    ``w_t`` is ``w`` as a transposed layer takes it (conjugated when complex)."""
    out = np.zeros(shape, w_t.dtype)
    if 0 in dy_shape:
        return out
    dy = assemble(dy_shape, w_t.dtype, pieces, placements)
    t = _run(lambda: api.forward(dy, w_t, padding=0, transposed=True, **layer), settings)
    out[_spatial(c[1] for c in crop)] = t[_spatial(c[0] for c in crop)]
    return out


def grad_block(window_shape, pieces, placements, dy, w, layer: dict, settings: dict):
    """``(dw, db)`` of one output block, in double precision for the tree sum: the
    weight and bias gradients of the "valid" layer over its window, with a leading
    axis of 1 (one partial sum).  ``fftconv.backward`` also returns the window's
    input gradient, which is dropped: ``dx`` is computed from ``dy``'s own
    windows (:func:`dxpad_block`), so that it can be computed later, alone."""
    window = assemble(window_shape, w.dtype, pieces, placements)
    grads = _run(lambda: api.backward(dy, window, w, padding="valid", **layer), settings)
    wide = np.complex128 if w.dtype.kind == "c" else np.float64
    return grads.dw.astype(wide)[None], grads.db.astype(wide)[None]


def empty(shape, dtype) -> np.ndarray:
    """An output block with no samples (an input chunk shorter than the stride)."""
    return np.zeros(shape, dtype)
