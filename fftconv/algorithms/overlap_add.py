"""Overlap-add tiling: a large input processed as tiles by one small FFT engine.

The output is cut into tiles of ``tile`` samples per axis.  Output tile
``[t, t + B)`` reads the padded-input window ``[t*s, t*s + (B-1)*s + ke)``,
so each tile is an ordinary "valid" layer of window size ``W = (B-1)*s + ke``
(``geometry.tile_geometry``).  As in scipy's ``oaconvolve``, the tiles go into
the batch axis: one :class:`~fftconv.algorithms.fft.FFTEngine`, built for that window
and a batch of ``N * P`` rows, runs ``P`` tiles of all samples per pass (one
batched transform per operand and one product), :func:`tiles_per_pass` of them:

* forward: each tile's ``y`` is written to its place in ``y``;
* input gradient: each tile's ``dx`` window is *added* into ``dx`` (windows
  overlap by ``ke - s`` samples: overlap-add);
* weight gradient: the engine sums the tiles' weight-gradient spectra and
  inverts once.

The weights are transformed once per weight update, at the tile's FFT size.
FFT workspace is bounded by the pass, not by the input: the engine holds
buffers for ``P`` windows of the whole batch, plus the windows being copied
in, and ``P`` keeps that below :data:`PASS_BYTES` and a :data:`PASS_SHARE`-th
of the whole-input FFT's workspace (one tile per pass when a tile alone is
larger).
Edge tiles read zeros beyond the padded input and their outputs beyond ``out``
are dropped, so every tile has the same geometry.  When every tile fits in one
pass (:attr:`OverlapAddEngine.single_pass`), a forward pass that keeps returns
the tiles' spectrum, as the FFT engine does, and the backward pass reuses it.
With several passes the engine keeps no spectrum between them: a saved operand
is the operand itself, and the backward pass transforms its tiles again.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import threading

import numpy as np

from typing import List, Optional, Tuple

from .. import budget, contraction, costs
from ..backends import Arrays
from ..config import Settings
from ..costs import Work
from ..geometry import ConvGeometry, next_fast_length, tile_geometry, window_clip
from ..protocol import Algorithm, Engine, Partition, Tiling
from ..transforms import spectrum_bytes
from . import fft
from .fft import FFTEngine, Passes, TiledEngine
from .fft import workspace_bytes as fft_workspace_bytes


def single_tile(geom: ConvGeometry, tile) -> bool:
    """Whether one tile covers the whole output: then overlap-add is the FFT path
    itself, and :func:`engine` builds that, with no windows to copy."""
    return all(t >= o for t, o in zip(tile, geom.out_size))


def engine(geom: ConvGeometry, dtype, settings: Settings, arrays: Arrays, tile,
           per_pass: Optional[int] = None) -> Engine:
    """The engine of overlap-add with output tiles ``tile``, ``per_pass`` of them
    per pass (default :func:`tiles_per_pass`): an
    :class:`OverlapAddEngine`, or for a :func:`single_tile` the
    :class:`~fftconv.algorithms.fft.FFTEngine` of the whole layer (the same transforms
    and products; measured 1.09-1.27x slower through the tile windows, 2-D
    2048x2048 k9)."""
    if single_tile(geom, tile):
        whole = FFTEngine(geom, dtype, settings, arrays)
        whole.tile = tuple(geom.out_size)  # what the plan reports: the one tile
        return whole
    return OverlapAddEngine(geom, dtype, settings, arrays, tile, per_pass)


def workspace_bytes(geom: ConvGeometry, dtype, tile, per_pass: Optional[int] = None) -> int:
    """Bytes of an overlap-add engine with output tiles ``tile``: the pass engine's
    buffers (``per_pass`` tiles, default :func:`tiles_per_pass`), the input, output
    and gradient windows of one pass, and the channel contraction's frequency
    block (small tiles make it count); for a :func:`single_tile`, the FFT path's."""
    if single_tile(geom, tile):
        return fft_workspace_bytes(geom, dtype, geom.batch)
    tile = tuple(min(t, o) for t, o in zip(tile, geom.out_size))
    per_pass = per_pass or tiles_per_pass(geom, dtype, tile)
    t = dataclasses.replace(tile_geometry(geom, tile), batch=geom.batch * per_pass)
    window = math.prod(t.x_shape) + math.prod(t.y_shape)
    rows = t.batch * max(t.in_channels, t.out_channels)
    block = min(contraction.BLOCK_BYTES, spectrum_bytes(rows, t.fft_shape, dtype))
    return fft_workspace_bytes(t, dtype, t.batch) + int(window) * 2 * np.dtype(dtype).itemsize + block

#: Most FFT workspace bytes of one pass of tiles.  With one tile per pass, a
#: Python loop ran one small batched problem per tile (the 1-D 2**20 k65 bench
#: layer: about a thousand of them per pass); a few MiB of tiles per pass
#: amortises the per-call costs while the buffers stay in the last-level cache's
#: neighbourhood, far below the whole input's.
PASS_BYTES = 1 << 24
#: A pass takes at most this fraction (1/PASS_SHARE) of the workspace the FFT
#: path would need for the whole input: bounded memory is what tiling is for.
PASS_SHARE = 16


def tiles_per_pass(geom: ConvGeometry, dtype, tile) -> int:
    """How many output tiles one pass runs as one batch (see :data:`PASS_BYTES`)."""
    n_tiles = math.prod(-(-o // b) for o, b in zip(geom.out_size, tile))
    one = fft_workspace_bytes(tile_geometry(geom, tile), dtype, geom.batch)
    budget = min(PASS_BYTES, fft_workspace_bytes(geom, dtype, geom.batch) // PASS_SHARE)
    return max(1, min(n_tiles, budget // max(one, 1)))


class OverlapAddEngine(TiledEngine):
    """Forward and backward passes of ``geom`` by overlap-add over output tiles
    (the engine protocol of ``fftconv.protocol``)."""

    def __init__(self, geom: ConvGeometry, dtype, settings: Settings, arrays: Arrays, tile,
                 per_pass: Optional[int] = None):
        self.geom = geom
        self.dtype = np.dtype(dtype)
        self.arrays = arrays
        self.tile = tuple(min(t, o) for t, o in zip(tile, geom.out_size))
        self.tile_geom = tile_geometry(geom, self.tile)
        self.per_pass = per_pass or tiles_per_pass(geom, self.dtype, self.tile)
        pass_geom = dataclasses.replace(self.tile_geom, batch=geom.batch * self.per_pass)
        self.passes = Passes(pass_geom, self.dtype, settings, pass_geom.batch, arrays)
        self.lock = threading.Lock()
        self.chunk = geom.batch
        n_tiles = math.prod(-(-o // b) for o, b in zip(geom.out_size, self.tile))
        self.single_pass = self.per_pass >= n_tiles
        # the slices of every tile, worked out once: (into x, into the window) and
        # (into y, into the tile's y), by tile in the order of :meth:`tiles`
        self._window_at = [self._window_slices(starts) for starts in self.tiles()]
        self._output_at = [self._output_slices(starts) for starts in self.tiles()]

    @property
    def workspace_bytes(self) -> int:
        """The pass engine's buffers plus the input, output and gradient windows."""
        return workspace_bytes(self.geom, self.dtype, self.tile, self.per_pass)

    def tiles(self):
        """Output start index per axis of every tile."""
        return itertools.product(*(range(0, o, b) for o, b in zip(self.geom.out_size, self.tile)))

    def tile_groups(self):
        """The tiles' numbers (in the order of :meth:`tiles`), :attr:`per_pass` at a time."""
        n_tiles = len(self._window_at)
        return [range(i, min(i + self.per_pass, n_tiles))
                for i in range(0, n_tiles, self.per_pass)]

    def _rows(self, i: int) -> slice:
        """Rows of the ``i``-th tile of a pass in the pass's batch (tile-major)."""
        return slice(i * self.geom.batch, (i + 1) * self.geom.batch)

    def _buffer(self, shape):
        """A zeroed array of one pass of tile-shaped operands, ``shape`` per tile."""
        return self.arrays.zeros((self.per_pass * shape[0],) + tuple(shape[1:]), self.dtype)

    def _input_windows(self, x, group, buffer):
        """Padded-input windows of the tiles of ``group`` in ``buffer``'s rows, zero
        outside ``x``; only the rows of the group's tiles are returned."""
        self.arrays.copy_into(buffer, 0)
        for i, tile in enumerate(group):
            src, dst = self._window_at[tile]
            self.arrays.copy_into(buffer[self._rows(i), ...][dst], x[src])
        return buffer[:len(group) * self.geom.batch, ...]

    def _output_tiles(self, dy, group, buffer):
        """The tiles of ``group`` of an output-shaped ``dy``, zero beyond ``out``."""
        self.arrays.copy_into(buffer, 0)
        for i, tile in enumerate(group):
            into_y, into_tile = self._output_at[tile]
            self.arrays.copy_into(buffer[self._rows(i), ...][into_tile], dy[into_y])
        return buffer[:len(group) * self.geom.batch, ...]

    def _scatter(self, tiles, group, y):
        """Write the output tiles of ``group`` into ``y``."""
        for i, tile in enumerate(group):
            into_y, into_tile = self._output_at[tile]
            self.arrays.copy_into(y[into_y], tiles[self._rows(i), ...][into_tile])

    def _overlap_add(self, windows, group, dx):
        """Add the input-gradient windows of ``group`` into ``dx``."""
        for i, tile in enumerate(group):
            src, dst = self._window_at[tile]
            dx[src] += windows[self._rows(i), ...][dst]

    def _window_slices(self, starts) -> tuple:
        """``(slices into x, slices into the window)`` where a tile's padded-input
        window meets ``x``."""
        g, t = self.geom, self.tile_geom
        clips = [window_clip(st * s, w, lo, n) for st, s, w, (lo, _), n in
                 zip(starts, g.stride, t.in_size, g.padding, g.in_size)]
        return (Ellipsis,) + tuple(c[0] for c in clips), (Ellipsis,) + tuple(c[1] for c in clips)

    def _output_slices(self, starts) -> tuple:
        """``(slices into y, slices into the tile's y)`` for a tile."""
        stops = [min(st + b, o) for st, b, o in zip(starts, self.tile, self.geom.out_size)]
        into_y = (Ellipsis,) + tuple(slice(a, b) for a, b in zip(starts, stops))
        into_tile = (Ellipsis,) + tuple(slice(0, b - a) for a, b in zip(starts, stops))
        return into_y, into_tile

    # -- the engine protocol ----------------------------------------------------------
    def forward(self, x, k, keep=False, out=None) -> tuple:
        y = self.arrays.empty(self.geom.y_shape, self.dtype) if out is None else out
        x_buf, y_buf = self._buffer(self.tile_geom.x_shape), self._buffer(self.tile_geom.y_shape)
        kept = self.new_kept(keep)
        for group in self.tile_groups():
            windows = self._input_windows(x, group, x_buf)
            self.passes.forward_piece(windows, k, out=y_buf[:len(windows), ...], x_keep=kept)
            self._scatter(y_buf, group, y)
        return self.forward_result(x, y, kept, keep)

    def backward(self, dy, saved_x, k, need_dx=True, need_dw=True, out=None) -> tuple:
        """Tiles' input gradients overlap-added, weight gradients summed."""
        dx = dx_buf = None
        if need_dx:
            dx = self.arrays.empty(self.geom.x_shape, self.dtype) if out is None else out
            self.arrays.copy_into(dx, 0)  # the tiles' windows are added into it
            dx_buf = self._buffer(self.tile_geom.x_shape)
        x_spec = saved_x.array if need_dw and saved_x.kind == "spectrum" else None
        x_buf = self._buffer(self.tile_geom.x_shape) if need_dw and x_spec is None else None
        dy_buf = self._buffer(self.tile_geom.y_shape)
        for i, group in enumerate(self.tile_groups()):
            dy_tiles = self._output_tiles(dy, group, dy_buf)
            windows = None if x_buf is None else self._input_windows(saved_x.array, group, x_buf)
            self.passes.backward_piece(dy_tiles, k,
                                       out=None if dx_buf is None else dx_buf[:len(dy_tiles), ...],
                                       x_piece=windows, x_spec=x_spec, accumulate=i > 0)
            if dx is not None and dx_buf is not None:
                self._overlap_add(dx_buf, group, dx)
        return dx, self.passes.weight_grad() if need_dw else None

    def transposed_backward(self, x, saved_dy, k, need_y=True, need_dw=True, out=None) -> tuple:
        """Each input window transformed once for its ``y`` tile and its share of ``dw``."""
        y = y_buf = None
        if need_y:
            y = self.arrays.empty(self.geom.y_shape, self.dtype) if out is None else out
            y_buf = self._buffer(self.tile_geom.y_shape)
        x_buf = self._buffer(self.tile_geom.x_shape)
        dy_buf = self._buffer(self.tile_geom.y_shape) if need_dw else None
        for i, group in enumerate(self.tile_groups()):
            windows = self._input_windows(x, group, x_buf)
            dy_tiles = (None if dy_buf is None
                        else self._output_tiles(saved_dy.array, group, dy_buf))
            self.passes.transposed_piece(windows, k,
                                         out=None if y_buf is None else y_buf[:len(windows), ...],
                                         dy_piece=dy_tiles, accumulate=i > 0)
            if y is not None and y_buf is not None:
                self._scatter(y_buf, group, y)
        return y, self.passes.weight_grad() if need_dw else None


# -- the plugin: cost terms, tile search, registry entry -------------------------------------
def work(geom: ConvGeometry, dtype, tile, per_pass: Optional[int] = None) -> Work:
    """Units of work of one training step with output tiles ``tile``: the FFT work
    of one tile (its input transformed again in the backward pass when the tiles
    take several passes) times the number of tiles, plus the weight transform,
    done once; the fixed costs once per pass of ``per_pass`` tiles (default
    :func:`tiles_per_pass`),
    not per tile; and the per-tile window and tile copies, whose Python cost
    makes many small tiles dear.  A :func:`single_tile` is the FFT path's work."""
    if single_tile(geom, tile):
        return fft.work(geom, dtype)
    tg = tile_geometry(geom, tile)
    n_tiles = math.prod(-(-o // b) for o, b in zip(geom.out_size, tile))
    n_passes = -(-n_tiles // (per_pass or tiles_per_pass(geom, dtype, tile)))
    per_tile = fft.work(tg, dtype, weight_transforms=False,
                        input_transforms=1 if n_passes == 1 else 2)
    fixed = {k: per_tile.pop(k) for k in ("call", "fft_call")}
    units = costs.add({k: v * n_tiles for k, v in per_tile.items()},
                      {k: v * n_passes for k, v in fixed.items()})
    # each tile's slices copied by Python: window in, tile out; dy tile in, dx
    # window added; x's window in again when several passes keep no spectrum
    units["tile_copy"] = float(n_tiles * (4 if n_passes == 1 else 5))
    units["tile_element"] = n_tiles * moved_per_tile(tg, n_passes > 1) * costs.precision(dtype)
    return costs.add(units, fft.weight_transform_work(tg, dtype))


def moved_per_tile(tg: ConvGeometry, again: bool) -> float:
    """Elements one tile's copies write: its window of ``x`` in, its tile of ``y``
    out and of ``dy`` in, its window of ``dx`` added (read and written); with
    several passes (``again``) the window of ``x`` once more.  Priced as
    ``tile_element``, as ``fft_tiles`` prices its gathers: whole overlapping
    windows are what make many tiles dearer than one transform."""
    window, tile = math.prod(tg.x_shape), math.prod(tg.y_shape)
    return float(window * (4 if again else 3) + 2 * tile)


def tile_candidates(geom: ConvGeometry, per_axis: int) -> List[List[int]]:
    """Per axis, up to ``per_axis`` output tile lengths whose window is a fast length.

    Windows run from about twice the effective kernel up to the padded size
    in steps of about 1.5x; a tile as large as the whole output is always a
    candidate.
    """
    lengths = []
    for o, s, ke, p in zip(geom.out_size, geom.stride, geom.effective_kernel, geom.padded_size):
        sizes, w = [], next_fast_length(2 * ke)
        while w < p:
            sizes.append((w - ke) // s + 1)
            w = next_fast_length(int(w * 1.5) + 1)
        sizes = sorted({b for b in sizes if 1 <= b < o})
        step = max(1, -(-len(sizes) // max(per_axis - 1, 1)))
        lengths.append(sizes[::step][:per_axis - 1] + [o])
    return lengths


def _per_axis(geom: ConvGeometry) -> int:
    """Candidate tile lengths per axis: fewer in more dimensions (their product is searched)."""
    return 8 if geom.ndim <= 2 else 5 if geom.ndim == 3 else 3


def best_tile(geom: ConvGeometry, dtype) -> Tuple[Tuple[int, ...], float]:
    """The cheapest output tile by the cost model, and its estimated seconds.

    The cheapest, not the smallest of the near-cheapest: that rule was measured
    slower at 1-D 2**20 k65 and 2-D 2048x2048 k9 (``docs/design-notes.md``).
    """
    cost, tile = min((costs.seconds(work(geom, dtype, tile)), tuple(tile))
                     for tile in itertools.product(*tile_candidates(geom, _per_axis(geom))))
    return tile, cost


def _budget_tiles(geom: ConvGeometry) -> List[Tuple[int, ...]]:
    """Tiles to try under a budget: the cost model's candidates and, per axis,
    every power of two below the output (down to one sample)."""
    lengths = [sorted(set(c) | {1 << i for i in range(o.bit_length()) if (1 << i) < o})
               for c, o in zip(tile_candidates(geom, _per_axis(geom)), geom.out_size)]
    return [tuple(t) for t in itertools.product(*lengths)]


def fitting_tiling(func: str, geom: ConvGeometry, dtype, limit: Optional[int],
                   tile: Optional[Tuple[int, ...]] = None) -> Tiling:
    """The output tile and tiles per pass under ``limit`` bytes: ``tile`` if given,
    else :func:`best_tile`, with as many tiles per pass as fit (up to
    :func:`tiles_per_pass`); without a given ``tile``, when not even one of the
    best tile per pass fits, the cheapest candidate tile that does."""
    preferred = tuple(tile) if tile is not None else best_tile(geom, dtype)[0]
    chosen, per_pass = budget.fitting_tiling(
        func, limit, preferred, [] if tile is not None else _budget_tiles(geom),
        per_pass=lambda t: 1 if single_tile(geom, t) else tiles_per_pass(geom, dtype, t),
        bytes_of=lambda t, n: workspace_bytes(geom, dtype, t, n),
        seconds_of=lambda t, n: costs.seconds(work(geom, dtype, t, n)), what="overlap-add")
    return Tiling(chosen, per_pass)


def _estimate(geom: ConvGeometry, dtype) -> Tuple[float, Tuple[int, ...]]:
    tile, seconds = best_tile(geom, dtype)
    return seconds, tile


def _tiling(geom: ConvGeometry, dtype: np.dtype, partition: Optional[Partition]) -> Tiling:
    """The tiling a partition stands for (the cost model's best tile for ``None``)."""
    if partition is None:
        return Tiling(best_tile(geom, dtype)[0], 0)
    assert isinstance(partition, Tiling), partition
    return partition


ALGORITHM = Algorithm(
    "overlap_add",
    build=lambda geom, dtype, settings, tiling, arrays: engine(
        geom, dtype, settings, arrays, *_tiling(geom, dtype, tiling)),
    partition=fitting_tiling,
    work=lambda geom, dtype, tiling: work(geom, dtype, *_tiling(geom, dtype, tiling)),
    estimate=_estimate, tiled=True)
