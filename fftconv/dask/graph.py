"""The Dask graphs: one task per block, explicit, from ``blocks``' runs.

Every array here is channels-first, ``(N, C, *spatial)``, with one chunk on
the channel axis.  A block's task depends on *pieces*: the parts of the
neighbouring blocks its window needs, each cut by its own ``getitem`` task.
Dask runs a cut where its block lives, so only halos travel between workers,
never a whole block (a piece that is a whole block is the block's own key).
The weights enter the graph once, under one key, so ``dask.distributed``
ships them to each worker once; so does the input's ``_meta`` (an empty array
of the chunks' library), which tells a task that reads no block which library
to make its block with, and which every result's ``_meta`` is made like: CuPy
chunks give CuPy results, block by block on the GPU.

* forward: output block ``J`` <- the input pieces of its window;
* input gradient: ``dxpad`` block ``J`` <- the ``dy`` pieces of its window,
  then input block ``B`` <- the ``dxpad`` pieces that fold onto it;
* weight and bias gradients: one partial sum per output block (its window and
  its own ``dy`` block), summed by ``dask.array``'s tree reduction.
"""
from __future__ import annotations

import operator
from itertools import product

import numpy as np
from dask.array import Array
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from ..backends import arrays_of, host
from ..checks import dtype_of
from . import tasks
from .blocks import chunks_of

#: Partial weight gradients summed per node of the tree reduction.
SPLIT_EVERY = 8


def _grid(axes) -> product:
    return product(*(range(a.blocks) for a in axes))


def _window_runs(axes) -> list:
    """Per axis, the window runs of every output block (computed once, used per block)."""
    return [[a.window_runs(j) for j in range(a.blocks)] for a in axes]


def _cut(dsk: dict, name: str, owner: tuple, source: tuple, shape: tuple, slices: tuple) -> tuple:
    """The key of ``source[..., *slices]``: ``source`` itself when the slices take the
    whole block (of spatial ``shape``), else a new ``getitem`` task ``owner``."""
    if all(sl.start == 0 and sl.stop == size for sl, size in zip(slices, shape)):
        return source
    dsk[owner] = (operator.getitem, source, (slice(None), slice(None)) + tuple(slices))
    return owner


def _gather(dsk, name, target, source_name, source_bounds, runs_per_axis):
    """Keys and placements of the pieces that fill ``target``'s window from the blocks of
    ``source_name`` (spatial boundaries ``source_bounds``), batch block ``target[0]``."""
    keys, placements = [], []
    for k, combo in enumerate(product(*runs_per_axis)):
        blocks = tuple(r.block for r in combo)
        shape = tuple(b[i + 1] - b[i] for b, i in zip(source_bounds, blocks))
        keys.append(_cut(dsk, name, (name,) + target + (k,),
                         (source_name, target[0], 0) + blocks, shape,
                         tuple(r.src_slice for r in combo)))
        placements.append((tuple(r.dst_slice for r in combo), tuple(r.step for r in combo)))
    return keys, placements


def meta_like(meta, ndim: int, dtype):
    """An empty array of ``meta``'s library and device (an input's ``_meta``) with
    ``ndim`` axes and numpy ``dtype``: a result's ``_meta``."""
    return arrays_of(meta).empty((0,) * ndim, dtype)


def _array(dsk, name, dependencies, chunks, meta) -> Array:
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=dependencies)
    return Array(graph, name, chunks, meta=meta)


def _window_shape(batch, channels, axes, J) -> tuple:
    return (batch, channels) + tuple(a.window(j)[1] - a.window(j)[0] for a, j in zip(axes, J))


def forward(x: Array, axes, w, b, layer: dict, settings: dict) -> Array:
    """``y`` (channels-first, chunks: ``x``'s batch chunks, ``axes``' output chunks;
    ``_meta``: ``x``'s kind).  ``w`` and ``b``: numpy or the chunks' kind."""
    token = tokenize(x.name, w, b, layer, settings, axes)
    name, halo, wkey = f"fftconv-forward-{token}", f"fftconv-forward-halo-{token}", \
        f"fftconv-weights-{token}"
    meta = (wkey, "meta")
    dsk = {(wkey,): w, (wkey, "b"): b, meta: x._meta}
    dtype = dtype_of(w)
    c_in, c_out = x.shape[1], w.shape[0]
    windows = _window_runs(axes)
    for nb, batch in enumerate(x.chunks[0]):
        for J in _grid(axes):
            out = (batch, c_out) + tuple(a.out_chunks[j] for a, j in zip(axes, J))
            if 0 in out[2:]:
                dsk[(name, nb, 0) + J] = (tasks.empty, out, dtype, meta)
                continue
            keys, places = _gather(dsk, halo, (nb,) + J, x.name, [a.bounds for a in axes],
                                   [runs[j] for runs, j in zip(windows, J)])
            dsk[(name, nb, 0) + J] = (tasks.forward_block, _window_shape(batch, c_in, axes, J),
                                      keys, places, (wkey,), (wkey, "b"), meta, layer, settings)
    chunks = (x.chunks[0], (c_out,)) + tuple(a.out_chunks for a in axes)
    return _array(dsk, name, [x], chunks, meta_like(x._meta, len(chunks), dtype))


def input_grad(dy: Array, x_chunks, axes, w, layer: dict, settings: dict) -> Array:
    """``dx`` (channels-first, chunked as ``x_chunks``; ``_meta``: ``dy``'s kind, which
    is ``x``'s): ``dxpad`` per block from ``dy``'s windows by a transposed convolution,
    folded onto the input blocks."""
    token = tokenize(dy.name, w, layer, settings, axes)
    pad, dx = f"fftconv-dxpad-{token}", f"fftconv-dx-{token}"
    halo, fold, wkey = f"{pad}-halo", f"{dx}-fold", f"fftconv-weights-t-{token}"
    dtype = dtype_of(w)
    # a transposed layer conjugates complex w (in w's own library: numpy or the chunks')
    w_t = arrays_of(w).conj(w) if dtype.kind == "c" else w
    meta = (wkey, "meta")
    dsk = {(wkey,): w_t, meta: dy._meta}
    c_in, c_out = x_chunks[1][0], w.shape[0]
    padded = [chunks_of(a.padded_bounds) for a in axes]
    for nb, batch in enumerate(x_chunks[0]):
        for J in _grid(axes):
            ranges = [a.dy_range(j) for a, j in zip(axes, J)]
            keys, places = _gather(dsk, halo, (nb,) + J, dy.name, [a.out_bounds for a in axes],
                                   [a.dy_runs(j) for a, j in zip(axes, J)])
            dsk[(pad, nb, 0) + J] = (
                tasks.dxpad_block, (batch, c_in) + tuple(int(p[j]) for p, j in zip(padded, J)),
                (batch, c_out) + tuple(i1 - i0 for i0, i1 in ranges), keys, places,
                [a.dxpad_crop(j) for a, j in zip(axes, J)], (wkey,), meta, layer, settings)
        for B in _grid(axes):
            keys, places = [], []
            sources = [a.dx_sources(i) for a, i in zip(axes, B)]
            for k, combo in enumerate(product(*sources)):
                J = tuple(j for j, _ in combo)
                shape = tuple(int(p[j]) for p, j in zip(padded, J))
                keys.append(_cut(dsk, fold, (fold, nb) + B + (k,), (pad, nb, 0) + J, shape,
                                 tuple(r.dst_slice for _, r in combo)))
                places.append((tuple(r.src_slice for _, r in combo),
                               tuple(r.step for _, r in combo)))
            shape = (batch, c_in) + tuple(c[i] for c, i in zip(x_chunks[2:], B))
            dsk[(dx, nb, 0) + B] = (tasks.scatter, shape, dtype, keys, places, meta)
    return _array(dsk, dx, [dy], x_chunks, meta_like(dy._meta, len(x_chunks), dtype))


def weight_grads(dy: Array, x: Array, axes, w, layer: dict, settings: dict) -> tuple:
    """``(dw, db)`` as 0-chunked dask arrays in double precision, of ``x``'s chunks'
    kind: one partial sum per non-empty output block, tree-reduced (``SPLIT_EVERY``
    partials per node)."""
    token = tokenize(dy.name, x.name, w, layer, settings, axes)
    pair, halo, wkey = f"fftconv-dwdb-{token}", f"fftconv-dwdb-halo-{token}", \
        f"fftconv-weights-g-{token}"
    dw_name, db_name = f"fftconv-dw-parts-{token}", f"fftconv-db-parts-{token}"
    meta = (wkey, "meta")
    dsk: dict = {(wkey,): w, meta: x._meta}
    dw_dsk: dict = {}
    db_dsk: dict = {}
    c_in, k = x.shape[1], 0
    windows = _window_runs(axes)
    for nb, batch in enumerate(x.chunks[0]):
        for J in _grid(axes):
            if any(a.out_chunks[j] == 0 for a, j in zip(axes, J)):
                continue
            keys, places = _gather(dsk, halo, (nb,) + J, x.name, [a.bounds for a in axes],
                                   [runs[j] for runs, j in zip(windows, J)])
            dsk[(pair, k)] = (tasks.grad_block, _window_shape(batch, c_in, axes, J), keys,
                              places, (dy.name, nb, 0) + J, (wkey,), meta, layer, settings)
            dw_dsk[(dw_name, k) + (0,) * w.ndim] = (operator.getitem, (pair, k), 0)
            db_dsk[(db_name, k, 0)] = (operator.getitem, (pair, k), 1)
            k += 1
    wide = np.complex128 if dtype_of(w).kind == "c" else np.float64
    # pairs of partial sums: a container of tuples, whatever the chunks' library
    pairs = _array(dsk, pair, [dy, x], ((1,) * k,), host().empty((0,), np.dtype(object)))
    dw_parts = _array(dw_dsk, dw_name, [pairs], ((1,) * k,) + tuple((n,) for n in w.shape),
                      meta_like(x._meta, w.ndim + 1, wide))
    db_parts = _array(db_dsk, db_name, [pairs], ((1,) * k, (w.shape[0],)),
                      meta_like(x._meta, 2, wide))
    return (dw_parts.sum(axis=0, split_every=SPLIT_EVERY),
            db_parts.sum(axis=0, split_every=SPLIT_EVERY))
