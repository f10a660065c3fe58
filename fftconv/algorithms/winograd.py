"""Winograd minimal filtering for small kernels: F(4, 3) and F(2, 5) on every axis.

For a kernel of ``r`` taps and an output tile of ``m`` samples, Winograd's
(Toom-Cook's) algorithm computes the ``m`` outputs of a correlation from an
input tile of ``alpha = m + r - 1`` samples with ``alpha`` multiplications
instead of ``m * r`` (Lavin and Gray, "Fast algorithms for convolutional neural
networks", 2016):

    y = A^T [(G g) * (B^T d)]

with ``B^T`` (``alpha x alpha``), ``G`` (``alpha x r``) and ``A^T``
(``m x alpha``) fixed matrices.  The transforms are separable, so an N-d tile
is transformed by one matrix per spatial axis, and each axis takes its own
tile (:data:`OUTPUT_TILE`: F(4, 3) for 3 taps, F(2, 5) for 5; F(2, 3) in 3-D).  The channel sums
at each of the ``P = prod(alpha)`` transformed positions are batched GEMMs with
the tiles of the whole batch in the long dimension (NNPACK's layout):
``M[p] = U[p] @ V[p]``, ``U[p]`` the ``(C_out, C_in)`` transformed kernel and
``V[p]`` the ``(C_in, tiles)`` transformed input.

One trilinear form gives all three products of a training step (CONVENTIONS
§3: a gradient is the same machinery with roles exchanged).  The identity above
says ``sum_{i,j} u_i g_j d_{i+j} = sum_k (A u)_k (G g)_k (B^T d)_k`` for every
``u`` (``m`` values), ``g`` (``r``) and ``d`` (``alpha``); read for each operand:

* ``y  = A^T [(G g) * (B^T d)]``: the forward pass (tiles of ``x`` overlap by
  ``r - 1``; tiles of ``y`` do not);
* ``dd = B [(A u) * (G g)]`` with ``u`` a tile of ``dy``: the input gradient,
  the adjoint of the forward pass: non-overlapping tiles of ``dy`` go in, and
  overlapping tiles of ``dx`` are added up (overlap-add);
* ``dg = G^T [(A u) * (B^T d)]``: the weight gradient, Winograd's F(r, m) with
  the same points, the products summed over the tiles of the batch (a GEMM with
  the tiles in its inner dimension) before the one output transform.

So a step transforms ``x`` with ``B^T``, ``dy`` with ``A`` and ``w`` with ``G``;
the products' results go through ``A^T`` (``y``), ``B`` (``dx``) and ``G^T``
(``dw``).  The forward pass keeps ``x`` on its tile grid (below) and the
backward pass transforms it again, piece by piece in cache, rather than keep
the transformed tiles (2.25 times ``x`` in 2-D, 3.4 in 3-D).

The matrices come from the interpolation points :data:`POINTS` (0, -1, 1,
1/2, -2 and infinity, in exact rationals; Barabasz et al., "Error analysis and
improving the accuracy of Winograd convolution for deep neural networks",
2020).  Measured against float64 on random 64-channel layers in float32
(relative to the largest output, CONVENTIONS §4), the forward pass of F(4x4,
3x3) was off by 2.6e-6 with these points and 5.2e-6 with Lavin's (0, +-1,
+-2); F(2x2, 5x5) by 1.7e-6 and 4.4e-6; F(6x6, 3x3), 1.0e-5 at best, is out.
In 3-D the errors of a tile's three transforms compound: F(2, 5)'s weight
gradient was off by 2.3e-5 at best (4 samples, 16->16 channels, 24^3), and
F(4, 3)'s forward pass by 1.0e-5 at 128->128 channels (12^3), so 3-D layers take
F(2, 3) (4-point tiles) and 3 taps only.

Scope: stride 1, dilation 1 and 3 or 5 taps on every axis (5 in 1-D and 2-D
only, the two may mix), any padding (the engine computes one zero-padded
correlation, like every engine; the runner does transposed layers, padding
modes and layouts around it), groups, real and complex dtypes.  Elsewhere
:func:`work` is infinite, so ``auto`` never weighs it
(``registry.candidates``), and asking for it by name is a ``ValueError`` from
:func:`partition`, before any work.

Layout: operands live on tile grids whose tiles are contiguous slices
(:class:`Lattice`); a step runs in cache-sized pieces (:func:`pieces`), in up
to ``threads`` shares at once on host arrays.  Everything runs through the
operands' :class:`~fftconv.backends.Arrays`: gathers and scatters are slices
(no strided views, so every backend runs it), the transforms and the channel
sums ``matmul`` calls; numpy appears for dtypes only.

Speed (``python -m bench.winograd``, float32 training steps, 2 threads, one
run on the 2-core reference VM at load 0.9): it pays where the channel GEMMs
dominate, 3 taps and tens of channels or more: 2-D N=32 64->64 32x32 "same"
47 ms against direct's 60, the FFT path's 67 and PyTorch's 37; 3-D N=4
16->16 24^3 29 ms against 34, 27 and 10.  With few channels, or 5 taps on
large images (F(2, 5) writes 9 transformed values per input value), the
copies dominate and direct or the FFT path is faster (2-D N=8 16->16 128x128
k=5: 73 ms against 69 and 39), which the cost model (:func:`work`, its rates
fitted in ``fftconv.costs``) prices.
"""
from __future__ import annotations

import contextlib
import math
from fractions import Fraction
from functools import lru_cache
from itertools import product
from typing import Any, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from .. import budget, costs, runtime
from ..backends import Arrays, host
from ..checks import fail
from ..config import Settings, available_cores
from ..costs import Work
from ..geometry import ConvGeometry
from ..protocol import Algorithm, Partition, Saved

#: Output samples per tile for a kernel of this many taps, by the number of spatial
#: axes: F(4, 3) and F(2, 5) (both with 6-point input tiles) in 1-D and 2-D; F(2, 3)
#: in 3-D and beyond, where F(4, 3)'s error grows past float32's bound (module
#: docstring) and 5 taps are out of scope.
OUTPUT_TILE = {1: {3: 4, 5: 2}, 2: {3: 4, 5: 2}, 3: {3: 2}}


def _output_tile(ndim: int) -> dict:
    return OUTPUT_TILE[min(ndim, 3)]

#: The interpolation points, in order (the point at infinity is always added):
#: F(m, r) takes the first ``m + r - 2``.
POINTS: Tuple[Fraction, ...] = (Fraction(0), Fraction(-1), Fraction(1), Fraction(1, 2),
                                Fraction(-2), Fraction(2), Fraction(-1, 2))

Matrix = Tuple[Tuple[float, ...], ...]


# -- the transform matrices (host, exact rationals) -------------------------------------------
def _inverse(rows: List[List[Fraction]]) -> List[List[Fraction]]:
    """The inverse of a square matrix of rationals (Gauss-Jordan, exact)."""
    n = len(rows)
    a = [list(r) + [Fraction(int(i == j)) for j in range(n)] for i, r in enumerate(rows)]
    for c in range(n):
        p = next(i for i in range(c, n) if a[i][c] != 0)
        a[c], a[p] = a[p], a[c]
        pivot = a[c][c]
        a[c] = [v / pivot for v in a[c]]
        for i in range(n):
            if i != c and a[i][c] != 0:
                f = a[i][c]
                a[i] = [u - f * v for u, v in zip(a[i], a[c])]
    return [r[n:] for r in a]


def _evaluation(points: Sequence[Fraction], n: int) -> List[List[Fraction]]:
    """Rows ``[p**0 .. p**(n-1)]`` per point, then the point at infinity (the
    leading coefficient): a polynomial of ``n`` coefficients at every point."""
    rows = [[p ** j for j in range(n)] for p in points]
    return rows + [[Fraction(0)] * (n - 1) + [Fraction(1)]]


class Transforms(NamedTuple):
    """The matrices of F(m, r): ``bt`` (``B^T``, alpha x alpha), ``g`` (``G``,
    alpha x r), ``at`` (``A^T``, m x alpha), as nested tuples of floats."""

    bt: Matrix
    g: Matrix
    at: Matrix


@lru_cache(maxsize=None)
def transforms(m: int, r: int) -> Transforms:
    """F(m, r) from :data:`POINTS` (Toom-Cook): with ``E_n`` the evaluation of a
    polynomial of ``n`` coefficients at the points, the product ``h = u * g`` of
    polynomials is ``E_alpha^-1 [(E_m u) * (E_r g)]``; its transpose with respect
    to ``u`` is the correlation: ``B^T = E_alpha^-T``, ``G = E_r``, ``A^T = E_m^T``.
    Each row ``k`` of ``B^T`` is divided by its largest magnitude and row ``k`` of
    ``G`` multiplied by it (the product is unchanged, ``B^T`` has entries in
    [-1, 1])."""
    alpha = m + r - 1
    points = POINTS[:alpha - 1]
    inverse = _inverse(_evaluation(points, alpha))
    bt = [[inverse[j][k] for j in range(alpha)] for k in range(alpha)]
    g = _evaluation(points, r)
    for k in range(alpha):
        s = max(abs(v) for v in bt[k])
        bt[k] = [v / s for v in bt[k]]
        g[k] = [v * s for v in g[k]]
    e_m = _evaluation(points, m)
    at = [[e_m[k][i] for k in range(alpha)] for i in range(m)]

    def floats(rows) -> Matrix:
        return tuple(tuple(float(v) for v in row) for row in rows)
    return Transforms(floats(bt), floats(g), floats(at))


def _transposed(a: Matrix) -> Matrix:
    return tuple(zip(*a))


# -- the tiling: per axis, and the lattice of tiles ---------------------------------------------
class Axis(NamedTuple):
    """One spatial axis: ``m`` outputs per tile from ``alpha = m + r - 1`` inputs;
    ``tiles`` tiles cover the output; an input tile spans ``blocks`` blocks of
    ``m`` samples; ``lo``: the layer's padding before the input."""

    m: int
    r: int
    tiles: int
    lo: int

    @property
    def alpha(self) -> int:
        return self.m + self.r - 1

    @property
    def blocks(self) -> int:
        return -(-self.alpha // self.m)

    @property
    def span(self) -> int:
        """Blocks of the padded input: every tile's, ``tiles + blocks - 1``."""
        return self.tiles + self.blocks - 1


def supports(geom: ConvGeometry) -> bool:
    """Whether the engine computes ``geom``: stride 1, dilation 1 and a kernel of a
    size :data:`OUTPUT_TILE` has on every axis (3 or 5 taps in 1-D and 2-D, 3 taps
    beyond), not a circular geometry."""
    return (all(s == 1 for s in geom.stride) and all(d == 1 for d in geom.dilation)
            and all(k in _output_tile(geom.ndim) for k in geom.kernel) and not geom.wrap)


def axes_of(geom: ConvGeometry) -> Tuple[Axis, ...]:
    """The tiling of each spatial axis of a supported ``geom``."""
    tile = _output_tile(geom.ndim)
    return tuple(Axis(tile[k], k, -(-o // tile[k]), lo)
                 for k, o, (lo, _) in zip(geom.kernel, geom.out_size, geom.padding))


class Lattice(NamedTuple):
    """The tiles of one sample as one flat axis.

    Blocks ``(b_1, ..., b_d)`` of the padded input sit at flat position ``sum_a b_a
    * strides[a]`` (``strides[a] = prod(span[a+1:])``), so the input tile at
    ``(t_1, ..., t_d)`` reads, for each combination ``q`` of its blocks, the block
    at ``flat(t) + offset(q)``: for a run of tiles, one contiguous slice per
    ``q``.  The tiles computed are the ``tiles[0]`` first rows of that flat axis,
    ``count = tiles[0] * strides[0]`` of them: along the other axes the last
    ``blocks - 1`` positions of a row are not tiles of the output (their
    ``dy`` is zero, their ``y`` is dropped), the price of contiguous slices.
    The input grid has one row more than its blocks (``rows``), so that every
    shifted slice stays inside it."""

    axes: Tuple[Axis, ...]
    strides: Tuple[int, ...]

    @property
    def tile_count(self) -> int:
        return self.axes[0].tiles * self.strides[0]

    @property
    def rows(self) -> int:
        return self.axes[0].span + 1

    @property
    def input_length(self) -> int:
        return self.rows * self.strides[0]

    @property
    def output_shape(self) -> Tuple[int, ...]:
        """The tiles as a box: ``(tiles[0], span[1], ..., span[d-1])``."""
        return (self.axes[0].tiles,) + tuple(a.span for a in self.axes[1:])

    @property
    def input_shape(self) -> Tuple[int, ...]:
        return (self.rows,) + tuple(a.span for a in self.axes[1:])

    def offset(self, q: Sequence[int]) -> int:
        return sum(qa * s for qa, s in zip(q, self.strides))

    @property
    def positions(self) -> int:
        """``P``: transformed values per tile and channel."""
        return math.prod(a.alpha for a in self.axes)

    @property
    def within(self) -> int:
        """Samples per output tile."""
        return math.prod(a.m for a in self.axes)


def lattice_of(geom: ConvGeometry) -> Lattice:
    axes = axes_of(geom)
    spans = [a.span for a in axes]
    return Lattice(axes, tuple(math.prod(spans[i + 1:]) for i in range(len(axes))))


class Piece(NamedTuple):
    """Samples ``r0:r1`` of a chunk and tiles ``f0:f1`` of their flat lattice."""

    r0: int
    r1: int
    f0: int
    f1: int

    @property
    def tiles(self) -> int:
        return (self.r1 - self.r0) * (self.f1 - self.f0)


#: The transformed tiles of one *piece* (some samples, or a run of one sample's
#: tiles) take about this many bytes, so that a piece's gathers, transforms and
#: products run in cache; the layer passes through memory only on its way onto
#: and off the tile grids.  2-D N=32, 64->64 channels, 32x32, k=3, float32, one
#: thread (CPU time of a training step): 0.25 MiB 74 ms, 0.5 MiB 71, 1 MiB 69,
#: 2 MiB 72, 4 MiB 77, the whole batch at once (19 MiB) 90.
PIECE_BYTES = 1 << 20
#: ... but at least this many tiles, so that layers of many channels keep GEMMs
#: that two threads share well.  2-D N=8, 256->256, 14x14, k=3, 2 threads, best of
#: 5 rounds: one piece of 1 MiB (28 tiles) 79 ms, 256 tiles 35, 512 35, 1024 49
#: (the 64-channel layer above: 48, 50, 65 and 100 ms).
MIN_TILES = 256


def pieces(lattice: Lattice, n: int, channels: int, itemsize: int) -> List[Piece]:
    """The pieces of ``n`` samples whose transformed tiles (``channels`` channels,
    the larger side) take about :data:`PIECE_BYTES` each: whole samples when one
    fits, else runs of one sample's tiles."""
    per_tile = lattice.positions * channels * itemsize
    count = lattice.tile_count
    most = max(PIECE_BYTES // per_tile, MIN_TILES)
    if count <= most:
        k = max(1, most // count)
        return [Piece(r0, min(n, r0 + k), 0, count) for r0 in range(0, n, k)]
    return [Piece(r, r + 1, f0, min(count, f0 + most))
            for r in range(n) for f0 in range(0, count, most)]


def _sizes(geom: ConvGeometry, chunk: int) -> dict:
    """Element counts for ``chunk`` samples: the four grids (``x``, ``dx`` on the
    input lattice; ``dy``, ``y`` on the tiles), the transformed tiles of one
    piece on the input and output sides, the summed weight products, and the
    tiles of the whole chunk (``tiles``) with ``P`` (``p``) values each."""
    lat = lattice_of(geom)
    ci, co = geom.in_channels, geom.out_channels
    per_tile = lat.positions * max(ci, co) * 8  # the widest itemsize but complex128's
    per_piece = min(chunk * lat.tile_count,
                    2 * max(PIECE_BYTES // per_tile, MIN_TILES, lat.tile_count))
    return dict(x_grid=lat.within * ci * chunk * lat.input_length,
                y_grid=lat.within * co * chunk * lat.tile_count,
                x_piece=lat.positions * ci * per_piece, y_piece=lat.positions * co * per_piece,
                w_t=lat.positions * co * (ci // geom.groups), tiles=chunk * lat.tile_count,
                p=lat.positions)


def workspace_bytes(geom: ConvGeometry, dtype, chunk: int) -> int:
    """Bytes a step over ``chunk`` samples allocates beyond its inputs and outputs
    (an upper bound, checked against tracemalloc's peak in
    ``tests/test_winograd.py``): the four tile grids, a piece's tiles (gathered,
    transformed two at a time, their products and inverse transforms) and the
    weight gradient's summed products."""
    if chunk == 0 or not supports(geom):
        return 0
    s = _sizes(geom, chunk)
    shares = available_cores()  # pieces in flight at once, at most
    return np.dtype(dtype).itemsize * (2 * s["x_grid"] + 2 * s["y_grid"] + shares * (
        4 * (s["x_piece"] + s["y_piece"]) + 3 * s["w_t"]))


# -- the passes on the arrays' library ---------------------------------------------------------
class Weights(NamedTuple):
    """The engine's weight state: the transformed kernel ``u`` ``(P, G, Og, Cg)``
    and its conjugate transpose ``ut`` ``(P, G, Cg, Og)`` (the input gradient's)."""

    u: Any
    ut: Any


class WinogradEngine:
    """The Winograd algorithm behind the engine protocol (``fftconv.protocol``).

    Operands live on *tile grids* ``(m_1, ..., m_d, G, C, n, lattice)``: sample
    ``i`` of the zero-padded operand is at within-block offsets ``i_a % m_a``
    and block ``i_a // m_a`` of the flat :class:`Lattice`, so that the tiles of a
    piece (:func:`pieces`) are contiguous slices.  A pass puts its operand on a
    grid (``x`` on the input blocks at offset ``lo``, ``dy`` on the output tiles,
    zeros around), then, piece by piece, gathers the tiles (one slice per
    combination of blocks), transforms them, runs the channel products and the
    inverse transforms, and puts the result's tiles on its grid (overlap-added
    for ``dx``), read back into the result at the end.  The weight gradient sums
    its products over the pieces before its one transform.

    The batch runs ``chunk`` samples at a time (all of it unless a workspace
    budget asks for less, :func:`workspace_bytes`).  No buffer outlives a call,
    so the ``lock`` is a no-op and calls from many threads run concurrently.  A
    forward pass that keeps returns the grid of ``x`` (``Saved("padded")``, a new
    array; a chunked engine keeps a copy of ``x``).
    """

    fft_shape = None
    tile = None

    def __init__(self, geom: ConvGeometry, dtype, settings: Optional[Settings] = None,
                 chunk: Optional[int] = None, arrays: Optional[Arrays] = None):
        self.geom, self.dtype = geom, np.dtype(dtype)
        self.arrays = host() if arrays is None else arrays
        self.chunk = min(chunk or geom.batch, geom.batch)
        self.lock = contextlib.nullcontext()
        #: Pieces run in up to this many shares at once (host arrays only).
        self.threads = settings.threads if settings is not None and self.arrays.host else 1
        self.lattice = lattice_of(geom)
        self.axes = self.lattice.axes
        self._nd = geom.ndim
        self._cg = geom.in_channels // geom.groups
        self._og = geom.out_channels // geom.groups

    # -- protocol properties --------------------------------------------------------
    @property
    def workspace_bytes(self) -> int:
        return workspace_bytes(self.geom, self.dtype, self.chunk)

    @property
    def kept_bytes(self) -> int:
        """A forward pass keeps the grid of ``x`` (unchunked) or a copy of ``x``; a
        transposed layer's, the grid of ``dy`` or a copy of it."""
        g, itemsize = self.geom, self.dtype.itemsize
        if self.chunk >= g.batch:
            s = _sizes(g, g.batch)
            return max(s["x_grid"], s["y_grid"]) * itemsize
        return max(math.prod(g.x_shape), math.prod(g.y_shape)) * itemsize

    @property
    def transform_counts(self) -> dict:
        """No FFTs run (the Winograd transforms are GEMMs)."""
        return {"forward": 0, "inverse": 0}

    # -- matrices on the device -----------------------------------------------------
    def _rows(self, axis: Axis, which: str) -> Matrix:
        t = transforms(axis.m, axis.r)
        return {"bt": t.bt, "b": _transposed(t.bt), "g": t.g, "gt": _transposed(t.g),
                "at": t.at, "a": _transposed(t.at)}[which]

    def _matrices(self, which: str) -> list:
        """The matrices ``which`` (``bt``, ``b``, ``g``, ``gt``, ``a``, ``at``) of each
        axis, in the compute dtype, made once per backend."""
        rows = [self._rows(axis, which) for axis in self.axes]
        key = ("winograd", tuple((a.m, a.r) for a in self.axes), which, self.dtype.str)
        return self.arrays.constant(key, lambda: [
            self.arrays.asarray([list(r) for r in m], self.dtype) for m in rows])

    def _apply(self, a, which: str):
        """``a`` ``(k_1, ..., k_d, *rest)`` (contiguous) with matrix ``which`` of each
        axis applied to its leading axis ``k_i``: one GEMM per axis, the axes before
        it as a batch.  (One GEMM with the Kronecker product of a 2-D tile's two
        36 x 36 matrices instead was slower: 91 against 69 ms, the 2-D N=32, 64->64,
        32x32, k=3 training step on one thread.)"""
        arrays, nd = self.arrays, self._nd
        rest = tuple(a.shape[nd:])
        lead = list(a.shape[:nd])
        for i, mat in enumerate(self._matrices(which)):
            before, after = math.prod(lead[:i]), math.prod(lead[i + 1:]) * math.prod(rest)
            src = arrays.reshape(a, (before, lead[i], after))
            a = arrays.matmul(mat, src, out=arrays.empty((before, mat.shape[0], after),
                                                           self.dtype))
            lead[i] = mat.shape[0]
        return arrays.reshape(a, tuple(lead) + rest)

    # -- weights --------------------------------------------------------------------
    def weights(self, w) -> Weights:
        """The transformed kernel: ``w`` (oriented, ``(C_out, Cg, *k)``) to
        ``(k..., G, Og, Cg)``, then ``G`` on each kernel axis."""
        g, arrays, nd = self.geom, self.arrays, self._nd
        if g.flip_kernel:
            w = arrays.flip(w, tuple(range(2, 2 + nd)))
        grouped = arrays.reshape(w, (g.groups, self._og, self._cg) + g.kernel)
        first = arrays.contiguous(arrays.permute(grouped, tuple(range(3, 3 + nd)) + (0, 1, 2)))
        u = self._apply(first, "g")
        u = arrays.reshape(u, (-1,) + tuple(u.shape[nd:]))
        ut = arrays.contiguous(arrays.permute(_conj(u, arrays), (0, 1, 3, 2)))
        return Weights(u, ut)

    def _weight_grad_out(self, dwt):
        """Summed products ``(P, G, Og, Cg)`` -> ``dw`` ``(C_out, Cg, *k)``: ``G^T`` on
        each axis, the kernel axes last, flipped back for ``flip_kernel``."""
        g, arrays, nd = self.geom, self.arrays, self._nd
        dwt = arrays.reshape(dwt, tuple(a.alpha for a in self.axes) + tuple(dwt.shape[1:]))
        k = self._apply(arrays.contiguous(dwt), "gt")
        k = arrays.permute(k, (nd, nd + 1, nd + 2) + tuple(range(nd)))
        dw = arrays.reshape(arrays.contiguous(k), g.w_shape)
        if g.flip_kernel:
            dw = arrays.contiguous(arrays.flip(dw, tuple(range(2, 2 + nd))))
        return dw

    # -- tile grids ---------------------------------------------------------------------
    def _grid(self, n: int, channels: int, lattice: Sequence[int], zeros: bool):
        """A new grid ``(m..., G, channels, n, *lattice)``."""
        shape = tuple(a.m for a in self.axes) + (self.geom.groups, channels, n) + tuple(lattice)
        return (self.arrays.zeros if zeros else self.arrays.empty)(shape, self.dtype)

    def _flat(self, grid):
        """``grid`` with its lattice flat (a view of a contiguous grid)."""
        return self.arrays.reshape(grid, tuple(grid.shape[:self._nd + 3]) + (-1,))

    def _phases(self, size: Sequence[int], lo: Sequence[int]):
        """``(offsets, steps, blocks)`` for each combination of within-block offsets
        that holds samples of an operand of ``size`` placed at ``lo``:
        ``operand[..., steps]`` (every ``m``-th sample from the first at those
        offsets) is at ``blocks`` of the lattice."""
        for c in product(*(range(a.m) for a in self.axes)):
            first = [(ca - la) % a.m for ca, la, a in zip(c, lo, self.axes)]
            if any(f >= s for f, s in zip(first, size)):
                continue
            steps = tuple(slice(f, None, a.m) for f, a in zip(first, self.axes))
            counts = [-(-(s - f) // a.m) for f, s, a in zip(first, size, self.axes)]
            starts = [(la + f) // a.m for f, la, a in zip(first, lo, self.axes)]
            yield c, steps, tuple(slice(b, b + k) for b, k in zip(starts, counts))

    def _to_grid(self, a, grid, channels: int, lo: Sequence[int]) -> None:
        """``a`` ``(n, G * channels, *size)`` onto ``grid`` (lattice as a box) at
        offset ``lo``: one copy per combination of within-block offsets."""
        arrays, nd = self.arrays, self._nd
        n = a.shape[0]
        split = arrays.reshape(a, (n, self.geom.groups, channels) + tuple(a.shape[2:]))
        order = (1, 2, 0) + tuple(range(3, 3 + nd))
        for c, steps, blocks in self._phases(tuple(a.shape[2:]), lo):
            src = split[(slice(None),) * 3 + steps]
            arrays.copy_into(grid[c + (slice(None),) * 3 + blocks], arrays.permute(src, order))

    def _from_grid(self, grid, channels: int, size: Sequence[int], lo: Sequence[int], out):
        """The samples ``lo : lo + size`` of ``grid`` (lattice as a box) as
        ``(n, G * channels, *size)``, written to ``out`` (or a new array)."""
        arrays, nd, g = self.arrays, self._nd, self.geom
        n = grid.shape[nd + 2]
        result = arrays.empty((n, g.groups * channels) + tuple(size), self.dtype) \
            if out is None else out
        order = (2, 0, 1) + tuple(range(3, 3 + nd))
        for c, steps, blocks in self._phases(size, lo):
            src = arrays.permute(grid[c + (slice(None),) * 3 + blocks], order)
            src = arrays.reshape(src, (n, g.groups * channels) + tuple(src.shape[3:]))
            arrays.copy_into(result[(slice(None), slice(None)) + steps], src)
        return result

    def _x_grid(self, x):
        """``x`` ``(n, C, *in)`` on the zero input lattice (a new array)."""
        grid = self._grid(x.shape[0], self._cg, self.lattice.input_shape, zeros=True)
        self._to_grid(x, grid, self._cg, [a.lo for a in self.axes])
        return grid

    def _dy_grid(self, dy):
        """``dy`` ``(n, C_out, *out)`` on the output tiles, zeros elsewhere."""
        grid = self._grid(dy.shape[0], self._og, self.lattice.output_shape, zeros=True)
        self._to_grid(dy, grid, self._og, (0,) * self._nd)
        return grid

    # -- one piece ------------------------------------------------------------------
    def _at(self, piece: Piece, shift: int, within: Sequence[int]) -> tuple:
        """A piece's blocks on a flat grid: within-block offsets ``:within``, its
        samples, its tiles shifted by ``shift`` on the lattice."""
        return (tuple(slice(0, w) for w in within)
                + (slice(None), slice(None), slice(piece.r0, piece.r1),
                   slice(piece.f0 + shift, piece.f1 + shift)))

    def _block_parts(self):
        """``(shift, widths, slices)`` per combination ``q`` of a tile's blocks: its
        lattice offset, the samples it holds per axis, and their place in the tile."""
        for q in product(*(range(a.blocks) for a in self.axes)):
            widths = [min(a.m, a.alpha - qa * a.m) for a, qa in zip(self.axes, q)]
            yield (self.lattice.offset(q), widths,
                   tuple(slice(qa * a.m, qa * a.m + w) for a, qa, w in zip(self.axes, q, widths)))

    def _input_tiles(self, xflat, piece: Piece):
        """``V = B^T d`` of the piece's input tiles: ``(P, G, Cg, tiles)``."""
        arrays = self.arrays
        tiles = arrays.empty(tuple(a.alpha for a in self.axes) + (
            self.geom.groups, self._cg, piece.r1 - piece.r0, piece.f1 - piece.f0), self.dtype)
        for shift, widths, place in self._block_parts():
            arrays.copy_into(tiles[place + (Ellipsis,)], xflat[self._at(piece, shift, widths)])
        v = self._apply(tiles, "bt")
        return arrays.reshape(v, (-1, self.geom.groups, self._cg, piece.tiles))

    def _output_tiles(self, dyflat, piece: Piece):
        """``A u`` of the piece's tiles of ``dy``: ``(P, G, Og, tiles)``."""
        src = dyflat[self._at(piece, 0, [a.m for a in self.axes])]
        u = self._apply(self.arrays.contiguous(src), "a")
        return self.arrays.reshape(u, (-1, self.geom.groups, self._og, piece.tiles))

    def _products(self, left, right):
        """``left @ right`` per position and group; an outer product (a broadcast
        multiply) when the inner dimension is 1 (depthwise layers)."""
        if left.shape[-1] == 1:
            return self.arrays.multiply(left, right)
        return self.arrays.matmul(left, right)

    def _shape(self, a, channels: int, piece: Piece):
        """Products ``(P, G, C, tiles)`` as ``(alpha..., G, C, n, tiles per sample)``."""
        return self.arrays.reshape(a, tuple(x.alpha for x in self.axes)
                                   + (self.geom.groups, channels, piece.r1 - piece.r0,
                                      piece.f1 - piece.f0))

    def _correlate(self, v, weights: Weights, piece: Piece, yflat) -> None:
        """The piece's output tiles: the channel sums, ``A^T`` per axis, written to
        their places on the flat ``y`` grid."""
        yt = self._apply(self._shape(self._products(weights.u, v), self._og, piece), "at")
        self.arrays.copy_into(yflat[self._at(piece, 0, [a.m for a in self.axes])], yt)

    def _input_grad(self, udy, weights: Weights, piece: Piece, dxflat) -> None:
        """The piece's share of ``dx``: the channel sums with the conjugate
        transposed kernel, ``B`` per axis, and its overlapping tiles added onto the
        flat ``dx`` grid."""
        z = self._apply(self._shape(self._products(weights.ut, udy), self._cg, piece), "b")
        for shift, widths, place in self._block_parts():
            dxflat[self._at(piece, shift, widths)] += z[place + (Ellipsis,)]

    def _weight_products(self, udy, v):
        """``sum over tiles of (A u)(B^T d)^H`` per position and group: ``(P, G, Og, Cg)``."""
        arrays = self.arrays
        return arrays.matmul(udy, arrays.permute(_conj(v, arrays), (0, 1, 3, 2)))

    # -- chunks and pieces -------------------------------------------------------------
    def _chunks(self):
        """Row slices of the batch, ``chunk`` samples each."""
        step = max(self.chunk, 1)
        for n0 in range(0, self.geom.batch, step):
            yield slice(n0, min(n0 + step, self.geom.batch))

    def _shares(self, items: List[Piece], overlap: bool) -> List[List[Piece]]:
        """The pieces in up to ``threads`` contiguous shares; with ``overlap`` (the
        input gradient's tiles overlap on its grid) shares end between samples only,
        so that no two add onto the same blocks."""
        shares = max(1, min(self.threads, len(items)))
        bounds = [len(items) * i // shares for i in range(shares + 1)]
        if overlap:
            starts = [i for i, p in enumerate(items) if i == 0 or p.r0 != items[i - 1].r0]
            bounds = sorted({min(starts, key=lambda b0: abs(b0 - b)) for b in bounds[:-1]}
                            | {0, len(items)})
        return [items[a:b] for a, b in zip(bounds[:-1], bounds[1:]) if b > a]

    def _run(self, run, shares: List[List[Piece]]) -> None:
        """``run(share)`` for every share, at once when there are several, BLAS on one
        thread each meanwhile (two threads calling a threaded BLAS contend)."""
        if len(shares) == 1:
            run(shares[0])
            return
        with _serial_blas():
            runtime.run_shares(run, shares, len(shares))

    def _pieces(self, n: int) -> List[Piece]:
        return pieces(self.lattice, n, max(self._cg, self._og) * self.geom.groups,
                      self.dtype.itemsize)

    def _forward_chunk(self, xgrid, weights: Weights, out):
        """``y`` of one chunk from its input grid."""
        n = xgrid.shape[self._nd + 2]
        yflat = self._grid(n, self._og, (self.lattice.tile_count,), zeros=False)
        xflat = self._flat(xgrid)

        def run(share: List[Piece]) -> None:
            for piece in share:
                self._correlate(self._input_tiles(xflat, piece), weights, piece, yflat)
        self._run(run, self._shares(self._pieces(n), overlap=False))
        return self._y_from(yflat, out)

    def _y_from(self, yflat, out):
        grid = self.arrays.reshape(yflat, tuple(yflat.shape[:-1]) + self.lattice.output_shape)
        return self._from_grid(grid, self._og, self.geom.out_size, (0,) * self._nd, out)

    def _gradients_chunk(self, dygrid, xgrid, weights: Weights, need_dx: bool, out, dwt):
        """``(dx, summed weight products)`` of one chunk: each piece's ``dy`` tiles
        serve both (``dx`` skipped unless ``need_dx``, the products unless ``xgrid``)."""
        n = dygrid.shape[self._nd + 2]
        dxflat = (self._grid(n, self._cg, (self.lattice.input_length,), zeros=True)
                  if need_dx else None)
        dyflat = self._flat(dygrid)
        xflat = None if xgrid is None else self._flat(xgrid)
        sums: list = []

        def run(share: List[Piece]) -> None:
            total = None
            for piece in share:
                udy = self._output_tiles(dyflat, piece)
                if dxflat is not None:
                    self._input_grad(udy, weights, piece, dxflat)
                if xflat is not None:
                    total = _accumulate(total, self._weight_products(
                        udy, self._input_tiles(xflat, piece)))
            sums.append(total)
        self._run(run, self._shares(self._pieces(n), overlap=dxflat is not None))
        for total in sums:
            if total is not None:
                dwt = _accumulate(dwt, total)
        if dxflat is None:
            return None, dwt
        grid = self.arrays.reshape(dxflat, tuple(dxflat.shape[:-1]) + self.lattice.input_shape)
        return self._from_grid(grid, self._cg, self.geom.in_size,
                               [a.lo for a in self.axes], out), dwt

    def _single(self) -> bool:
        return self.chunk >= self.geom.batch

    def _new(self, shape, out):
        return self.arrays.empty(shape, self.dtype) if out is None else out

    # -- the engine protocol --------------------------------------------------------------
    def save_input(self, x) -> Saved:
        return Saved("signal", x)

    @staticmethod
    def save_output(dy) -> Saved:
        return Saved("signal", dy)

    @staticmethod
    def _grid_of(saved: Saved, rows: slice, grid):
        """A saved operand's grid: the kept grid (unchunked), or ``grid`` of its rows."""
        return saved.array if saved.kind == "padded" else grid(saved.array[rows, ...])

    def forward(self, x, weights: Weights, keep=False, out=None) -> tuple:
        if self._single():
            xgrid = self._x_grid(x)
            return (self._forward_chunk(xgrid, weights, out),
                    Saved("padded", xgrid) if keep else None)
        y = self._new(self.geom.y_shape, out)
        for rows in self._chunks():
            self._forward_chunk(self._x_grid(x[rows, ...]), weights, y[rows, ...])
        return y, Saved("signal", self.arrays.copy(x)) if keep else None

    def input_grad(self, dy, weights: Weights, keep=False, out=None) -> tuple:
        if self._single():
            dygrid = self._dy_grid(dy)
            dx, _ = self._gradients_chunk(dygrid, None, weights, True, out, None)
            return dx, Saved("padded", dygrid) if keep else None
        dx = self._new(self.geom.x_shape, out)
        for rows in self._chunks():
            self._gradients_chunk(self._dy_grid(dy[rows, ...]), None, weights, True,
                                  dx[rows, ...], None)
        return dx, Saved("signal", self.arrays.copy(dy)) if keep else None

    def backward(self, dy, saved_x: Saved, weights: Weights, need_dx=True, need_dw=True,
                 out=None) -> tuple:
        if self._single():
            xgrid = self._grid_of(saved_x, slice(None), self._x_grid) if need_dw else None
            dx, dwt = self._gradients_chunk(self._dy_grid(dy), xgrid, weights, need_dx, out, None)
            return dx, None if dwt is None else self._weight_grad_out(dwt)
        dx = self._new(self.geom.x_shape, out) if need_dx else None
        dwt = None
        for rows in self._chunks():
            xgrid = self._grid_of(saved_x, rows, self._x_grid) if need_dw else None
            _, dwt = self._gradients_chunk(self._dy_grid(dy[rows, ...]), xgrid, weights, need_dx,
                                           None if dx is None else dx[rows, ...], dwt)
        return dx, None if dwt is None else self._weight_grad_out(dwt)

    def transposed_backward(self, x, saved_dy: Saved, weights: Weights, need_y=True,
                            need_dw=True, out=None) -> tuple:
        y = self._new(self.geom.y_shape, out) if need_y else None
        dwt = None
        for rows in self._chunks():
            n = rows.stop - rows.start
            xflat = self._flat(self._x_grid(x[rows, ...]))
            dyflat = self._flat(self._grid_of(saved_dy, rows, self._dy_grid)) if need_dw else None
            yflat = (self._grid(n, self._og, (self.lattice.tile_count,), zeros=False)
                     if need_y else None)
            for piece in self._pieces(n):
                v = self._input_tiles(xflat, piece)
                if yflat is not None:
                    self._correlate(v, weights, piece, yflat)
                if dyflat is not None:
                    dwt = _accumulate(dwt, self._weight_products(
                        self._output_tiles(dyflat, piece), v))
            if yflat is not None and y is not None:
                self._y_from(yflat, y[rows, ...])
        return y, None if dwt is None else self._weight_grad_out(dwt)


_blas_libraries: Optional[list] = None


@contextlib.contextmanager
def _serial_blas():
    """BLAS on one thread inside the block, its thread counts restored after."""
    global _blas_libraries
    if _blas_libraries is None:
        from threadpoolctl import ThreadpoolController
        _blas_libraries = ThreadpoolController().select(user_api="blas").lib_controllers
    counts = [(lib, lib.get_num_threads()) for lib in _blas_libraries]
    for lib, n in counts:
        if n != 1:
            lib.set_num_threads(1)
    try:
        yield
    finally:
        for lib, n in counts:
            if n != 1:
                lib.set_num_threads(n)


def _accumulate(total, part):
    if total is None:
        return part
    total += part
    return total


def _conj(a, arrays: Arrays):
    """``conj(a)`` for a complex ``a``, else ``a`` itself."""
    return arrays.conj(a) if arrays.numpy_dtype(a.dtype).kind == "c" else a


# -- the plugin: scope, cost terms, partition ---------------------------------------------------
def scope_error(geom: ConvGeometry) -> str:
    """Why ``geom`` is outside the engine's scope (empty when it is inside)."""
    if supports(geom):
        return ""
    return (f"algorithm='winograd' supports stride 1, dilation 1 and kernels of 3 or 5 "
            f"taps on every axis (5 taps in 1-D and 2-D only), got kernel={geom.kernel}, "
            f"stride={geom.stride}, dilation={geom.dilation}; use another algorithm or "
            f"'auto'")


def work(geom: ConvGeometry, dtype, chunk: Optional[Partition] = None) -> Work:
    """Units of work of one training step; infinite outside the scope.

    ``winograd_flop``: the channel sums, ``2 * P * tiles * C_out * Cg`` flops per
    product, three products (complex: four real products each).
    ``winograd_element``: the elements the pieces write in cache: the gathered
    tiles (twice: the weight gradient transforms ``x`` again), each transform
    GEMM's output, the products and the overlap-add.  ``winograd_grid``: the
    elements put onto and read off the four tile grids (strided copies through
    memory, zeros included).  ``call``: a pass.  Their rates are in
    ``fftconv.costs.RATES``; the work of the three gathers and scatters per
    piece that are not elements (array calls) proved too small to fit."""
    if not supports(geom):
        return {"call": math.inf}
    p = costs.precision(dtype)
    lat = lattice_of(geom)
    s = _sizes(geom, geom.batch)
    ci, co, cg = geom.in_channels, geom.out_channels, geom.in_channels // geom.groups
    tiles = s["tiles"]
    flops = 6.0 * s["p"] * tiles * co * cg * (4 if np.dtype(dtype).kind == "c" else 1)
    alpha = [a.alpha for a in lat.axes]
    ms = [a.m for a in lat.axes]

    def transformed(first: Sequence[int], second: Sequence[int]) -> int:
        """Elements per tile and channel written by the per-axis GEMMs taking
        ``first`` to ``second``."""
        return sum(math.prod(second[:i + 1]) * math.prod(first[i + 1:])
                   for i in range(len(first)))
    p_ = math.prod(alpha)
    per_tile = (ci * (2 * p_ + 2 * transformed(alpha, alpha))       # x tiles and B^T, twice
                + co * (p_ + transformed(alpha, ms) + math.prod(ms))  # products, A^T, scatter
                + co * (math.prod(ms) + transformed(ms, alpha))      # dy tiles, A
                + ci * (p_ + transformed(alpha, alpha) + p_)         # products, B, overlap-add
                + co * p_)                                           # weight products' reads
    return {"winograd_flop": flops * p, "winograd_element": tiles * per_tile * p,
            "winograd_grid": 2.0 * (s["x_grid"] + s["y_grid"]) * p, "call": 3.0}


def partition(func: str, geom: ConvGeometry, dtype: np.dtype, limit: Optional[int],
              tile: Optional[Tuple[int, ...]] = None) -> int:
    """The most samples per pass that fit ``limit`` bytes; a ``ValueError`` naming
    the scope for a geometry outside it."""
    reason = scope_error(geom)
    if reason:
        fail(func, reason)
    return budget.largest_chunk(func, geom.batch, limit,
                                lambda chunk: workspace_bytes(geom, dtype, chunk), "winograd")


def _build(geom: ConvGeometry, dtype: np.dtype, settings: Settings, chunk: Partition,
           arrays: Arrays) -> WinogradEngine:
    assert isinstance(chunk, int), chunk
    return WinogradEngine(geom, dtype, settings, chunk, arrays)


ALGORITHM = Algorithm("winograd", build=_build, partition=partition, work=work,
                      estimate=lambda geom, dtype: (costs.seconds(work(geom, dtype)), None),
                      spatial=True)
