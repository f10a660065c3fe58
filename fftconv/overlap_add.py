"""Overlap-add tiling: a large input processed as tiles by one small FFT engine.

The output is cut into tiles of ``tile`` samples per axis.  Output tile
``[t, t + B)`` reads the padded-input window ``[t*s, t*s + (B-1)*s + ke)``,
so each tile is an ordinary "valid" layer of window size ``W = (B-1)*s + ke``
(``geometry``), run by one :class:`~fftconv.fftpath.FFTEngine` built for that
window:

* forward: each tile's ``y`` is written to its place in ``y``;
* input gradient: each tile's ``dx`` window is *added* into ``dx`` (windows
  overlap by ``ke - s`` samples: overlap-add);
* weight gradient: the engine sums the tiles' weight-gradient spectra and
  inverts once.

The weights are transformed once per weight update, at the tile's FFT size.
FFT workspace is bounded by the tile, not by the input: the engine holds
buffers for one window of the whole batch, plus the window being copied in.
Edge tiles read zeros beyond the padded input and their outputs beyond ``out``
are dropped, so every tile has the same geometry.
"""
from __future__ import annotations

import itertools
from typing import Optional

import numpy as np

from .config import Settings
from .fftpath import FFTEngine
from .geometry import ConvGeometry, make_geometry


def tile_geometry(geom: ConvGeometry, tile) -> ConvGeometry:
    """The "valid" layer one output tile of ``tile`` samples per axis computes."""
    window = tuple((b - 1) * s + ke for b, s, ke in zip(tile, geom.stride, geom.effective_kernel))
    return make_geometry((geom.batch, geom.in_channels) + window, geom.w_shape, "valid",
                         geom.stride, geom.dilation, geom.groups, geom.flip_kernel, geom.real)


def _clip(start: int, size: int, lo: int, n: int):
    """Where padded-coordinate window ``[start, start+size)`` meets ``[0, n)`` of the
    unpadded array (``lo`` = padding before it): ``(array slice, window slice)``."""
    a = start - lo
    src = slice(min(max(a, 0), n), max(min(a + size, n), 0))
    return src, slice(src.start - a, src.start - a + src.stop - src.start)


class OverlapAddEngine:
    """Forward and backward passes of ``geom`` by overlap-add over output tiles.

    Same interface as :class:`~fftconv.fftpath.FFTEngine` (``forward``,
    ``backward``, ``weight_spectrum``, ``transform_counts``,
    ``workspace_bytes``); never keeps ``X``, so the backward pass transforms
    the input tiles again.
    """

    keeps_x_spectrum = False

    def __init__(self, geom: ConvGeometry, dtype, settings: Settings, tile):
        self.geom = geom
        self.dtype = np.dtype(dtype)
        self.tile = tuple(min(t, o) for t, o in zip(tile, geom.out_size))
        self.tile_geom = tile_geometry(geom, self.tile)
        self.inner = FFTEngine(self.tile_geom, dtype, settings)
        self.lock = self.inner.lock
        self.chunk = geom.batch

    @property
    def transform_counts(self) -> dict:
        return self.inner.transform_counts

    @property
    def workspace_bytes(self) -> int:
        """The tile engine's buffers plus the input, output and gradient windows."""
        t = self.tile_geom
        window = np.prod(t.x_shape) + np.prod(t.y_shape)
        return self.inner.workspace_bytes + int(window) * 2 * self.dtype.itemsize

    @property
    def n_tiles(self) -> int:
        return int(np.prod([-(-o // b) for o, b in zip(self.geom.out_size, self.tile)]))

    def tiles(self):
        """Output start index per axis of every tile."""
        return itertools.product(*(range(0, o, b) for o, b in zip(self.geom.out_size, self.tile)))

    def _input_window(self, x: np.ndarray, starts) -> tuple:
        """Padded-input window of a tile, zero outside ``x``; and the slices used."""
        g, t = self.geom, self.tile_geom
        clips = [_clip(st * s, w, lo, n) for st, s, w, (lo, _), n in
                 zip(starts, g.stride, t.in_size, g.padding, g.in_size)]
        window = np.zeros(t.x_shape, self.dtype)
        src = (Ellipsis,) + tuple(c[0] for c in clips)
        dst = (Ellipsis,) + tuple(c[1] for c in clips)
        window[dst] = x[src]
        return window, src, dst

    def _output_slices(self, starts) -> tuple:
        """``(slices into y, slices into the tile's y)`` for a tile."""
        stops = [min(st + b, o) for st, b, o in zip(starts, self.tile, self.geom.out_size)]
        into_y = (Ellipsis,) + tuple(slice(a, b) for a, b in zip(starts, stops))
        into_tile = (Ellipsis,) + tuple(slice(0, b - a) for a, b in zip(starts, stops))
        return into_y, into_tile

    def weight_spectrum(self, w: np.ndarray) -> np.ndarray:
        return self.inner.weight_spectrum(w)

    def forward(self, x: np.ndarray, k: np.ndarray, keep_x: bool = False) -> tuple:
        """``(y, None)``, ``y`` without bias (``X`` is never kept)."""
        y = np.empty(self.geom.y_shape, self.dtype)
        y_tile = np.empty(self.tile_geom.y_shape, self.dtype)
        for starts in self.tiles():
            window, _, _ = self._input_window(x, starts)
            self.inner.forward_piece(window, k, out=y_tile)
            into_y, into_tile = self._output_slices(starts)
            y[into_y] = y_tile[into_tile]
        return y, None

    def backward(self, dy: np.ndarray, x: np.ndarray, k: np.ndarray,
                 x_spec: Optional[np.ndarray] = None) -> tuple:
        """``(dx, dw)``: tiles' input gradients overlap-added, weight gradients summed."""
        dx = np.zeros(self.geom.x_shape, self.dtype)
        dy_tile = np.zeros(self.tile_geom.y_shape, self.dtype)
        dx_tile = np.empty(self.tile_geom.x_shape, self.dtype)
        for i, starts in enumerate(self.tiles()):
            window, src, dst = self._input_window(x, starts)
            into_y, into_tile = self._output_slices(starts)
            dy_tile.fill(0)
            dy_tile[into_tile] = dy[into_y]
            self.inner.backward_piece(dy_tile, k, out=dx_tile, x_piece=window, accumulate=i > 0)
            dx[src] += dx_tile[dst]
        return dx, self.inner.weight_grad()
