"""Plans and pullbacks: a layer bound to an engine, its spectra and its weights.

A :class:`Plan` is what ``fftconv.plan`` returns; :meth:`Plan.vjp` runs the
forward pass and returns a :class:`Pullback` that holds exactly what its
own gradients need: the spectrum of that call's ``x`` (the zero-padded ``x``
for direct; ``x`` itself where the engine transforms it again) and a
reference to the weight state used.  Any number of pullbacks can be
outstanding; each gives the gradients for ``x`` and ``w`` as they were at its
call.  One training step costs three forward and three inverse batched
transforms (Mathieu, Henaff & LeCun 2013).

Weights are transformed again only when their values change: a
:class:`WeightCache` keeps a private copy of the last weights and compares
values (never ``id()``), so weights updated in place are always noticed, and
two calls with unchanged weights share one weight spectrum.

The stateless ``fftconv.forward``/``backward``/``vjp`` share engines (and
their weight caches) through :data:`ENGINE_CACHE`, a thread-safe LRU bounded
in entries and in bytes.  Nothing here branches on algorithm names: engines
come from ``engines.REGISTRY``.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import NamedTuple, Optional

import numpy as np

from . import engines, selection
from .checks import check_bool, check_operand, dtypes_for, fail
from .config import Settings, get_settings
from .geometry import ConvGeometry, LayerGeometry
from .layer import LayerRunner


class Gradients(NamedTuple):
    """What ``backward`` and a pullback return; unpacks as ``dx, dw, db``."""

    dx: np.ndarray
    dw: np.ndarray
    db: np.ndarray


class WeightCache:
    """The engine's weight state for the last weights, reused while their values
    are unchanged.  A new state is a new object: pullbacks holding the old one
    keep it.  Thread-safe: a caller always gets the state of its own ``w``."""

    def __init__(self):
        self._w: Optional[np.ndarray] = None
        self._state = None
        self._lock = threading.Lock()

    def state(self, w: np.ndarray, make):
        """``make(copy of w)``, or the state made for equal weights last time.  ``make``
        gets the private copy this cache compares against, which nothing changes:
        a state may keep it (the direct engine's does) instead of copying again."""
        with self._lock:
            if self._w is not None and self._w.shape == w.shape and np.array_equal(w, self._w):
                return self._state
        kept = np.array(w, copy=True)
        state = make(kept)
        with self._lock:
            self._state, self._w = state, kept
        return state


class SharedEngine(NamedTuple):
    """An engine shared by the stateless functions, with one weight cache per way
    of turning the caller's ``w`` into the engine's (``LayerRunner.weight_form``:
    layouts and transposed complex layers share an engine, not a weight state)."""

    engine: object
    caches: dict

    def weights(self, form) -> WeightCache:
        return self.caches.setdefault(form, WeightCache())


class EngineCache:
    """Thread-safe LRU of engines, bounded in count and bytes.

    The key (see :func:`engine_for`) covers everything that changes the result
    or the buffers: the algorithm, the whole geometry (shapes, padding,
    stride, dilation, groups, flip, FFT size), the compute dtype, the settings
    (backend, threads, planner effort) and the engine's option (chunk size or
    tile).  Buffer strides and alignment follow from these.
    """

    def __init__(self, max_entries: int = 16, max_bytes: int = 1 << 30):
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._engines: "OrderedDict[tuple, SharedEngine]" = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple, build) -> SharedEngine:
        """The entry cached under ``key``, or ``build()``'s engine cached under it."""
        with self._lock:
            entry = self._engines.pop(key, None) or SharedEngine(build(), {})
            self._engines[key] = entry
            self._evict()
            return entry

    def _evict(self):
        while len(self._engines) > 1 and (
                len(self._engines) > self.max_entries
                or sum(e.engine.workspace_bytes for e in self._engines.values()) > self.max_bytes):
            self._engines.popitem(last=False)

    def clear(self):
        with self._lock:
            self._engines.clear()

    def __len__(self):
        return len(self._engines)


ENGINE_CACHE = EngineCache()


def resolve(layer: LayerGeometry, algorithm: str) -> LayerGeometry:
    """``layer`` as algorithm ``algorithm``'s engine runs it (circular padding as
    one FFT at the input size where the engine can)."""
    return layer.for_engine(engines.REGISTRY[algorithm].circular_fast)


def engine_for(func: str, geom: ConvGeometry, dtype, algorithm: str, settings: Settings,
               tile) -> SharedEngine:
    """A shared engine from :data:`ENGINE_CACHE` for the stateless functions."""
    option = engines.option(func, algorithm, geom, dtype, settings.max_workspace_bytes, tile)
    key = (algorithm, geom, np.dtype(dtype).str, settings, option)
    return ENGINE_CACHE.get(key, lambda: engines.build(algorithm, geom, dtype, settings, option))


def choose_algorithm(func: str, geom: ConvGeometry, dtype, algorithm: str, settings: Settings,
                     measure: bool) -> selection.Choice:
    """Resolve ``"auto"`` by the cost model or, with ``measure``, by timing."""
    if algorithm != "auto":
        return selection.Choice(algorithm, None, f"algorithm {algorithm!r} was requested")
    if geom.batch == 0:
        return selection.Choice("direct", None, "auto chose 'direct': the batch is empty")
    if measure:
        return selection.measure(geom, dtype, settings,
                                 lambda name, tile: Plan(LayerGeometry(geom), dtype, name,
                                                         settings, tile=tile))
    return selection.estimate(geom, dtype, settings)


class Pullback:
    """The gradients of one forward call: ``pullback(dy)`` -> :class:`Gradients`.

    Holds what those gradients need (the spectrum of that call's ``x``, or
    its equivalent, and a reference to the weight state used), so it can be
    called any number of times, in any order with other pullbacks, with the
    same result each time, and gives the gradients for ``x`` and ``w`` as they
    were at its call.  Dropping it frees them.
    """

    def __init__(self, runner: LayerRunner, saved, weights, result_dtype, lock,
                 func: str):
        self._runner, self._saved, self._weights = runner, saved, weights
        self._result, self._lock, self._func = np.dtype(result_dtype), lock, func

    @property
    def y_shape(self) -> tuple:
        return self._runner.layer.y_shape

    def __call__(self, dy, *, need_dx: bool = True, need_dw: bool = True) -> Gradients:
        """``(dx, dw, db)`` for output gradient ``dy``; ``need_dx=False`` or
        ``need_dw=False`` skips that gradient (``None`` in its place)."""
        need_dx = check_bool(self._func, "need_dx", need_dx)
        need_dw = check_bool(self._func, "need_dw", need_dw)
        dy = check_operand(self._func, "dy", dy, self.y_shape, self._result,
                           self._runner.dtype, origin="forward")
        with self._lock:
            grads = self._runner.backward(dy, self._saved, self._weights, need_dx, need_dw)
        return Gradients(*(None if a is None else a.astype(self._result, copy=False)
                           for a in grads))

    def __repr__(self) -> str:
        return f"<Pullback for y{self.y_shape}, dtype={self._result}>"


class Plan:
    """A convolution layer of fixed geometry, dtype and algorithm.

    Build one with :func:`fftconv.plan`.  ``y, pullback = p.vjp(x, w, b)``
    computes ``y`` and a :class:`Pullback` for that call; ``p.forward`` /
    ``p.backward`` are the convenience form for one outstanding call: the
    last :meth:`forward` is what :meth:`backward` differentiates.  A plan
    holds buffers: use one plan per thread (the stateless functions are safe
    to call from many threads).

    Attributes
    ----------
    layer : LayerGeometry
        The whole layer (transposed, padding mode, layout) around ...
    geometry : ConvGeometry
        ... the correlation the engine runs (padding, crops, FFT size...).
    out_shape : tuple
        Shape of ``y``.
    fft_shape : tuple
        FFT length per spatial axis (of one tile for overlap-add; ``None`` when
        no FFT runs).
    algorithm : str
        A name from ``fftconv.engines.REGISTRY``.
    """

    def __init__(self, layer: LayerGeometry, dtype, algorithm: str,
                 settings: Optional[Settings] = None, engine=None,
                 max_workspace_bytes: Optional[int] = None, explain: str = "", tile=None):
        self.layer = resolve(layer, algorithm)
        self.compute_dtype, self.result_dtype = dtypes_for(np.empty(0, dtype))
        self.algorithm = algorithm
        self.explain = explain or f"algorithm {algorithm!r} was requested"
        self.settings = settings or get_settings()
        if engine is None:
            option = engines.option("fftconv.plan", algorithm, self.geometry, self.compute_dtype,
                                    max_workspace_bytes, tile)
            engine = engines.build(algorithm, self.geometry, self.compute_dtype, self.settings,
                                   option)
        self._engine = engine
        self._runner = LayerRunner(self.layer, engine)
        self._weights = WeightCache()
        self._last: Optional[Pullback] = None

    # -- geometry -------------------------------------------------------------------
    @property
    def geometry(self) -> ConvGeometry:
        """The correlation the engine runs (``layer.conv``)."""
        return self.layer.conv

    @property
    def out_shape(self) -> tuple:
        return self.layer.y_shape

    @property
    def fft_shape(self):
        """FFT size per axis (of one tile for overlap-add; ``None`` when no FFT runs)."""
        return self._engine.fft_shape

    @property
    def tile(self):
        """Output tile per axis for overlap-add, else ``None``."""
        return self._engine.tile

    @property
    def transform_counts(self) -> dict:
        """Batched transforms run by this plan: ``{"forward": int, "inverse": int}``."""
        return self._engine.transform_counts

    @property
    def workspace_bytes(self) -> int:
        """Bytes of FFT buffers one training step with this plan uses."""
        return self._engine.workspace_bytes

    @property
    def chunk(self) -> int:
        """Samples per pass: the batch size unless ``max_workspace_bytes`` asked for less."""
        return self._engine.chunk

    def __repr__(self) -> str:
        g, layer = self.geometry, self.layer
        extra = f", fft_shape={self.fft_shape}" if self.fft_shape else ""
        if self.tile:
            extra += f", tile={self.tile}"
        if self.chunk < g.batch:
            extra += f", chunk={self.chunk}"
        options = ""
        if layer.transposed:
            options += f", transposed=True, output_padding={layer.output_padding}"
        if layer.padding_mode != "zeros":
            options += f", padding_mode={layer.padding_mode!r}"
        if layer.layout != "channels_first":
            options += f", layout={layer.layout!r}"
        return (f"Plan(x{layer.x_shape} * w{layer.w_shape} -> y{layer.y_shape}, "
                f"dtype={self.result_dtype}, algorithm={self.algorithm!r}{extra}, "
                f"padding={layer.padding}, stride={g.stride}, dilation={g.dilation}, "
                f"groups={g.groups}, flip_kernel={g.flip_kernel}{options})")

    # -- the passes -----------------------------------------------------------------
    def _check(self, func: str, name: str, a, shape) -> np.ndarray:
        return check_operand(func, name, a, shape, self.result_dtype, self.compute_dtype)

    def vjp(self, x, w, b=None) -> tuple:
        """``(y, pullback)``: ``y = conv(x, w) + b`` and a :class:`Pullback` that gives
        the gradients for this ``x`` and ``w`` (as they are now), any number of times."""
        return self._vjp("Plan.vjp", x, w, b)

    def apply(self, x, w, b=None) -> np.ndarray:
        """``y = conv(x, w) + b`` keeping nothing for a backward pass (evaluation)."""
        return self._vjp("Plan.apply", x, w, b, keep=False)[0]

    def _vjp(self, func: str, x, w, b, keep: bool = True) -> tuple:
        layer = self.layer
        x = self._check(func, "x", x, layer.x_shape)
        w = self._check(func, "w", w, layer.w_shape)
        if b is not None:
            b = self._check(func, "b", b, (layer.out_channels,))
        with self._engine.lock:
            weights = self._weights.state(w, self._runner.weights)
            y, saved = self._runner.forward(x, weights, b, keep=keep)
        if not keep:
            return y.astype(self.result_dtype, copy=False), None
        caller = "Plan.backward" if func == "Plan.forward" else f"{func} pullback"
        pullback = Pullback(self._runner, saved, weights, self.result_dtype, self._engine.lock,
                            caller)
        return y.astype(self.result_dtype, copy=False), pullback

    def forward(self, x, w, b=None) -> np.ndarray:
        """``y = conv(x, w) + b``; keeps what :meth:`backward` needs about this call.

        The convenience form of :meth:`vjp` for one outstanding call: the next
        ``forward`` replaces what this one kept.  A layer used several times
        before its backward pass (a siamese tower, an unrolled RNN) uses
        :meth:`vjp`, one pullback per call.
        """
        y, self._last = self._vjp("Plan.forward", x, w, b)
        return y

    def backward(self, dy) -> Gradients:
        """Gradients ``(dx, dw, db)`` of the **last** :meth:`forward` for output
        gradient ``dy`` (see :meth:`vjp` for several calls in flight)."""
        if self._last is None:
            fail("Plan.backward", "call Plan.forward(x, w, b) before Plan.backward(dy)",
                 RuntimeError)
        return self._last(dy)
