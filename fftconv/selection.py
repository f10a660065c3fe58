"""``algorithm="auto"``: pick direct, FFT or overlap-add for a layer.

By default the cost model (``costs``) decides.  With ``measure=True`` (or the
``measure`` setting) the candidates are timed once per geometry (one warm-up
and the best of three training steps each) and the fastest wins; measured
choices are persisted in ``choices.json`` beside the FFTW wisdom
(``wisdom.cache_dir()``), so later processes reuse them without measuring.
A choices file that is corrupt or from another fftconv version is ignored
with a :class:`ChoiceCacheWarning`, never fatal.
"""
from __future__ import annotations

import json
import threading
import time
import warnings
from collections import OrderedDict
from typing import NamedTuple, Optional, Tuple

import numpy as np

from . import engines, wisdom
from .config import Settings
from .geometry import ConvGeometry

FORMAT_VERSION = 1
FILE_NAME = "choices.json"
CANDIDATES = engines.NAMES


class ChoiceCacheWarning(UserWarning):
    """The persisted algorithm choices could not be read or written."""


class Choice(NamedTuple):
    """An algorithm for a layer, with the overlap-add tile and the reasons."""

    algorithm: str
    tile: Optional[Tuple[int, ...]]
    explain: str


def _version() -> str:
    from . import __version__
    return __version__


def _key(geom: ConvGeometry, dtype, settings: Settings) -> str:
    return repr((geom, np.dtype(dtype).str, settings.backend, settings.threads))


class ChoiceStore:
    """Measured choices, in memory and in ``file_name`` (``choices.json``) beside
    the wisdom; entries name one of ``candidates`` (thread-safe)."""

    def __init__(self, file_name: str = FILE_NAME, candidates=CANDIDATES, valid=None):
        self.file_name, self.candidates = file_name, tuple(candidates)
        self.valid = valid or (lambda entry: True)   # more checks on an entry
        self._lock = threading.Lock()
        self._loaded_from = None
        self._choices = {}

    def _path(self):
        return wisdom.cache_dir() / self.file_name

    def _load(self):
        path = self._path()
        if self._loaded_from == path:
            return
        self._loaded_from, self._choices = path, {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format") != FORMAT_VERSION or data.get("fftconv") != _version():
                raise ValueError(f"written by another version ({data.get('fftconv')})")
            choices = data["choices"]
            if not all(isinstance(v, dict) and v.get("algorithm") in self.candidates
                       and self.valid(v)
                       for v in choices.values()):
                raise ValueError("unexpected entries")
            self._choices = choices
        except FileNotFoundError:
            pass
        except Exception as exc:
            warnings.warn(f"fftconv: ignoring algorithm choices file {path}: {exc}",
                          ChoiceCacheWarning, stacklevel=4)

    def get(self, key: str) -> Optional[dict]:
        with self._lock:
            self._load()
            return self._choices.get(key)

    def put(self, key: str, entry: dict):
        with self._lock:
            self._load()
            self._choices[key] = entry
            path = self._path()
            try:
                wisdom.write_json(path, {"format": FORMAT_VERSION, "fftconv": _version(),
                                         "choices": self._choices})
            except OSError as exc:
                warnings.warn(f"fftconv: could not save algorithm choices to {path}: {exc}",
                              ChoiceCacheWarning, stacklevel=4)


STORE = ChoiceStore()
_estimated: "OrderedDict[str, Choice]" = OrderedDict()
_estimated_lock = threading.Lock()


def _describe(seconds: dict, options: dict) -> str:
    """``"direct 1.2 ms, overlap_add 3.4 ms (tile (64,)), ..."``, fastest first;
    ``options`` maps a name to its engine option (a tile), shown where set."""
    parts = [f"{name} {1e3 * t:.3g} ms" + (f" (tile {options[name]})" if options.get(name) else "")
             for name, t in sorted(seconds.items(), key=lambda kv: kv[1])]
    return ", ".join(parts)


def estimate(geom: ConvGeometry, dtype, settings: Settings) -> Choice:
    """The cost model's choice (cached per geometry, dtype and settings)."""
    key = _key(geom, dtype, settings)
    with _estimated_lock:
        if key in _estimated:
            _estimated.move_to_end(key)
            return _estimated[key]
    priced = engines.estimates(geom, dtype)
    est = {name: seconds for name, (seconds, _) in priced.items()}
    best = min(est, key=est.get)
    options = {name: option for name, (_, option) in priced.items()}
    choice = Choice(best, options[best],
                    f"auto chose {best!r} by the cost model; estimated {_describe(est, options)}")
    with _estimated_lock:
        _estimated[key] = choice
        while len(_estimated) > 256:
            _estimated.popitem(last=False)
    return choice


def _time_step(plan_factory, geom: ConvGeometry, dtype, repeats: int = 3) -> float:
    """Best-of-``repeats`` seconds of one training step (after a warm-up)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(geom.x_shape).astype(dtype)
    w = rng.standard_normal(geom.w_shape).astype(dtype)
    dy = rng.standard_normal(geom.y_shape).astype(dtype)
    plan = plan_factory()
    best = float("inf")
    for i in range(repeats + 1):
        w += 1e-3  # weights change every step, as in training
        start = time.perf_counter()
        plan.vjp(x, w)[1](dy)
        if i:
            best = min(best, time.perf_counter() - start)
    return best


def measure(geom: ConvGeometry, dtype, settings: Settings, plan_factory) -> Choice:
    """Time every candidate once per geometry and persist the fastest.

    ``plan_factory(algorithm, tile)`` builds a plan for a candidate.
    """
    key = _key(geom, dtype, settings)
    stored = STORE.get(key)
    if stored is not None:
        tile = tuple(stored["tile"]) if stored.get("tile") else None
        return Choice(stored["algorithm"], tile,
                      f"auto chose {stored['algorithm']!r} by measurement (stored); measured "
                      f"{_describe(stored['seconds'], {stored['algorithm']: tile})}")
    options = {name: option for name, (_, option) in engines.estimates(geom, dtype).items()}
    timed = {name: _time_step(lambda: plan_factory(name, options[name]), geom, dtype)
             for name in CANDIDATES}
    best = min(timed, key=timed.get)
    tile = options[best]
    STORE.put(key, {"algorithm": best, "tile": None if tile is None else list(tile),
                    "seconds": timed})
    return Choice(best, tile, f"auto chose {best!r} by measurement; measured "
                              f"{_describe(timed, options)}")
