"""Plans: a layer geometry bound to an algorithm, its buffers and its spectra.

A :class:`Plan` is what ``fftconv.plan`` returns.  It keeps the spectra of the
``x`` and ``w`` of its last :meth:`Plan.forward`, so that :meth:`Plan.backward`
needs only the transform of ``dy``: one training step costs three forward and
three inverse batched transforms (Mathieu, Henaff & LeCun 2013).  Weights are
transformed again only when their values change; the plan keeps a private copy
of the last weights and compares values (never ``id()``), so weights updated in
place are always noticed.

The stateless ``fftconv.forward``/``backward`` share engines through
:data:`ENGINE_CACHE`, a thread-safe LRU bounded in entries and in bytes.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import NamedTuple, Optional

import numpy as np

from . import direct
from .checks import check_array, check_shape, dtypes_for, fail
from .config import Settings, get_settings
from . import costs, selection
from .fftpath import FFTEngine, workspace_bytes
from .overlap_add import OverlapAddEngine
from .geometry import ConvGeometry


class Gradients(NamedTuple):
    """What ``backward`` returns; unpacks as ``dx, dw, db``."""

    dx: np.ndarray
    dw: np.ndarray
    db: np.ndarray


class EngineCache:
    """Thread-safe LRU of :class:`FFTEngine` objects, bounded in count and bytes.

    The key (see :func:`engine_for`) covers everything that changes the result
    or the buffers: the algorithm, the whole geometry (shapes, padding,
    stride, dilation, groups, flip, FFT size), the compute dtype, the settings
    (backend, threads, planner effort) and the chunk size or tile.  Buffer
    strides and alignment follow from these.
    """

    def __init__(self, max_entries: int = 16, max_bytes: int = 1 << 30):
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._engines: "OrderedDict[tuple, FFTEngine]" = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple, build):
        """The engine cached under ``key``, or ``build()`` cached under it."""
        with self._lock:
            engine = self._engines.pop(key, None) or build()
            self._engines[key] = engine
            self._evict()
            return engine

    def _evict(self):
        while len(self._engines) > 1 and (
                len(self._engines) > self.max_entries
                or sum(e.workspace_bytes for e in self._engines.values()) > self.max_bytes):
            self._engines.popitem(last=False)

    def clear(self):
        with self._lock:
            self._engines.clear()

    def __len__(self):
        return len(self._engines)


ENGINE_CACHE = EngineCache()


def choose_chunk(func: str, geom: ConvGeometry, dtype, budget: Optional[int]) -> int:
    """Largest number of samples per pass whose FFT workspace fits in ``budget`` bytes."""
    if budget is None or geom.batch == 0 or workspace_bytes(geom, dtype, geom.batch) <= budget:
        return geom.batch
    if workspace_bytes(geom, dtype, 1) > budget:
        fail(func, f"max_workspace_bytes={budget} is too small: one sample needs "
                   f"{workspace_bytes(geom, dtype, 1)} bytes of FFT workspace")
    lo, hi = 1, geom.batch  # workspace grows with the chunk: bisect
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if workspace_bytes(geom, dtype, mid) <= budget else (lo, mid - 1)
    return lo


def build_engine(func: str, geom: ConvGeometry, dtype, algorithm: str, settings: Settings,
                 max_workspace_bytes: Optional[int] = None, tile=None):
    """The engine of ``algorithm`` (``None`` for direct and for an empty batch)."""
    if geom.batch == 0 or algorithm == "direct":
        return None
    if algorithm == "overlap_add":
        return OverlapAddEngine(geom, dtype, settings, tile or costs.best_tile(geom, dtype)[0])
    return FFTEngine(geom, dtype, settings, choose_chunk(func, geom, dtype, max_workspace_bytes))


def engine_for(func: str, geom: ConvGeometry, dtype, algorithm: str, settings: Settings, tile):
    """A shared engine from :data:`ENGINE_CACHE` for the stateless functions."""
    if geom.batch == 0 or algorithm == "direct":
        return None
    chunk = (choose_chunk(func, geom, dtype, settings.max_workspace_bytes)
             if algorithm == "fft" else None)
    key = (algorithm, geom, np.dtype(dtype).str, settings, chunk, tile)
    return ENGINE_CACHE.get(key, lambda: build_engine(func, geom, dtype, algorithm, settings,
                                                      settings.max_workspace_bytes, tile))


def choose_algorithm(func: str, geom: ConvGeometry, dtype, algorithm: str, settings: Settings,
                     measure: bool) -> selection.Choice:
    """Resolve ``"auto"`` by the cost model or, with ``measure``, by timing."""
    if algorithm != "auto":
        return selection.Choice(algorithm, None, f"algorithm {algorithm!r} was requested")
    if geom.batch == 0:
        return selection.Choice("direct", None, "auto chose 'direct': the batch is empty")
    if measure:
        return selection.measure(geom, dtype, settings,
                                 lambda name, tile: Plan(geom, dtype, name, settings, tile=tile))
    return selection.estimate(geom, dtype, settings)


def bias_grad(dy: np.ndarray) -> np.ndarray:
    """``db[o] = sum over batch and space of dy[:, o]``."""
    return dy.sum(axis=(0,) + tuple(range(2, dy.ndim)))


def add_bias(y: np.ndarray, b: Optional[np.ndarray]) -> np.ndarray:
    if b is not None:
        y += b.reshape((-1,) + (1,) * (y.ndim - 2))
    return y


class Plan:
    """A convolution layer of fixed geometry, dtype and algorithm.

    Build one with :func:`fftconv.plan`.  ``p.forward(x, w, b)`` computes ``y``
    and keeps what the gradients need; ``p.backward(dy)`` returns the
    :class:`Gradients` for that ``x`` and ``w``.  A plan holds state and
    buffers: use one plan per thread (the stateless ``fftconv.forward`` and
    ``backward`` are safe to call from many threads).

    Attributes
    ----------
    geometry : ConvGeometry
        Every integer fact about the layer (padding, crops, FFT size...).
    out_shape : tuple
        Shape of ``y``.
    fft_shape : tuple
        FFT length per spatial axis (``None`` for ``algorithm="direct"``).
    algorithm : str
        ``"fft"`` or ``"direct"``.
    """

    def __init__(self, geom: ConvGeometry, dtype, algorithm: str,
                 settings: Optional[Settings] = None, engine=None,
                 max_workspace_bytes: Optional[int] = None, explain: str = "", tile=None):
        self.geometry = geom
        self.compute_dtype, self.result_dtype = dtypes_for("fftconv.plan", np.empty(0, dtype))
        self.algorithm = algorithm
        self.explain = explain or f"algorithm {algorithm!r} was requested"
        self.settings = settings or get_settings()
        self._engine = engine
        if engine is None:
            self._engine = build_engine("fftconv.plan", geom, self.compute_dtype, algorithm,
                                        self.settings, max_workspace_bytes, tile)
        self._x = self._w = self._x_spec = None
        self._k: Optional[np.ndarray] = None  # kept spectrum of the weights

    # -- geometry -------------------------------------------------------------------
    @property
    def out_shape(self) -> tuple:
        return self.geometry.y_shape

    @property
    def fft_shape(self):
        """FFT size per axis (of one tile for overlap-add; ``None`` for direct)."""
        if self.algorithm == "overlap_add":
            return self._engine.tile_geom.fft_shape if self._engine else None
        return self.geometry.fft_shape if self.algorithm == "fft" else None

    @property
    def tile(self):
        """Output tile per axis for overlap-add, else ``None``."""
        return self._engine.tile if self.algorithm == "overlap_add" and self._engine else None

    @property
    def transform_counts(self) -> dict:
        """Batched transforms run by this plan: ``{"forward": int, "inverse": int}``."""
        return self._engine.transform_counts if self._engine else {"forward": 0, "inverse": 0}

    @property
    def workspace_bytes(self) -> int:
        """Bytes of FFT buffers one training step with this plan uses."""
        return self._engine.workspace_bytes if self._engine else 0

    @property
    def chunk(self) -> int:
        """Samples per pass: the batch size unless ``max_workspace_bytes`` asked for less."""
        return self._engine.chunk if self._engine else self.geometry.batch

    def __repr__(self) -> str:
        g = self.geometry
        fft = f", fft_shape={self.fft_shape}" if self.fft_shape else ""
        if self.tile:
            fft += f", tile={self.tile}"
        if self._engine and self._engine.chunk < g.batch:
            fft += f", chunk={self._engine.chunk}"
        return (f"Plan(x{g.x_shape} * w{g.w_shape} -> y{g.y_shape}, dtype={self.result_dtype}, "
                f"algorithm={self.algorithm!r}{fft}, padding={g.padding}, stride={g.stride}, "
                f"dilation={g.dilation}, groups={g.groups}, flip_kernel={g.flip_kernel})")

    # -- argument checks against the plan ------------------------------------------
    def _check_operand(self, func: str, name: str, a, shape) -> np.ndarray:
        """``a`` must have ``shape`` and a dtype that promotes to this plan's.

        Anything that would change the result dtype (a float64 ``x`` for a
        float32 plan, an int64 one, a complex bias for a real plan) is a
        ``TypeError``: a plan never downcasts silently.
        """
        a = check_array(func, name, a)
        check_shape(func, name, a, shape, "the shape this plan was built for")
        if np.result_type(a.dtype, self.result_dtype) != self.result_dtype:
            fail(func, f"{name} has dtype={a.dtype} but this plan was built for "
                       f"dtype={self.result_dtype}; build a plan with dtype="
                       f"{np.result_type(a.dtype, self.result_dtype)}", TypeError)
        return a.astype(self.compute_dtype, copy=False)

    def _result(self, a: np.ndarray) -> np.ndarray:
        return a.astype(self.result_dtype, copy=False)

    # -- the two passes (public: checked) ------------------------------------------------
    def forward(self, x, w, b=None) -> np.ndarray:
        """``y = conv(x, w) + b``; keeps what :meth:`backward` needs about ``x`` and ``w``."""
        func, g = "Plan.forward", self.geometry
        x = self._check_operand(func, "x", x, g.x_shape)
        w = self._check_operand(func, "w", w, g.w_shape)
        if b is not None:
            b = self._check_operand(func, "b", b, (g.out_channels,))
        return self._result(self.run_forward(x, w, b))

    def backward(self, dy) -> Gradients:
        """Gradients ``(dx, dw, db)`` of the last :meth:`forward` for output gradient ``dy``."""
        func = "Plan.backward"
        if self._w is None:
            fail(func, "call Plan.forward(x, w, b) before Plan.backward(dy)", RuntimeError)
        dy = self._check_operand(func, "dy", dy, self.geometry.y_shape)
        return Gradients(*(self._result(a) for a in self.run_backward(dy)))

    # -- the two passes (internal: arrays already checked and in the compute dtype) ----
    def remember(self, x: np.ndarray, w: np.ndarray, copy: bool = True):
        """Keep ``w`` (and its spectra) and ``x`` for the gradients.

        ``copy=False`` keeps references instead of private copies; only for a
        plan used once.  An unchunked FFT plan keeps the spectrum of ``x``
        (set by :meth:`run_forward`) instead of ``x`` itself; the direct path
        keeps ``x`` zero-padded, which is a new array in any case.
        """
        if self._engine is None:
            self._x = direct.prepare(x, self.geometry)  # a new array: no copy needed
        elif not copy:
            self._x = x
        else:
            self._x = None if self._engine.keeps_x_spectrum else x.copy()
        self._x_spec = None
        if self._engine is None:
            self._w = w.copy() if copy else w
        elif self._w is None or not np.array_equal(w, self._w):
            self._k = self._engine.weight_spectrum(w)
            self._w = w.copy() if copy else w

    def run_forward(self, x, w, b, for_backward: bool = True) -> np.ndarray:
        """``y`` in the compute dtype; ``for_backward=False`` keeps nothing for
        :meth:`run_backward` (a one-use forward)."""
        self.remember(x, w, copy=for_backward)
        g = self.geometry
        if g.batch == 0:
            return np.zeros(g.y_shape, self.compute_dtype)
        if self._engine is None:
            y = direct.forward(self._x, w, g)
        else:
            y, self._x_spec = self._engine.forward(x, self._k, keep_x=for_backward)
        return add_bias(y, b)

    def run_backward(self, dy) -> tuple:
        """``(dx, dw, db)`` in the compute dtype, for the remembered ``x`` and ``w``."""
        g = self.geometry
        db = bias_grad(dy)
        if g.batch == 0:
            return np.zeros(g.x_shape, self.compute_dtype), np.zeros(g.w_shape, self.compute_dtype), db
        if self._engine is None:
            return direct.gradients(dy, self._x, self._w, g) + (db,)
        dx, dw = self._engine.backward(dy, self._x, self._k, self._x_spec)
        return dx, dw, db
