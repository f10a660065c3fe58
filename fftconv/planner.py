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
from .checks import check_array, check_bias, check_shape, dtypes_for, fail
from .config import Settings, get_settings
from .fftpath import FFTEngine, WeightSpectra
from .geometry import ConvGeometry


class Gradients(NamedTuple):
    """What ``backward`` returns; unpacks as ``dx, dw, db``."""

    dx: np.ndarray
    dw: np.ndarray
    db: np.ndarray


class EngineCache:
    """Thread-safe LRU of :class:`FFTEngine` objects, bounded in count and bytes.

    The key covers everything that changes the result or the buffers: the whole
    geometry (shapes, padding, stride, dilation, groups, flip, FFT size), the
    compute dtype and the settings (backend, threads, planner effort).
    """

    def __init__(self, max_entries: int = 16, max_bytes: int = 1 << 30):
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._engines: "OrderedDict[tuple, FFTEngine]" = OrderedDict()
        self._lock = threading.Lock()

    def get(self, geom: ConvGeometry, dtype, settings: Settings) -> FFTEngine:
        key = (geom, np.dtype(dtype).str, settings)
        with self._lock:
            engine = self._engines.pop(key, None) or FFTEngine(geom, dtype, settings)
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
    :class:`Gradients` for that ``x`` and ``w``.

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
                 settings: Optional[Settings] = None, engine: Optional[FFTEngine] = None):
        self.geometry = geom
        self.compute_dtype, self.result_dtype = dtypes_for("fftconv.plan", np.empty(0, dtype))
        self.algorithm = algorithm
        self.settings = settings or get_settings()
        self._engine = engine
        if algorithm == "fft" and engine is None and geom.batch > 0:
            self._engine = FFTEngine(geom, self.compute_dtype, self.settings)
        self._x = self._w = self._x_spec = None
        self._weights: Optional[WeightSpectra] = None

    # -- geometry -------------------------------------------------------------------
    @property
    def out_shape(self) -> tuple:
        return self.geometry.y_shape

    @property
    def fft_shape(self):
        return self.geometry.fft_shape if self.algorithm == "fft" else None

    @property
    def transform_counts(self) -> dict:
        """Batched transforms run by this plan: ``{"forward": int, "inverse": int}``."""
        return self._engine.transform_counts if self._engine else {"forward": 0, "inverse": 0}

    @property
    def workspace_bytes(self) -> int:
        """Bytes of FFT buffers this plan holds now."""
        return self._engine.workspace_bytes if self._engine else 0

    def __repr__(self) -> str:
        g = self.geometry
        fft = f", fft_shape={self.fft_shape}" if self.algorithm == "fft" else ""
        return (f"Plan(x{g.x_shape} * w{g.w_shape} -> y{g.y_shape}, dtype={self.result_dtype}, "
                f"algorithm={self.algorithm!r}{fft}, padding={g.padding}, stride={g.stride}, "
                f"dilation={g.dilation}, groups={g.groups}, flip_kernel={g.flip_kernel})")

    # -- argument checks against the plan ------------------------------------------
    def _check_operand(self, func: str, name: str, a, shape) -> np.ndarray:
        """``a`` must have ``shape`` and this plan's dtype (integers are promoted)."""
        a = check_array(func, name, a)
        check_shape(func, name, a, shape, "the shape this plan was built for")
        if a.dtype.kind not in "iu" and dtypes_for(func, a)[1] != self.result_dtype:
            fail(func, f"{name} has dtype={a.dtype} but this plan was built for "
                       f"dtype={self.result_dtype}; build a plan with dtype={a.dtype}", TypeError)
        return a.astype(self.compute_dtype, copy=False)

    def _result(self, a: np.ndarray) -> np.ndarray:
        return a.astype(self.result_dtype, copy=False)

    # -- the two passes (public: checked) ------------------------------------------------
    def forward(self, x, w, b=None) -> np.ndarray:
        """``y = conv(x, w) + b``; keeps what :meth:`backward` needs about ``x`` and ``w``."""
        func, g = "Plan.forward", self.geometry
        x = self._check_operand(func, "x", x, g.x_shape)
        w = self._check_operand(func, "w", w, g.w_shape)
        b = check_bias(func, b, g.out_channels)
        return self._result(self.run_forward(x, w, None if b is None else
                                             b.astype(self.compute_dtype, copy=False)))

    def backward(self, dy) -> Gradients:
        """Gradients ``(dx, dw, db)`` of the last :meth:`forward` for output gradient ``dy``."""
        func = "Plan.backward"
        if self._w is None:
            fail(func, "call Plan.forward(x, w, b) before Plan.backward(dy)", RuntimeError)
        dy = self._check_operand(func, "dy", dy, self.geometry.y_shape)
        return Gradients(*(self._result(a) for a in self.run_backward(dy)))

    # -- the two passes (internal: arrays already checked and in the compute dtype) ----
    def remember(self, x: np.ndarray, w: np.ndarray, copy: bool = True):
        """Keep ``x`` and ``w`` (their spectra, for the FFT path) for the gradients.

        ``copy=False`` skips the private copies; only for a plan used once.
        """
        if self.geometry.batch == 0 or self.algorithm == "direct":
            self._x, self._w = (x.copy(), w.copy()) if copy else (x, w)
            return
        self._x_spec = self._engine.x_spectrum(x)
        if self._w is None or not np.array_equal(w, self._w):
            self._weights = self._engine.weight_spectra(w)
            self._w = w.copy() if copy else w

    def run_forward(self, x, w, b) -> np.ndarray:
        """``y`` in the compute dtype."""
        self.remember(x, w)
        g = self.geometry
        if g.batch == 0:
            return np.zeros(g.y_shape, self.compute_dtype)
        if self.algorithm == "direct":
            y = direct.forward(x, w, g)
        else:
            y = self._engine.output(self._x_spec, self._weights)
        return add_bias(y, b)

    def run_backward(self, dy) -> tuple:
        """``(dx, dw, db)`` in the compute dtype, for the remembered ``x`` and ``w``."""
        g = self.geometry
        db = bias_grad(dy)
        if g.batch == 0:
            return np.zeros(g.x_shape, self.compute_dtype), np.zeros(g.w_shape, self.compute_dtype), db
        if self.algorithm == "direct":
            return direct.input_grad(dy, self._w, g), direct.weight_grad(dy, self._x, g), db
        dy_spec = self._engine.dy_spectrum(dy)
        dx = self._engine.input_grad(dy_spec, self._weights)
        return dx, self._engine.weight_grad(self._x_spec, dy_spec), db
