"""Pure integer geometry of a layer cut into blocks (``fftconv.dask``).

Shapes, chunk boundaries and index runs only, never arrays and never dask, so
every rule here is testable without running a transform.  The layer's own
numbers (padding ``(lo, hi)``, output size, stride, effective kernel,
padding mode) come from ``geometry.LayerGeometry``; this module only cuts
them along the input's chunk boundaries.

Per spatial axis, with the input cut at ``X_0 = 0 <= X_1 <= ... <= X_m = n``:

* **output blocks**: output ``i`` belongs to the block holding input sample
  ``i*s``, so block ``j`` is ``[O_j, O_{j+1})`` with ``O_j = ceil(X_j / s)``
  clamped to ``[0, out]`` (the last block also takes the outputs past the
  input, as "full" padding makes).  Every output has exactly one block, so
  stride lines up across borders; a "same" layer with stride 1 keeps the
  input's chunks.  A block may be empty (an input chunk shorter than the
  stride).
* **forward windows**: block ``j`` reads the padded positions
  ``[O_j*s, O_j*s + window_length(O_{j+1} - O_j, s, ke))`` and runs a "valid"
  layer on them.  Position ``q`` copies input sample
  ``source_index(q - lo, n, padding_mode)``, a zero when that is ``-1``: the
  halo comes from the neighbouring blocks (any number of them when chunks
  are smaller than the kernel), the padding from the true array edges.
  Consecutive positions that copy consecutive samples of one block form a
  :class:`Run`; a window is a handful of runs per axis.
* **input-gradient blocks**: the padded axis is cut at ``Q_j = X_j + lo``
  (with a padding mode, ``0`` and ``n + lo + hi`` at the ends), so that block
  ``j``'s positions inside the input are exactly input chunk ``j``.  Its gradient ``dxpad`` is
  the transposed convolution of the outputs that touch it
  (:meth:`AxisBlocks.dy_range`: ``dy`` with its own halo), and it is folded
  onto the input through the same runs read backwards (the padding
  operator's adjoint: a halo position adds onto the sample it copied).
"""
from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from functools import cached_property
from typing import Tuple

from ..geometry import LayerGeometry, source_index, window_length


@dataclass(frozen=True)
class Run:
    """``length`` window positions from ``dst`` on copy samples of source block
    ``block`` from local index ``src`` on, in steps of ``step`` (+1, or -1 in a
    reflected halo)."""

    dst: int
    block: int
    src: int
    length: int
    step: int = 1

    @property
    def dst_slice(self) -> slice:
        return slice(self.dst, self.dst + self.length)

    @property
    def src_slice(self) -> slice:
        """The samples read, as an increasing slice (reverse it when ``step`` is -1)."""
        first = self.src if self.step > 0 else self.src - self.length + 1
        return slice(first, first + self.length)


def bounds_of(chunks) -> Tuple[int, ...]:
    """Chunk sizes ``(c_0, c_1, ...)`` -> boundaries ``(0, c_0, c_0 + c_1, ...)``."""
    out = [0]
    for c in chunks:
        out.append(out[-1] + int(c))
    return tuple(out)


def chunks_of(bounds) -> Tuple[int, ...]:
    """Inverse of :func:`bounds_of`."""
    return tuple(b - a for a, b in zip(bounds[:-1], bounds[1:]))


def block_of(index: int, bounds) -> int:
    """The (non-empty) block holding sample ``index``."""
    return bisect_right(bounds, index) - 1


def _append(runs: list, dst: int, source: int, bounds):
    """Add window position ``dst`` copying sample ``source`` (-1: a zero), extending
    the last run when it continues it."""
    if source < 0:
        return
    block = block_of(source, bounds)
    local = source - bounds[block]
    if runs:
        last = runs[-1]
        if last.block == block and last.dst + last.length == dst:
            if last.length == 1 and abs(local - last.src) == 1:
                runs[-1] = Run(last.dst, block, last.src, 2, local - last.src)
                return
            if local == last.src + last.step * last.length:
                runs[-1] = Run(last.dst, block, last.src, last.length + 1, last.step)
                return
    runs.append(Run(dst, block, local, 1))


def gather_runs(start: int, stop: int, lo: int, n: int, mode: str, bounds) -> Tuple[Run, ...]:
    """The runs that fill padded positions ``[start, stop)`` of an axis of ``n``
    samples padded by ``lo`` before it with ``mode`` (``padding_mode``), cut into
    source blocks at ``bounds``.  Positions without a run are zeros.

    The halo is walked position by position (it is at most the padding long);
    the inside is one run per block it crosses, whatever its length.
    """
    runs: list = []
    for q in range(start, min(stop, lo)):
        _append(runs, q - start, source_index(q - lo, n, mode), bounds)
    p, end = max(start, lo) - lo, min(stop, lo + n) - lo
    while p < end:
        block = block_of(p, bounds)
        upto = min(bounds[block + 1], end)
        runs.append(Run(p + lo - start, block, p - bounds[block], upto - p))
        p = upto
    for q in range(max(start, lo + n), stop):
        _append(runs, q - start, source_index(q - lo, n, mode), bounds)
    return tuple(runs)


@dataclass(frozen=True)
class AxisBlocks:
    """One spatial axis of a layer cut at the input's chunk boundaries ``bounds``."""

    n: int
    lo: int
    hi: int
    stride: int
    kernel: int  # effective: d*(k-1) + 1
    out: int
    mode: str
    bounds: Tuple[int, ...]

    @property
    def blocks(self) -> int:
        return len(self.bounds) - 1

    # -- forward -------------------------------------------------------------------------
    @property
    def out_bounds(self) -> Tuple[int, ...]:
        """``O_j``: output block ``j`` is ``[O_j, O_{j+1})``."""
        s = self.stride
        inner = tuple(min(max(-(-x // s), 0), self.out) for x in self.bounds[1:-1])
        return (0,) + inner + (self.out,)

    @property
    def out_chunks(self) -> Tuple[int, ...]:
        return chunks_of(self.out_bounds)

    def window(self, j: int) -> Tuple[int, int]:
        """Padded positions ``[start, stop)`` output block ``j`` reads (empty if it is)."""
        first, last = self.out_bounds[j], self.out_bounds[j + 1]
        if first == last:
            return first * self.stride, first * self.stride
        start = first * self.stride
        return start, start + window_length(last - first, self.stride, self.kernel)

    def window_runs(self, j: int) -> Tuple[Run, ...]:
        """How output block ``j``'s window is filled from the input blocks."""
        return gather_runs(*self.window(j), self.lo, self.n, self.mode, self.bounds)

    # -- input gradient ------------------------------------------------------------------
    @property
    def padded_bounds(self) -> Tuple[int, ...]:
        """``Q_j``: input-gradient block ``j`` covers padded positions ``[Q_j, Q_{j+1})``.

        With zero padding the halo's gradient is dropped, so it is not computed:
        the blocks are the input chunks shifted by ``lo``, and equal chunks give
        equal blocks (one plan).  With a padding mode the first and last blocks
        also cover the halo, whose gradient folds back onto the input."""
        inner = tuple(x + self.lo for x in self.bounds)
        if self.mode == "zeros":
            return inner
        return (0,) + inner[1:-1] + (self.n + self.lo + self.hi,)

    def dy_range(self, j: int) -> Tuple[int, int]:
        """Outputs ``[i0, i1)`` whose receptive fields can touch block ``j``'s padded
        positions (output ``i`` reads ``[i*s, i*s + ke)``); empty for an empty block.

        Not clamped to ``[0, out)``: outputs past the ends are zeros
        (:meth:`dy_runs`), so that equal blocks read equal windows, hence share
        one plan, at the array's edges too."""
        a, e = self.padded_bounds[j], self.padded_bounds[j + 1]
        s = self.stride
        i0 = (a - self.kernel) // s + 1
        return (i0, -(-e // s)) if a < e else (i0, i0)

    def dy_runs(self, j: int) -> Tuple[Run, ...]:
        """How block ``j``'s ``dy`` window is filled from the output blocks (zeros
        outside ``[0, out)``)."""
        return gather_runs(*self.dy_range(j), 0, self.out, "zeros", self.out_bounds)

    def dxpad_crop(self, j: int) -> Tuple[slice, slice]:
        """``(in the transposed result, in the block)``: where the transposed convolution
        of ``dy_range(j)`` (padded positions ``[i0*s, i0*s + window)``) meets block ``j``."""
        a, e = self.padded_bounds[j], self.padded_bounds[j + 1]
        i0, i1 = self.dy_range(j)
        start = i0 * self.stride
        stop = start + window_length(i1 - i0, self.stride, self.kernel)
        lo_, hi_ = max(a, start), min(e, stop)
        return slice(lo_ - start, hi_ - start), slice(lo_ - a, hi_ - a)

    def grad_runs(self, j: int) -> Tuple[Run, ...]:
        """How input-gradient block ``j``'s padded positions map onto the input blocks
        (read in reverse: each run adds ``dxpad[dst]`` onto its samples)."""
        a, e = self.padded_bounds[j], self.padded_bounds[j + 1]
        return gather_runs(a, e, self.lo, self.n, self.mode, self.bounds)

    def dx_sources(self, block: int) -> Tuple[Tuple[int, Run], ...]:
        """``(j, run)`` for every run of every input-gradient block that lands in input
        block ``block``: the interior of block ``block`` and, with a padding mode,
        the halo folded onto it from the array's ends."""
        return self._sources.get(block, ())

    @cached_property
    def _sources(self) -> dict:
        """:meth:`dx_sources` for every block, from one walk over the runs."""
        found: dict = {}
        for j in range(self.blocks):
            for r in self.grad_runs(j):
                found.setdefault(r.block, []).append((j, r))
        return {block: tuple(v) for block, v in found.items()}


def layer_blocks(layer: LayerGeometry, spatial_chunks) -> Tuple[AxisBlocks, ...]:
    """One :class:`AxisBlocks` per spatial axis of ``layer`` (a non-transposed layer),
    for input chunks ``spatial_chunks`` (dask's ``chunks[2:]``, channels-first)."""
    conv = layer.conv
    return tuple(AxisBlocks(n, lo, hi, s, ke, out, layer.padding_mode, bounds_of(chunks))
                 for n, (lo, hi), s, ke, out, chunks in
                 zip(layer.in_size, layer.padding, conv.stride, conv.effective_kernel,
                     layer.out_size, spatial_chunks))
