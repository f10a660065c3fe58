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
in entries and in bytes by the settings ``engine_cache_entries`` and
``engine_cache_bytes``; :func:`clear_caches` empties it.  Nothing here branches on algorithm names: engines
come from ``registry.REGISTRY``.
"""
from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from typing import NamedTuple, Optional

import numpy as np

from . import autoselect, costs, registry, runtime
from .backends import Arrays, host
from .checks import check_bool, check_like, check_operand, dtypes_for, fail
from .config import Settings, available_cores, get_settings, process_settings
from .geometry import ConvGeometry, LayerGeometry
from .protocol import Tiling
from .runner import Runner


class Gradients(NamedTuple):
    """What ``backward`` and a pullback return; unpacks as ``dx, dw, db``.

    Attributes
    ----------
    dx : ndarray or None
        Gradient with respect to ``x``; ``None`` when a pullback was called with
        ``need_dx=False``.
    dw : ndarray or None
        Gradient with respect to ``w``; ``None`` when a pullback was called with
        ``need_dw=False``.
    db : ndarray
        Gradient with respect to the bias, shape ``(C_out,)`` (whether or not the
        forward pass had one): always computed, it costs one sum over ``dy``.

    ``fftconv.backward`` always returns all three arrays.
    """

    dx: Optional[np.ndarray]
    dw: Optional[np.ndarray]
    db: np.ndarray


def result_gradients(grads: tuple, dtype, arrays: Arrays) -> Gradients:
    """The engine's ``(dx, dw, db)`` in the result ``dtype`` (``None`` kept)."""
    dx, dw, db = grads
    return Gradients(None if dx is None else arrays.astype(dx, dtype),
                     None if dw is None else arrays.astype(dw, dtype),
                     arrays.astype(db, dtype))


class WeightCache:
    """The engine's weight state for the last weights, reused while their values
    are unchanged.  A new state is a new object: pullbacks holding the old one
    keep it.  Thread-safe: a caller always gets the state of its own ``w``.
    The weights are compared where they live (on a device, one boolean is read
    back), against a private copy on the same device."""

    def __init__(self, arrays: Arrays):
        self._arrays = arrays
        self._w = None
        self._state = None
        self._lock = threading.Lock()

    def state(self, w, make):
        """``make(copy of w)``, or the state made for equal weights last time.  ``make``
        gets the private copy this cache compares against, which nothing changes:
        a state may keep it (the direct engine's does) instead of copying again."""
        with self._lock:
            if self._w is not None and self._arrays.equal(w, self._w):
                return self._state
        kept = self._arrays.copy(w)
        state = make(kept)
        with self._lock:
            self._state, self._w = state, kept
        return state


class SharedEngine(NamedTuple):
    """An engine shared by the stateless functions, with one weight cache per way
    of turning the caller's ``w`` into the engine's (``Runner.weight_form``:
    layouts and transposed complex layers share an engine, not a weight state)."""

    engine: object
    caches: dict

    def weights(self, form) -> WeightCache:
        cache = self.caches.get(form)
        if cache is None:
            cache = self.caches.setdefault(form, WeightCache(getattr(self.engine, "arrays")))
        return cache


class _Building:
    """Holds a key's place in :class:`EngineCache` while its engine is built."""


class EngineCache:
    """Thread-safe LRU of engines, bounded in count and bytes, with a small pool of
    engines per key so that calls on one geometry from several threads run
    concurrently, each on an engine of its own (an engine is not re-entrant).

    The key (see :func:`engine_for`) covers everything that changes the result
    or the buffers: the algorithm, the whole geometry (shapes, padding,
    stride, dilation, groups, flip, FFT size), the compute dtype, the settings
    (backend, threads, planner effort) and the engine's partition (chunk size or
    tile).  Buffer strides and alignment follow from these.

    :meth:`checkout` lends an idle engine of the key, or builds another one
    while the key has fewer than ``per_key`` engines and the cache's bytes
    allow (the first engine of a key is always built), else waits for one to
    be returned.  Only idle engines are evicted.

    ``max_entries`` and ``max_bytes`` are the process-wide settings
    ``engine_cache_entries`` and ``engine_cache_bytes`` (``fftconv.configure``),
    read at each use, unless given here (a private cache in a test).
    """

    def __init__(self, max_entries: Optional[int] = None, max_bytes: Optional[int] = None,
                 per_key: Optional[int] = None):
        self._max_entries, self._max_bytes = max_entries, max_bytes
        self.per_key = per_key or max(2, available_cores())
        self._reset()

    @property
    def max_entries(self) -> int:
        """Engines kept at most (idle ones beyond it are dropped)."""
        if self._max_entries is not None:
            return self._max_entries
        return process_settings().engine_cache_entries

    @property
    def max_bytes(self) -> int:
        """Workspace bytes kept at most, over all engines."""
        if self._max_bytes is not None:
            return self._max_bytes
        return process_settings().engine_cache_bytes

    def _reset(self):
        """Empty, with a new lock (also in a forked child: the parent's threads,
        which may have held the lock or borrowed engines, do not exist there)."""
        self._idle: "OrderedDict[tuple, list]" = OrderedDict()
        self._lent: dict = {}   # key -> engines of that key out on loan
        self._cond = threading.Condition(threading.Lock())

    @contextlib.contextmanager
    def checkout(self, key: tuple, build):
        """Lend an engine of ``key`` (built by ``build()`` when needed) for the block."""
        entry = self._take(key, build)
        try:
            yield entry
        finally:
            self._give_back(key, entry)

    def _take(self, key, build) -> SharedEngine:
        with self._cond:
            while True:
                idle, lent = self._idle.setdefault(key, []), self._lent.setdefault(key, [])
                self._idle.move_to_end(key)
                if idle:
                    entry = idle.pop()
                    lent.append(entry)
                    return entry
                if self._may_build(lent):
                    building = _Building()
                    lent.append(building)    # reserved: built outside the lock
                    break
                self._cond.wait()
        entry = None
        try:
            entry = SharedEngine(build(), {})
        finally:
            with self._cond:
                lent = self._lent.setdefault(key, [])
                lent[:] = [e for e in lent if e is not building] + ([entry] if entry else [])
                self._cond.notify_all()
        return entry

    def _may_build(self, lent: list) -> bool:
        """Whether another engine of a key with ``lent`` engines out may be built."""
        if not lent:
            return True
        built = [e for e in lent if not isinstance(e, _Building)]
        return (bool(built) and len(lent) < self.per_key
                and self._bytes() + built[0].engine.workspace_bytes <= self.max_bytes)

    def _give_back(self, key, entry: SharedEngine):
        with self._cond:
            lent = self._lent.get(key, [])
            if any(e is entry for e in lent):
                lent[:] = [e for e in lent if e is not entry]
                self._idle.setdefault(key, []).append(entry)
                self._idle.move_to_end(key)
            self._evict()
            self._cond.notify_all()

    def _bytes(self) -> int:
        return sum(e.engine.workspace_bytes for entries in (*self._idle.values(),
                                                             *self._lent.values())
                   for e in entries if not isinstance(e, _Building))

    def _count(self) -> int:
        return sum(len(v) for v in self._idle.values()) + sum(len(v) for v in self._lent.values())

    def _evict(self):
        """Drop idle engines, least recently used key first, down to the bounds
        (keeping at least one engine)."""
        while self._count() > 1 and (self._count() > self.max_entries
                                     or self._bytes() > self.max_bytes):
            key = next((k for k, v in self._idle.items() if v), None)
            if key is None:
                return
            self._idle[key].pop(0)
        for key in [k for k, v in self._idle.items() if not v and not self._lent.get(k)]:
            del self._idle[key]
            self._lent.pop(key, None)

    def entries(self) -> list:
        """The idle engines, least recently used key first (for inspection)."""
        with self._cond:
            return [e for v in self._idle.values() for e in v]

    def clear(self):
        """Drop every idle engine (engines on loan are dropped when given back
        only if the bounds ask for it)."""
        with self._cond:
            self._idle.clear()

    def __len__(self):
        with self._cond:
            return self._count()


ENGINE_CACHE = EngineCache()
runtime.at_fork_in_child(lambda: ENGINE_CACHE._reset())


def clear_caches() -> None:
    """Empty the engine cache of the stateless functions.

    ``fftconv.forward``, ``backward``, ``vjp`` and ``fftconv.dask``'s blocks keep
    the engines they build (FFT plans, buffers, weight spectra) for the next call
    on the same geometry, up to the ``engine_cache_bytes`` and
    ``engine_cache_entries`` settings.  This drops them all now, to give their
    memory back or to time a first call again.  Plans made with
    :func:`fftconv.plan` own their engines and are not affected; nor are
    pullbacks, which keep what they need.

    Examples
    --------
    >>> import fftconv
    >>> fftconv.clear_caches()
    """
    ENGINE_CACHE.clear()


def resolve(layer: LayerGeometry, algorithm: str) -> LayerGeometry:
    """``layer`` as algorithm ``algorithm``'s engine runs it (circular padding as
    one FFT at the input size where the engine can)."""
    return layer.for_engine(registry.REGISTRY[algorithm].circular_fast)


def engine_for(func: str, geom: ConvGeometry, dtype, algorithm: str, settings: Settings,
               tile, arrays: Arrays):
    """Context manager lending an engine from :data:`ENGINE_CACHE` (a
    :class:`SharedEngine`) to one stateless call on ``arrays``' library and device."""
    partition = registry.partition(func, algorithm, geom, dtype, settings.max_workspace_bytes, tile)
    key = (algorithm, geom, np.dtype(dtype).str, settings, partition, arrays.key)
    return ENGINE_CACHE.checkout(key, lambda: _build(func, algorithm, geom, dtype, settings,
                                                      partition, arrays))


def _build(func: str, algorithm: str, geom: ConvGeometry, dtype, settings: Settings, partition,
           arrays: Arrays):
    """``registry.build``, refused with a ``MemoryError`` (before any buffer is
    allocated: engines allocate lazily) when its workspace and what a forward pass
    keeps exceed the memory available (the device's, for arrays on a device)."""
    engine = registry.build(algorithm, geom, dtype, settings, partition, arrays)
    device = arrays.device_memory()
    runtime.check_memory(func, f"the layer x{geom.x_shape} * w{geom.w_shape} "
                               f"(algorithm={algorithm!r})",
                         engine.workspace_bytes + engine.kept_bytes, device,
                         "memory" if device is None else f"memory on {arrays.device}")
    return engine


def check_runs_on(func: str, algorithm: str, arrays: Arrays) -> None:
    """An algorithm asked for by name must run on the operands' library."""
    if algorithm != "auto" and not registry.REGISTRY[algorithm].runs_on(arrays):
        fail(func, f"algorithm={algorithm!r} views arrays with explicit strides, which "
                   f"{arrays.describe()} does not support; use one of "
                   f"{', '.join(map(repr, registry.names_on(arrays)))} or 'auto'")


def choose_algorithm(func: str, geom: ConvGeometry, dtype, algorithm: str, settings: Settings,
                     measure: bool, budget: Optional[int] = None,
                     arrays: Optional[Arrays] = None) -> autoselect.Choice:
    """Resolve ``"auto"`` by the cost model or, with ``measure``, by timing, among the
    algorithms that run on ``arrays`` (default numpy) and whose workspace fits in
    ``budget`` bytes (default: the setting)."""
    arrays = host() if arrays is None else arrays
    check_runs_on(func, algorithm, arrays)
    if algorithm != "auto":
        return autoselect.Choice(algorithm, None, f"algorithm {algorithm!r} was requested")
    if geom.batch == 0:  # nothing to time or to fit: the cost model decides
        return autoselect.estimate(geom, dtype, settings, arrays)
    budget = settings.max_workspace_bytes if budget is None else budget
    if measure:
        return autoselect.measure(geom, dtype, settings,
                                  lambda name, tile: Plan(LayerGeometry(geom), dtype, name,
                                                          settings, tile=tile,
                                                          max_workspace_bytes=budget,
                                                          arrays=arrays), arrays)
    choice = autoselect.estimate(geom, dtype, settings, arrays)
    return choice if budget is None else _within(func, geom, dtype, choice, budget, arrays)


def _within(func: str, geom: ConvGeometry, dtype, choice: autoselect.Choice,
            budget: int, arrays: Arrays) -> autoselect.Choice:
    """``choice`` if its engine fits ``budget`` as the model priced it, else the
    algorithm cheapest at the partition (batch chunk, tiling) that fits it."""
    fitted, needs = {}, {}
    for name in registry.candidates(geom, dtype, arrays):
        try:
            fitted[name] = registry.partition(func, name, geom, dtype, budget)
        except ValueError as exc:
            needs[name] = str(exc).split(": ", 1)[-1]
    unbounded = registry.partition(func, choice.algorithm, geom, dtype, None, choice.tile)
    if fitted.get(choice.algorithm) == unbounded:
        return choice
    if not fitted:
        raise ValueError(f"{func}: max_workspace_bytes={budget} is too small for every "
                         f"algorithm: " + "; ".join(f"{n}: {m}" for n, m in needs.items()))
    price = {name: costs.seconds(registry.REGISTRY[name].work(geom, dtype, partition))
             for name, partition in fitted.items()}
    best = min(price, key=lambda name: price[name])
    partition = fitted[best]
    tile = partition.tile if isinstance(partition, Tiling) else None
    return autoselect.Choice(best, tile, f"auto chose {best!r}: the cheapest by the cost model "
                                        f"within max_workspace_bytes={budget} "
                                        f"({choice.algorithm!r} does not fit as estimated)")


class Pullback:
    """The gradients of one forward call: ``pullback(dy)`` -> :class:`Gradients`.

    Holds what those gradients need (the spectrum of that call's ``x``, or
    its equivalent, and a reference to the weight state used), so it can be
    called any number of times, in any order with other pullbacks, with the
    same result each time, and gives the gradients for ``x`` and ``w`` as they
    were at its call.  Dropping it frees them.
    """

    def __init__(self, runner: Runner, saved, weights, result_dtype, lock,
                 func: str):
        self._runner, self._saved, self._weights = runner, saved, weights
        self._result, self._lock, self._func = np.dtype(result_dtype), lock, func
        self._arrays = runner.arrays

    @property
    def y_shape(self) -> tuple:
        return self._runner.layer.y_shape

    def __call__(self, dy, *, need_dx: bool = True, need_dw: bool = True) -> Gradients:
        """``(dx, dw, db)`` for output gradient ``dy``; ``need_dx=False`` or
        ``need_dw=False`` skips that gradient (``None`` in its place)."""
        need_dx = check_bool(self._func, "need_dx", need_dx)
        need_dw = check_bool(self._func, "need_dw", need_dw)
        check_like(self._func, self._arrays, dy=dy)
        dy = check_operand(self._func, "dy", dy, self.y_shape, self._result,
                           self._runner.dtype, origin="forward", arrays=self._arrays)
        with self._lock:
            grads = self._runner.backward(dy, self._saved, self._weights, need_dx, need_dw)
        return result_gradients(grads, self._result, self._arrays)

    def __repr__(self) -> str:
        return f"<Pullback for y{self.y_shape}, dtype={self._result}>"


class Plan:
    """A convolution layer of fixed geometry, dtype and algorithm.

    Build one with :func:`fftconv.plan`.  ``y, pullback = p.vjp(x, w, b)``
    computes ``y`` and a :class:`Pullback` for that call; ``p.forward`` /
    ``p.backward`` are the convenience form for one outstanding call: the
    last :meth:`forward` is what :meth:`backward` differentiates.  A plan may
    be shared between threads: each thread's :meth:`backward` differentiates
    that thread's last :meth:`forward`, and calls take turns on the one engine
    the plan owns (the stateless functions lend each thread an engine of its
    own, so they run concurrently).

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
        A name from ``fftconv.registry.REGISTRY``.
    arrays : fftconv.backends.Arrays
        The array library and device the plan runs on (``like=``): its operands
        must be arrays of it, and so are its results.
    """

    def __init__(self, layer: LayerGeometry, dtype, algorithm: str,
                 settings: Optional[Settings] = None, engine=None,
                 max_workspace_bytes: Optional[int] = None, explain: str = "", tile=None,
                 arrays: Optional[Arrays] = None):
        self.layer = resolve(layer, algorithm)
        self.compute_dtype, self.result_dtype = dtypes_for(np.dtype(dtype))
        self.algorithm = algorithm
        self.explain = explain or f"algorithm {algorithm!r} was requested"
        self.settings = settings or get_settings()
        self.arrays = host() if arrays is None else arrays
        if engine is None:
            partition = registry.partition("fftconv.plan", algorithm, self.geometry, self.compute_dtype,
                                    max_workspace_bytes, tile)
            engine = _build("fftconv.plan", algorithm, self.geometry, self.compute_dtype,
                            self.settings, partition, self.arrays)
        self._engine = engine
        self._runner = Runner(self.layer, engine, self.settings.threads, "fftconv.Plan")
        self._weights = WeightCache(self.arrays)
        self._last = threading.local()   # .pullback: this thread's last forward

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
        """Bytes of every buffer a training step with this plan owns: the engine's
        workspace (what ``max_workspace_bytes`` bounds: transform buffers, spectra,
        tiles, batch chunks) plus what a forward pass keeps for its backward pass
        when that is not one of those buffers (a copy of ``x``, or the padded ``x``
        for direct)."""
        return self._engine.workspace_bytes + self._engine.kept_bytes

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
        if not self.arrays.fftw:
            options += f", on {self.arrays.describe()}"
        return (f"Plan(x{layer.x_shape} * w{layer.w_shape} -> y{layer.y_shape}, "
                f"dtype={self.result_dtype}, algorithm={self.algorithm!r}{extra}, "
                f"padding={layer.padding}, stride={g.stride}, dilation={g.dilation}, "
                f"groups={g.groups}, flip_kernel={g.flip_kernel}{options})")

    # -- the passes -----------------------------------------------------------------
    def _check(self, func: str, name: str, a, shape):
        check_like(func, self.arrays, **{name: a})
        return check_operand(func, name, a, shape, self.result_dtype, self.compute_dtype,
                             arrays=self.arrays)

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
        y = self.arrays.astype(y, self.result_dtype)
        if not keep:
            return y, None
        caller = "Plan.backward" if func == "Plan.forward" else f"{func} pullback"
        pullback = Pullback(self._runner, saved, weights, self.result_dtype, self._engine.lock,
                            caller)
        return y, pullback

    def forward(self, x, w, b=None) -> np.ndarray:
        """``y = conv(x, w) + b``; keeps what :meth:`backward` needs about this call.

        The convenience form of :meth:`vjp` for one outstanding call: the next
        ``forward`` in the same thread replaces what this one kept (each thread
        sharing the plan has its own last forward).  A layer used several times
        before its backward pass (a siamese tower, an unrolled RNN) uses
        :meth:`vjp`, one pullback per call.
        """
        y, self._last.pullback = self._vjp("Plan.forward", x, w, b)
        return y

    def backward(self, dy) -> Gradients:
        """Gradients ``(dx, dw, db)`` of this thread's **last** :meth:`forward` for output
        gradient ``dy`` (see :meth:`vjp` for several calls in flight)."""
        last = getattr(self._last, "pullback", None)
        if last is None:
            fail("Plan.backward", "call Plan.forward(x, w, b) before Plan.backward(dy)",
                 RuntimeError)
        return last(dy)
