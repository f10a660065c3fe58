"""``algorithm="auto"``: pick direct, FFT or overlap-add for a layer.

By default the cost model (``costs``) decides.  With ``measure=True`` (or the
``measure`` setting) the candidates are timed once per geometry (one warm-up
and the best of three training steps each) and the fastest wins; measured
choices are persisted in ``choices.json`` beside the FFTW wisdom
(``cachefile.cache_dir()``), so later processes reuse them without measuring.
Every entry is validated when read (algorithm, timings, tile); a file that
is corrupt or from another fftconv version, or an entry that is malformed, is
dropped with one :class:`ChoiceCacheWarning` and the file rewritten without
it.  Writes merge with the file's current contents under its lock
(``cachefile.update``), so processes measuring at the same time keep each
other's choices.  Nothing here is fatal.
"""
from __future__ import annotations

import math
import numbers
import threading
import time
import warnings
from collections import OrderedDict
from typing import Dict, NamedTuple, Optional, Tuple

import numpy as np

from . import cachefile, registry
from ._version import __version__
from .backends import Arrays
from .config import Settings
from .geometry import ConvGeometry
from .timing import WEIGHT_STEP, best_of

FORMAT_VERSION = 1
FILE_NAME = "choices.json"
CANDIDATES = registry.NAMES


class ChoiceCacheWarning(UserWarning):
    """The persisted algorithm choices could not be read or written."""


class Choice(NamedTuple):
    """An algorithm for a layer, with the overlap-add tile and the reasons."""

    algorithm: str
    tile: Optional[Tuple[int, ...]]
    explain: str


def _key(geom: ConvGeometry, dtype, settings: Settings, arrays: Optional[Arrays] = None) -> str:
    """The store's key: geometry, dtype, settings and, off numpy, the array library
    and device (numpy's keys are those stored before backends existed)."""
    where = () if arrays is None or arrays.fftw else (arrays.key,)
    return repr((geom, np.dtype(dtype).str, settings.backend, settings.threads) + where)


def entry_problem(entry, candidates=CANDIDATES) -> Optional[str]:
    """Why a stored choice is unusable, or ``None`` if it is well formed: an
    algorithm among ``candidates``, timings (a name -> seconds >= 0 table) and a
    tile of ints >= 1 exactly for a registered algorithm that tiles."""
    if not isinstance(entry, dict):
        return "an entry is not an object"
    name, seconds, tile = entry.get("algorithm"), entry.get("seconds"), entry.get("tile")
    if name not in candidates:
        return f"unknown algorithm {name!r}"
    if not isinstance(seconds, dict) or not seconds or not all(
            isinstance(key, str) and isinstance(t, (int, float)) and not isinstance(t, bool)
            and math.isfinite(t) and t >= 0 for key, t in seconds.items()):
        return f"malformed seconds {seconds!r}"
    tiled = name in registry.REGISTRY and registry.REGISTRY[name].tiled
    if tiled != (tile is not None) or tile is not None and not (
            isinstance(tile, list) and tile and all(
                isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in tile)):
        return f"malformed tile {tile!r} for {name!r}"
    return None


def _dropped(path, count: int, first: str) -> str:
    """The warning for ``count`` malformed entries dropped from the file."""
    entries = "entry" if count == 1 else "entries"
    return (f"fftconv: ignoring {count} malformed {entries} of algorithm choices file {path} "
            f"({first}); the file is rewritten without them")


def _usable(data, path, problem) -> tuple:
    """``(usable choices, the warning about the rest or None)`` of a file's JSON;
    ``problem(entry)`` says why an entry is unusable (``None``: it is usable)."""
    if data is None:
        return {}, None
    if not isinstance(data, dict) or not isinstance(data.get("choices"), dict):
        return {}, f"fftconv: ignoring algorithm choices file {path}: not a choices file"
    if data.get("format") != FORMAT_VERSION or data.get("fftconv") != __version__:
        return {}, (f"fftconv: ignoring algorithm choices file {path}: written by another "
                    f"version ({data.get('fftconv')!r})")
    problems = {key: problem(entry) for key, entry in data["choices"].items()}
    bad = [why for why in problems.values() if why is not None]
    return ({key: entry for key, entry in data["choices"].items() if problems[key] is None},
            _dropped(path, len(bad), bad[0]) if bad else None)


class ChoiceStore:
    """Measured choices, in memory and in ``file_name`` (``choices.json``) beside
    the wisdom; entries name one of ``candidates`` (thread-safe).  Every entry
    read is checked by :func:`entry_problem` and, if given, by ``valid(entry)``
    (what else this store's readers need)."""

    def __init__(self, file_name: str = FILE_NAME, candidates=CANDIDATES, valid=None):
        self.file_name, self.candidates = file_name, tuple(candidates)
        self.valid = valid or (lambda entry: True)   # more checks on an entry
        self._lock = threading.Lock()
        self._loaded_from = None
        self._choices: Dict[str, dict] = {}

    def _path(self):
        return cachefile.cache_dir() / self.file_name

    @staticmethod
    def _warn(message: str):
        # one place in this module: Python's default filter shows each message once
        warnings.warn(message, ChoiceCacheWarning, stacklevel=1)

    def _load(self):
        path = self._path()
        if self._loaded_from == path:
            return
        self._loaded_from, self._choices = path, {}
        try:
            self._choices, problem = _usable(cachefile.read_json(path), path, self._problem)
        except (OSError, ValueError) as exc:  # unreadable, not JSON
            problem = f"fftconv: ignoring algorithm choices file {path}: {cachefile.reason(exc)}"
        if problem is not None:
            self._warn(problem)
            self._write({})

    def _write(self, new: dict, drop=()):
        """Merge ``new`` entries into the file, less the keys in ``drop``, under its
        lock; what the file then holds becomes what this store knows."""
        path = self._path()

        def merge(current):
            kept = {k: v for k, v in _usable(current, path, self._problem)[0].items()
                    if k not in drop}
            return {"format": FORMAT_VERSION, "fftconv": __version__, "choices": {**kept, **new}}
        try:
            self._choices = cachefile.update(path, merge)["choices"]
        except OSError as exc:
            self._choices = {k: v for k, v in {**self._choices, **new}.items() if k not in drop}
            self._warn(f"fftconv: could not save algorithm choices to {path}: "
                       f"{cachefile.reason(exc)}")

    def _problem(self, entry) -> Optional[str]:
        return entry_problem(entry, self.candidates) or (
            None if self.valid(entry) else f"an entry {self.file_name} cannot use")

    def get(self, key: str) -> Optional[dict]:
        with self._lock:
            self._load()
            return self._choices.get(key)

    def put(self, key: str, entry: dict):
        with self._lock:
            self._load()
            self._write({key: entry})

    def discard(self, key: str, why: str):
        """Drop a stored entry that does not fit its layer, with one warning, and
        rewrite the file without it."""
        with self._lock:
            self._load()
            self._warn(_dropped(self._path(), 1, why))
            self._write({}, drop={key})


STORE = ChoiceStore()
_estimated: "OrderedDict[str, Choice]" = OrderedDict()
_estimated_lock = threading.Lock()


def _describe(seconds: dict, partitions: dict) -> str:
    """``"direct 1.2 ms, overlap_add 3.4 ms (tile (64,)), ..."``, fastest first;
    ``partitions`` maps a name to its partition (a tile), shown where set."""
    parts = [f"{name} {1e3 * t:.3g} ms" + (f" (tile {partitions[name]})" if partitions.get(name) else "")
             for name, t in sorted(seconds.items(), key=lambda kv: kv[1])]
    return ", ".join(parts)


def estimate(geom: ConvGeometry, dtype, settings: Settings,
             arrays: Optional[Arrays] = None) -> Choice:
    """The cost model's choice among the algorithms that run on ``arrays`` (default:
    all), cached per geometry, dtype, settings and candidates."""
    names = registry.NAMES if arrays is None else registry.names_on(arrays)
    key = _key(geom, dtype, settings) + repr(names)
    with _estimated_lock:
        if key in _estimated:
            _estimated.move_to_end(key)
            return _estimated[key]
    priced = registry.candidates(geom, dtype, arrays)
    est = {name: seconds for name, (seconds, _) in priced.items()}
    best = min(est, key=lambda name: est[name])
    partitions = {name: partition for name, (_, partition) in priced.items()}
    choice = Choice(best, partitions[best],
                    f"auto chose {best!r} by the cost model; estimated {_describe(est, partitions)}")
    with _estimated_lock:
        _estimated[key] = choice
        while len(_estimated) > 256:
            _estimated.popitem(last=False)
    return choice


def _time_step(plan_factory, geom: ConvGeometry, dtype, arrays: Arrays,
               repeats: int = 3) -> float:
    """Best-of-``repeats`` seconds of one training step on ``arrays``' device, the
    weights moving (the device's queue drained after each step)."""
    rng = np.random.default_rng(0)
    x, w, dy = (arrays.asarray(rng.standard_normal(shape).astype(dtype))
                for shape in (geom.x_shape, geom.w_shape, geom.y_shape))
    plan = plan_factory()

    def step():
        plan.vjp(x, w)[1](dy)
        arrays.synchronize()

    def move_weights():
        w[...] += WEIGHT_STEP
    return best_of(step, repeats, prepare=move_weights)


def measure(geom: ConvGeometry, dtype, settings: Settings, plan_factory,
            arrays: Arrays) -> Choice:
    """Time every candidate (``registry.candidates``: it runs on ``arrays`` and can
    run the layer) once per geometry and device, and persist the fastest.

    ``plan_factory(algorithm, tile)`` builds a plan for a candidate.
    """
    key = _key(geom, dtype, settings, arrays)
    stored = STORE.get(key)
    if stored is not None and stored.get("tile") is not None and len(stored["tile"]) != geom.ndim:
        STORE.discard(key, f"tile {stored['tile']} for a {geom.ndim}-d layer")
        stored = None
    if stored is not None:
        tile = tuple(stored["tile"]) if stored.get("tile") else None
        return Choice(stored["algorithm"], tile,
                      f"auto chose {stored['algorithm']!r} by measurement (stored); measured "
                      f"{_describe(stored['seconds'], {stored['algorithm']: tile})}")
    partitions = {name: partition
                  for name, (_, partition) in registry.candidates(geom, dtype, arrays).items()}
    timed = {name: _time_step(lambda: plan_factory(name, partitions[name]), geom, dtype, arrays)
             for name in partitions}
    best = min(timed, key=lambda name: timed[name])
    tile = partitions[best]
    STORE.put(key, {"algorithm": best, "tile": None if tile is None else list(tile),
                    "seconds": timed})
    return Choice(best, tile, f"auto chose {best!r} by measurement; measured "
                              f"{_describe(timed, partitions)}")
