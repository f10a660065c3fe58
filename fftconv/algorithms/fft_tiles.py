"""Small FFT tiles: NNPACK's 8x8 / 16x16 FFT tiles, all tiles of a pass as one batch.

The output is cut into tiles of ``B`` samples per axis on a regular grid of
``T = ceil(out / B)`` tiles; output tile ``t`` reads the padded-input window
``[t*B*s, t*B*s + W)``, ``W = (B-1)*s + ke`` (``geometry.tile_geometry``), a
"valid" layer that one :class:`~fftconv.algorithms.fft.Passes` computes for
every tile of a pass at once, tiles and samples in its batch axis, so the
channel products run with ``tiles * N`` rows per frequency.  This is
overlap-add's algorithm (``overlap_add``) with the per-tile Python work taken
out: the windows are cut in ``J = ceil(W / (B*s))`` pieces per axis, and each
piece of *all* tiles is one sliced, permuted copy of a zero-bordered staging
array, so a pass moves its windows in ``J**d`` copies (4 in 2-D when
``W <= 2*B*s``), whatever the number of tiles:

* forward: the windows gathered, transformed, multiplied, inverted; the tiles
  written into a staging output with one permuted copy, cropped into ``y``;
* input gradient: the ``dy`` tiles gathered the same way; the windows'
  gradients added into a staging ``dx`` in ``J**d`` strided adds (the
  overlap-add), cropped into ``dx``;
* weight gradient: the tiles' weight-gradient spectra summed by the products
  and inverted once.

A pass runs a whole number of *slabs* (the tiles sharing a first-axis index);
by default every tile runs in one pass, so the forward pass can keep the
windows' spectrum for the backward pass.  Window lengths are chosen among
:data:`WINDOWS` by the cost model.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import threading
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .. import budget, contraction, costs
from ..backends import Arrays
from ..config import Settings
from ..costs import Work
from ..geometry import ConvGeometry, tile_geometry
from ..protocol import Algorithm, Partition, Tiling
from ..transforms import spectrum_bytes
from . import fft
from .fft import Passes, TiledEngine
from .fft import workspace_bytes as fft_workspace_bytes

#: FFT window lengths per axis the cost model chooses among (NNPACK's 8 and 16,
#: and 32 for kernels up to 9 and beyond).
WINDOWS = (8, 16, 32)


def grid(geom: ConvGeometry, tile: Sequence[int]) -> Tuple[int, ...]:
    """Tiles per axis: ``ceil(out / B)``."""
    return tuple(-(-o // b) for o, b in zip(geom.out_size, tile))


def steps(geom: ConvGeometry, tile: Sequence[int]) -> Tuple[int, ...]:
    """Input samples between the windows of neighbouring tiles, per axis: ``B * s``."""
    return tuple(b * s for b, s in zip(tile, geom.stride))


def parts(geom: ConvGeometry, tile: Sequence[int]) -> Tuple[int, ...]:
    """Pieces of one step each window is cut into, per axis: ``ceil(W / (B*s))``."""
    window = tile_geometry(geom, tile).in_size
    return tuple(-(-w // st) for w, st in zip(window, steps(geom, tile)))


def staged(geom: ConvGeometry, tile: Sequence[int]) -> Tuple[int, ...]:
    """Length per axis of the zero-bordered staging input: ``(T + J - 1)`` steps,
    enough for every window and for the padded input."""
    return tuple((t + j - 1) * st for t, j, st in
                 zip(grid(geom, tile), parts(geom, tile), steps(geom, tile)))


def slab(geom: ConvGeometry, tile: Sequence[int]) -> int:
    """Tiles in one slab (one index along the first axis of the tile grid)."""
    return math.prod(grid(geom, tile)[1:])


def slabs_per_pass(geom: ConvGeometry, tile: Sequence[int]) -> int:
    """Slabs one pass runs without a budget: all of them, so that a forward pass
    can keep the windows' spectrum and every copy and product is one call."""
    return grid(geom, tile)[0]


def pass_geometry(geom: ConvGeometry, tile: Sequence[int], slabs: int) -> ConvGeometry:
    """The "valid" window layer of one pass of ``slabs`` slabs of tiles."""
    return dataclasses.replace(tile_geometry(geom, tile), batch=geom.batch * slabs * slab(geom, tile))


def workspace_bytes(geom: ConvGeometry, dtype, tile: Sequence[int], slabs: int) -> int:
    """Bytes of an engine running ``slabs`` slabs per pass: the pass's FFT buffers,
    its window and tile buffers (input, its gradient, output, output gradient),
    the staging input, its gradient and the staging output, and the products'
    frequency block."""
    item = np.dtype(dtype).itemsize
    p = pass_geometry(geom, tile, slabs)
    windows = 2 * math.prod(p.x_shape) + 2 * math.prod(p.y_shape)
    stage = (2 * geom.batch * geom.in_channels * math.prod(staged(geom, tile))
             + geom.batch * geom.out_channels * math.prod(
                 t * b for t, b in zip(grid(geom, tile), tile)))
    rows = p.batch * max(p.in_channels, p.out_channels)
    block = min(contraction.BLOCK_BYTES, spectrum_bytes(rows, p.fft_shape, dtype))
    return fft_workspace_bytes(p, dtype, p.batch) + (windows + stage) * item + block


class TileEngine(TiledEngine):
    """Forward and backward passes of ``geom`` over a grid of small output tiles,
    ``slabs`` slabs of tiles per pass (the engine protocol of ``fftconv.protocol``).

    Not re-entrant (its staging arrays are its own); callers that share it hold
    :attr:`lock`.
    """

    def __init__(self, geom: ConvGeometry, dtype, settings: Settings, arrays: Arrays,
                 tile: Sequence[int], slabs: Optional[int] = None):
        self.geom, self.dtype, self.arrays = geom, np.dtype(dtype), arrays
        self.tile = tuple(min(t, o) for t, o in zip(tile, geom.out_size))
        self.grid, self.step = grid(geom, self.tile), steps(geom, self.tile)
        self.parts, self.staged = parts(geom, self.tile), staged(geom, self.tile)
        self.slabs = min(slabs or self.grid[0], self.grid[0])
        self.tile_geom = tile_geometry(geom, self.tile)
        p = pass_geometry(geom, self.tile, self.slabs)
        self.passes = Passes(p, self.dtype, settings, p.batch, arrays)
        self.lock = threading.Lock()
        self.chunk = geom.batch
        self.single_pass = self.slabs >= self.grid[0]
        self._stages: dict = {}

    # -- sizes ---------------------------------------------------------------------------
    @property
    def workspace_bytes(self) -> int:
        return workspace_bytes(self.geom, self.dtype, self.tile, self.slabs)

    # -- staging arrays ------------------------------------------------------------------
    def _stage(self, name: str, channels: int, lengths: Sequence[int]):
        """A zeroed staging array ``(N, channels, *lengths)``, made once: the
        passes rewrite only its interior, so its border stays zero."""
        if name not in self._stages:
            shape = (self.geom.batch, channels) + tuple(lengths)
            self._stages[name] = self.arrays.zeros(shape, self.dtype)
        return self._stages[name]

    def _interior(self, lo: Sequence[int], size: Sequence[int]) -> tuple:
        return (Ellipsis,) + tuple(slice(a, a + n) for a, n in zip(lo, size))

    def _padded(self, operand, name: str):
        """``operand`` (``x``-shaped) written into the staging input at its padding."""
        stage = self._stage(name, self.geom.in_channels, self.staged)
        inside = self._inside()
        self.arrays.copy_into(stage[inside[0]], operand[inside[1]])
        return stage

    def _inside(self) -> Tuple[tuple, tuple]:
        """``(staging slices, x slices)`` where ``x`` sits in the staging input: at its
        padding, clipped to the staging length (samples past the last window, at
        most ``s - 1`` per axis, are read by no output)."""
        g = self.geom
        sizes = [min(n, length - lo) for n, length, (lo, _) in
                 zip(g.in_size, self.staged, g.padding)]
        return (self._interior([lo for lo, _ in g.padding], sizes),
                (Ellipsis,) + tuple(slice(0, n) for n in sizes))

    def _blocked(self, stage, lengths: Sequence[int]):
        """``(N, C, T_1 + .., L_1, ...)`` view of a staging array as ``(N, C, blocks_1,
        L_1, blocks_2, L_2, ...)``."""
        shape = list(stage.shape[:2])
        for n, length in zip(stage.shape[2:], lengths):
            shape += [n // length, length]
        return self.arrays.reshape(stage, shape)

    def _order(self) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
        """Axes that take a blocked ``(N, C, T_1, L_1, ...)`` array to tile-major
        ``(T_1, ..., N, C, L_1, ...)``, and back."""
        d = self.geom.ndim
        to_tiles = tuple(2 + 2 * a for a in range(d)) + (0, 1) + tuple(3 + 2 * a for a in range(d))
        back = tuple(sorted(range(len(to_tiles)), key=to_tiles.__getitem__))
        return to_tiles, back

    def _pieces(self):
        """Per piece of a window: ``(window slices, per axis (first block, length))``."""
        w = self.tile_geom.in_size
        for js in itertools.product(*(range(j) for j in self.parts)):
            lengths = [min(st, n - j * st) for j, st, n in zip(js, self.step, w)]
            window = tuple(slice(j * st, j * st + n) for j, st, n in zip(js, self.step, lengths))
            yield window, list(zip(js, lengths))

    def _tiled(self, buffer, first: slice):
        """The rows of a pass buffer for slabs ``first``, and those rows viewed
        tile-major ``(slabs, T_2, ..., N, C, *window or tile)``."""
        count = first.stop - first.start
        rows = count * slab(self.geom, self.tile) * self.geom.batch
        view = buffer[:rows, ...]
        return view, self.arrays.reshape(view, (count,) + self.grid[1:] + (self.geom.batch,)
                                          + tuple(view.shape[1:]))

    def _select(self, first: slice, pieces) -> tuple:
        """Blocked-staging index of one piece for the slabs ``first``."""
        index: list = [slice(None), slice(None)]
        for axis, (j, length) in enumerate(pieces):
            start = j + (first.start if axis == 0 else 0)
            count = (first.stop - first.start) if axis == 0 else self.grid[axis]
            index += [slice(start, start + count), slice(0, length)]
        return tuple(index)

    # -- gathers and scatters --------------------------------------------------------------
    def _windows(self, stage, first: slice, buffer):
        """The padded-input windows of slabs ``first`` in ``buffer``'s rows, one copy per piece."""
        a = self.arrays
        rows, tiled = self._tiled(buffer, first)
        blocked = self._blocked(stage, self.step)
        to_tiles, _ = self._order()
        for window, pieces in self._pieces():
            a.copy_into(tiled[(Ellipsis,) + window],
                        a.permute(blocked[self._select(first, pieces)], to_tiles))
        return rows

    def _overlap_add(self, buffer, first: slice, stage) -> None:
        """Add the windows' gradients of slabs ``first`` into the staging ``dx``: one
        strided add per piece (the pieces of different tiles never meet)."""
        a = self.arrays
        _, tiled = self._tiled(buffer, first)
        blocked = self._blocked(stage, self.step)
        _, back = self._order()
        for window, pieces in self._pieces():
            index = self._select(first, pieces)
            blocked[index] += a.permute(tiled[(Ellipsis,) + window], back)

    def _output_stage(self, name: str):
        """The staging ``y`` (or ``dy``): the whole tile grid of outputs."""
        lengths = [t * b for t, b in zip(self.grid, self.tile)]
        return self._stage(name, self.geom.out_channels, lengths)

    def _dy_tiles(self, dy, first: slice, buffer):
        """The ``dy`` tiles of slabs ``first`` in ``buffer``'s rows (zero beyond ``out``)."""
        g, a = self.geom, self.arrays
        stage = self._output_stage("dy")
        if first.start == 0:
            a.copy_into(stage[self._interior([0] * g.ndim, g.out_size)], dy)
        rows, tiled = self._tiled(buffer, first)
        to_tiles, _ = self._order()
        whole = [(0, b) for b in self.tile]
        a.copy_into(tiled, a.permute(self._blocked(stage, self.tile)[self._select(first, whole)],
                                     to_tiles))
        return rows

    def _scatter(self, buffer, first: slice) -> None:
        """The output tiles of slabs ``first`` into the staging output."""
        a = self.arrays
        stage = self._output_stage("y")
        _, tiled = self._tiled(buffer, first)
        _, back = self._order()
        whole = [(0, b) for b in self.tile]
        a.copy_into(self._blocked(stage, self.tile)[self._select(first, whole)],
                    a.permute(tiled, back))

    def _output(self, out):
        """The staging output cropped to ``y`` (into ``out`` if given)."""
        g, a = self.geom, self.arrays
        y = a.empty(g.y_shape, self.dtype) if out is None else out
        a.copy_into(y, self._output_stage("y")[
            self._interior([0] * g.ndim, g.out_size)])
        return y

    def _buffer(self, shape):
        """A pass buffer of ``slabs`` slabs of tile-shaped operands, ``shape`` per sample."""
        rows = self.slabs * slab(self.geom, self.tile) * self.geom.batch
        return self.arrays.empty((rows,) + tuple(shape[1:]), self.dtype)

    def slab_groups(self) -> List[slice]:
        """The slabs of each pass."""
        return [slice(i, min(i + self.slabs, self.grid[0]))
                for i in range(0, self.grid[0], self.slabs)]

    # -- the engine protocol -------------------------------------------------------------
    def forward(self, x, k, keep=False, out=None) -> tuple:
        g = self.geom
        stage = self._padded(x, "x")
        x_buf, y_buf = self._buffer(self.tile_geom.x_shape), self._buffer(self.tile_geom.y_shape)
        kept = self.new_kept(keep)
        for first in self.slab_groups():
            windows = self._windows(stage, first, x_buf)
            self.passes.forward_piece(windows, k, out=y_buf[:windows.shape[0], ...], x_keep=kept)
            self._scatter(y_buf, first)
        return self.forward_result(x, self._output(out), kept, keep)

    def backward(self, dy, saved_x, k, need_dx=True, need_dw=True, out=None) -> tuple:
        """The windows' input gradients overlap-added, the weight gradients summed."""
        g, a = self.geom, self.arrays
        dx_stage = dx_buf = None
        if need_dx:
            dx_stage = self._stage("dx", g.in_channels, self.staged)
            a.copy_into(dx_stage, 0)
            dx_buf = self._buffer(self.tile_geom.x_shape)
        x_spec = saved_x.array if need_dw and saved_x.kind == "spectrum" else None
        x_stage = (self._padded(saved_x.array, "x")
                   if need_dw and x_spec is None else None)
        x_buf = self._buffer(self.tile_geom.x_shape) if x_stage is not None else None
        dy_buf = self._buffer(self.tile_geom.y_shape)
        for i, first in enumerate(self.slab_groups()):
            dy_tiles = self._dy_tiles(dy, first, dy_buf)
            windows = (None if x_stage is None or x_buf is None
                       else self._windows(x_stage, first, x_buf))
            self.passes.backward_piece(
                dy_tiles, k, out=None if dx_buf is None else dx_buf[:dy_tiles.shape[0], ...],
                x_piece=windows, x_spec=x_spec, accumulate=i > 0)
            if dx_buf is not None:
                self._overlap_add(dx_buf, first, dx_stage)
        dx = None
        if dx_stage is not None:
            dx = a.empty(g.x_shape, self.dtype) if out is None else out
            inside = self._inside()
            if any(sl.stop < n for sl, n in zip(inside[1][1:], g.in_size)):
                a.copy_into(dx, 0)  # samples no window reads have no gradient
            a.copy_into(dx[inside[1]], dx_stage[inside[0]])
        return dx, self.passes.weight_grad() if need_dw else None

    def transposed_backward(self, x, saved_dy, k, need_y=True, need_dw=True, out=None) -> tuple:
        """Each window transformed once for its ``y`` tile and its share of ``dw``."""
        stage = self._padded(x, "x")
        x_buf = self._buffer(self.tile_geom.x_shape)
        y_buf = self._buffer(self.tile_geom.y_shape) if need_y else None
        dy_buf = self._buffer(self.tile_geom.y_shape) if need_dw else None
        for i, first in enumerate(self.slab_groups()):
            windows = self._windows(stage, first, x_buf)
            dy_tiles = (None if dy_buf is None
                        else self._dy_tiles(saved_dy.array, first, dy_buf))
            self.passes.transposed_piece(
                windows, k, out=None if y_buf is None else y_buf[:windows.shape[0], ...],
                dy_piece=dy_tiles, accumulate=i > 0)
            if y_buf is not None:
                self._scatter(y_buf, first)
        y = self._output(out) if need_y else None
        return y, self.passes.weight_grad() if need_dw else None


# -- the plugin: cost terms, tile search, registry entry ---------------------------------------
def work(geom: ConvGeometry, dtype, tile: Sequence[int], slabs: Optional[int] = None) -> Work:
    """Units of work of one training step: per pass, the FFT path's work on the
    pass's windows (their input transformed again in the backward pass when there
    are several passes), without the weight transform, done once; plus
    :func:`moved_elements` (``tile_element``) and one ``tile_copy`` per piece copy."""
    t = grid(geom, tile)
    slabs = min(slabs or t[0], t[0])
    n_passes = -(-t[0] // slabs)
    p = pass_geometry(geom, tile, slabs)
    per_pass = fft.work(p, dtype, weight_transforms=False,
                        input_transforms=1 if n_passes == 1 else 2)
    units = costs.add({k: v * n_passes for k, v in per_pass.items()},
                      fft.weight_transform_work(p, dtype))
    units["tile_element"] = moved_elements(geom, tile, n_passes > 1) * costs.precision(dtype)
    units["tile_copy"] = float(n_passes * 3 * math.prod(parts(geom, tile)))
    return units


def moved_elements(geom: ConvGeometry, tile: Sequence[int], again: bool) -> float:
    """Elements the gathers and scatters of a training step write: ``x`` into the
    staging input, its windows, the output tiles and the crop into ``y``; the
    staging ``dx`` zeroed, ``dy`` staged and cut into tiles, the windows' gradients
    added (read and written), the crop into ``dx``; with several passes (``again``),
    ``x`` and its windows once more."""
    g = geom
    p = pass_geometry(geom, tile, grid(geom, tile)[0])
    x, y = g.batch * g.in_channels * math.prod(g.in_size), math.prod(g.y_shape)
    windows, tiles = math.prod(p.x_shape), math.prod(p.y_shape)
    stage = g.batch * g.in_channels * math.prod(staged(geom, tile))
    moved = 2 * x + stage + 3 * windows + 2 * tiles + 2 * y
    return float(moved + (x + windows if again else 0))


def tile_candidates(geom: ConvGeometry) -> List[Tuple[int, ...]]:
    """Output tiles whose windows are :data:`WINDOWS` long, per axis (at least one
    output sample per window; at most the whole output)."""
    lengths = []
    for o, s, ke in zip(geom.out_size, geom.stride, geom.effective_kernel):
        sizes = sorted({min((w - ke) // s + 1, o) for w in WINDOWS if w >= ke})
        lengths.append(sizes)
    return [tuple(t) for t in itertools.product(*lengths)]


def best_tile(geom: ConvGeometry, dtype) -> Tuple[Optional[Tuple[int, ...]], float]:
    """The cheapest candidate tile by the cost model, and its estimated seconds;
    ``(None, inf)`` when the kernel is longer than every window."""
    priced = [(costs.seconds(work(geom, dtype, tile)), tile) for tile in tile_candidates(geom)]
    if not priced:
        return None, math.inf
    seconds, tile = min(priced)
    return tile, seconds


def fitting_tiling(func: str, geom: ConvGeometry, dtype, limit: Optional[int],
                   tile: Optional[Tuple[int, ...]] = None) -> Tiling:
    """The output tile and the tiles per pass (whole slabs) under ``limit`` bytes:
    ``tile`` if given, else :func:`best_tile`, with as many slabs per pass as fit;
    without a given ``tile``, when not one slab of the best fits, the cheapest
    candidate that does."""
    preferred = tuple(tile) if tile is not None else best_tile(geom, dtype)[0]
    if preferred is None:  # outside the scope: no window holds the kernel
        preferred = tuple(geom.out_size)
    preferred = tuple(min(t, o) for t, o in zip(preferred, geom.out_size))
    chosen, slabs = budget.fitting_tiling(
        func, limit, preferred, [] if tile is not None else tile_candidates(geom),
        per_pass=lambda t: slabs_per_pass(geom, t),
        bytes_of=lambda t, n: workspace_bytes(geom, dtype, t, n),
        seconds_of=lambda t, n: costs.seconds(work(geom, dtype, t, n)), what="fft_tiles")
    return Tiling(chosen, slabs * slab(geom, chosen))


def _tiling(geom: ConvGeometry, dtype, partition: Optional[Partition]) -> Tuple[Tuple[int, ...], int]:
    """``(tile, slabs per pass)`` of a partition: the cost model's tile for ``None``;
    one pass (:func:`slabs_per_pass`) for ``None`` or ``per_pass`` 0, as overlap-add
    reads 0 as its default."""
    if partition is None:
        tile, per_pass = best_tile(geom, dtype)[0] or tuple(geom.out_size), 0
    else:
        assert isinstance(partition, Tiling), partition
        tile = tuple(min(t, o) for t, o in zip(partition.tile, geom.out_size))
        per_pass = partition.per_pass
    if not per_pass:
        return tile, slabs_per_pass(geom, tile)
    return tile, max(1, per_pass // slab(geom, tile))


def _estimate(geom: ConvGeometry, dtype) -> Tuple[float, Optional[Tuple[int, ...]]]:
    tile, seconds = best_tile(geom, dtype)
    return seconds, tile


ALGORITHM = Algorithm(
    "fft_tiles",
    build=lambda geom, dtype, settings, tiling, arrays: TileEngine(
        geom, dtype, settings, arrays, *_tiling(geom, dtype, tiling)),
    partition=fitting_tiling,
    work=lambda geom, dtype, tiling: work(geom, dtype, *_tiling(geom, dtype, tiling)),
    estimate=_estimate, tiled=True)
