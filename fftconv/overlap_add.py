"""Overlap-add tiling: a large input processed as tiles by one small FFT engine.

The output is cut into tiles of ``tile`` samples per axis.  Output tile
``[t, t + B)`` reads the padded-input window ``[t*s, t*s + (B-1)*s + ke)``,
so each tile is an ordinary "valid" layer of window size ``W = (B-1)*s + ke``
(``geometry.tile_geometry``), run by one :class:`~fftconv.fftpath.FFTEngine`
built for that window:

* forward: each tile's ``y`` is written to its place in ``y``;
* input gradient: each tile's ``dx`` window is *added* into ``dx`` (windows
  overlap by ``ke - s`` samples: overlap-add);
* weight gradient: the engine sums the tiles' weight-gradient spectra and
  inverts once.

The weights are transformed once per weight update, at the tile's FFT size.
FFT workspace is bounded by the tile, not by the input: the engine holds
buffers for one window of the whole batch, plus the window being copied in.
Edge tiles read zeros beyond the padded input and their outputs beyond ``out``
are dropped, so every tile has the same geometry.  The engine never keeps a
spectrum between passes: a saved operand is the operand itself, and the
backward pass transforms its tiles again.
"""
from __future__ import annotations

import itertools

import numpy as np

from . import contraction
from .config import Settings
from .fftpath import FFTEngine
from .fftpath import workspace_bytes as fft_workspace_bytes
from .geometry import ConvGeometry, tile_geometry, window_clip
from .protocol import Saved
from .transforms import spectrum_bytes


def workspace_bytes(geom: ConvGeometry, dtype, tile) -> int:
    """Bytes of an overlap-add engine with output tiles ``tile``: the tile engine's
    buffers, the input, output and gradient windows of one tile, and the channel
    contraction's frequency block (small tiles make it count)."""
    tile = tuple(min(t, o) for t, o in zip(tile, geom.out_size))
    t = tile_geometry(geom, tile)
    window = np.prod(t.x_shape) + np.prod(t.y_shape)
    rows = t.batch * max(t.in_channels, t.out_channels)
    block = min(contraction.BLOCK_BYTES, spectrum_bytes(rows, t.fft_shape, dtype))
    return fft_workspace_bytes(t, dtype, t.batch) + int(window) * 2 * np.dtype(dtype).itemsize + block


class OverlapAddEngine:
    """Forward and backward passes of ``geom`` by overlap-add over output tiles
    (the engine protocol of ``fftconv.protocol``)."""

    def __init__(self, geom: ConvGeometry, dtype, settings: Settings, tile):
        self.geom = geom
        self.dtype = np.dtype(dtype)
        self.tile = tuple(min(t, o) for t, o in zip(tile, geom.out_size))
        self.tile_geom = tile_geometry(geom, self.tile)
        self.inner = FFTEngine(self.tile_geom, dtype, settings)
        self.lock = self.inner.lock
        self.chunk = geom.batch

    @property
    def fft_shape(self) -> tuple:
        """FFT size of one tile."""
        return self.tile_geom.fft_shape

    @property
    def transform_counts(self) -> dict:
        return self.inner.transform_counts

    @property
    def workspace_bytes(self) -> int:
        """The tile engine's buffers plus the input, output and gradient windows."""
        return workspace_bytes(self.geom, self.dtype, self.tile)

    @property
    def kept_bytes(self) -> int:
        """Bytes a forward pass keeps for the backward pass: a copy of its input."""
        return int(np.prod(self.geom.x_shape)) * self.dtype.itemsize

    def tiles(self):
        """Output start index per axis of every tile."""
        return itertools.product(*(range(0, o, b) for o, b in zip(self.geom.out_size, self.tile)))

    def _window_slices(self, starts) -> tuple:
        """``(slices into x, slices into the window)`` where a tile's padded-input
        window meets ``x``."""
        g, t = self.geom, self.tile_geom
        clips = [window_clip(st * s, w, lo, n) for st, s, w, (lo, _), n in
                 zip(starts, g.stride, t.in_size, g.padding, g.in_size)]
        return (Ellipsis,) + tuple(c[0] for c in clips), (Ellipsis,) + tuple(c[1] for c in clips)

    def _input_window(self, x: np.ndarray, starts) -> np.ndarray:
        """Padded-input window of a tile, zero outside ``x``."""
        window = np.zeros(self.tile_geom.x_shape, self.dtype)
        src, dst = self._window_slices(starts)
        window[dst] = x[src]
        return window

    def _output_slices(self, starts) -> tuple:
        """``(slices into y, slices into the tile's y)`` for a tile."""
        stops = [min(st + b, o) for st, b, o in zip(starts, self.tile, self.geom.out_size)]
        into_y = (Ellipsis,) + tuple(slice(a, b) for a, b in zip(starts, stops))
        into_tile = (Ellipsis,) + tuple(slice(0, b - a) for a, b in zip(starts, stops))
        return into_y, into_tile

    def _output_tile(self, dy: np.ndarray, starts, buffer: np.ndarray) -> np.ndarray:
        """A tile's part of an output-shaped ``dy`` in ``buffer``, zero beyond ``out``."""
        into_y, into_tile = self._output_slices(starts)
        buffer.fill(0)
        buffer[into_tile] = dy[into_y]
        return buffer

    # -- the engine protocol ----------------------------------------------------------
    def weights(self, w: np.ndarray) -> np.ndarray:
        return self.inner.weight_spectrum(w)

    @staticmethod
    def save_input(x: np.ndarray) -> Saved:
        return Saved("signal", x)

    save_output = save_input

    def forward(self, x, k, keep=False, out=None) -> tuple:
        y = np.empty(self.geom.y_shape, self.dtype) if out is None else out
        y_tile = np.empty(self.tile_geom.y_shape, self.dtype)
        for starts in self.tiles():
            window = self._input_window(x, starts)
            self.inner.forward_piece(window, k, out=y_tile)
            into_y, into_tile = self._output_slices(starts)
            y[into_y] = y_tile[into_tile]
        return y, Saved("signal", x.copy()) if keep else None

    def input_grad(self, dy, k, keep=False, out=None) -> tuple:
        dx, _ = self.backward(dy, None, k, need_dw=False, out=out)
        return dx, Saved("signal", dy.copy()) if keep else None

    def backward(self, dy, saved_x, k, need_dx=True, need_dw=True, out=None) -> tuple:
        """Tiles' input gradients overlap-added, weight gradients summed."""
        dx = None
        if need_dx:
            dx = np.zeros(self.geom.x_shape, self.dtype) if out is None else out
            dx.fill(0)
        dy_tile = np.zeros(self.tile_geom.y_shape, self.dtype)
        dx_tile = np.empty(self.tile_geom.x_shape, self.dtype) if need_dx else None
        for i, starts in enumerate(self.tiles()):
            window = self._input_window(saved_x.array, starts) if need_dw else None
            self.inner.backward_piece(self._output_tile(dy, starts, dy_tile), k, out=dx_tile,
                                      x_piece=window, accumulate=i > 0)
            if need_dx:
                src, dst = self._window_slices(starts)
                dx[src] += dx_tile[dst]
        return dx, self.inner.weight_grad() if need_dw else None

    def transposed_backward(self, x, saved_dy, k, need_y=True, need_dw=True, out=None) -> tuple:
        """Each input window transformed once for its ``y`` tile and its share of ``dw``."""
        y = None if not need_y else np.empty(self.geom.y_shape, self.dtype) if out is None else out
        y_tile = np.empty(self.tile_geom.y_shape, self.dtype) if need_y else None
        dy_tile = np.zeros(self.tile_geom.y_shape, self.dtype)
        for i, starts in enumerate(self.tiles()):
            window = self._input_window(x, starts)
            dy_piece = self._output_tile(saved_dy.array, starts, dy_tile) if need_dw else None
            self.inner.transposed_piece(window, k, out=y_tile, dy_piece=dy_piece,
                                        accumulate=i > 0)
            if need_y:
                into_y, into_tile = self._output_slices(starts)
                y[into_y] = y_tile[into_tile]
        return y, self.inner.weight_grad() if need_dw else None
