"""The one registry of algorithms: name -> how to build its engine and price it.

Every algorithm is an engine of the protocol in ``fftconv.protocol``,
registered here once.  ``checks`` (the accepted names), ``selection``
(``algorithm="auto"``), the planner, ``bench`` and the tests read
:data:`REGISTRY`; a new algorithm or backend is one new module plus one
entry here, and nothing else branches on algorithm names.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import numpy as np

from . import costs, direct, overlap_add
from .config import Settings
from .direct import DirectEngine
from .fftpath import FFTEngine, workspace_bytes
from .geometry import ConvGeometry


@dataclass(frozen=True)
class Algorithm:
    """One registered algorithm.

    ``option(func, geom, dtype, budget, tile)`` is the engine's one free parameter
    (the FFT engine's batch chunk for a workspace budget, overlap-add's output
    tile), part of the engine cache key; ``build(geom, dtype, settings,
    option)`` makes the engine; ``work(geom, dtype, option)`` is the cost
    model's units of one training step and ``estimate(geom, dtype)`` its
    ``(seconds, option)``; ``circular_fast`` says the engine can run circular
    padding as one transform at the input size (``geometry.circular_geometry``);
    ``tiled`` that its option is an output tile the caller may set (``tile=``).
    """

    name: str
    build: Callable
    option: Callable
    work: Callable
    estimate: Callable
    circular_fast: bool = False
    tiled: bool = False


def largest_chunk(func: str, geom: ConvGeometry, budget: Optional[int], bytes_of,
                  what: str) -> int:
    """Largest number of samples per pass whose workspace ``bytes_of(chunk)`` fits
    in ``budget`` bytes (the whole batch without a budget)."""
    if budget is None or geom.batch == 0 or bytes_of(geom.batch) <= budget:
        return geom.batch
    one = bytes_of(1)
    if one > budget:
        raise ValueError(f"{func}: max_workspace_bytes={budget} is too small: one sample needs "
                         f"{one} bytes of {what} workspace")
    lo, hi = 1, geom.batch  # workspace grows with the chunk: bisect
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if bytes_of(mid) <= budget else (lo, mid - 1)
    return lo


def choose_chunk(func: str, geom: ConvGeometry, dtype, budget: Optional[int]) -> int:
    """Largest number of samples per pass whose FFT workspace fits in ``budget`` bytes."""
    return largest_chunk(func, geom, budget, lambda c: workspace_bytes(geom, dtype, c), "FFT")


def direct_chunk(func: str, geom: ConvGeometry, dtype, budget: Optional[int]) -> int:
    """Largest number of samples per direct pass whose workspace fits in ``budget``."""
    return largest_chunk(func, geom, budget,
                         lambda c: direct.workspace_bytes(geom, dtype, c), "direct")


def fitting_tile(func: str, geom: ConvGeometry, dtype, budget: Optional[int], tile=None) -> tuple:
    """Overlap-add's output tile: ``tile`` if given, else the cost model's best
    (``costs.best_tile``) or, when its workspace exceeds ``budget``, the
    cheapest candidate tile that fits."""
    def fits(t):
        return budget is None or overlap_add.workspace_bytes(geom, dtype, t) <= budget
    if tile is not None:
        chosen = tuple(tile)
    else:
        chosen = tuple(costs.best_tile(geom, dtype)[0])
        if not fits(chosen):
            fitting = [t for t in _tiles(geom) if fits(t)]
            if fitting:
                chosen = min(fitting, key=lambda t: costs.seconds(
                    costs.overlap_add_work(geom, dtype, t)))
    if not fits(chosen):
        raise ValueError(f"{func}: max_workspace_bytes={budget} is too small: overlap-add "
                         f"with tile={chosen} needs "
                         f"{overlap_add.workspace_bytes(geom, dtype, chosen)} bytes of workspace")
    return chosen


def _tiles(geom: ConvGeometry) -> list:
    """Overlap-add tiles to try under a budget: the cost model's candidates and,
    per axis, every power of two below the output (down to one sample)."""
    per_axis = 8 if geom.ndim <= 2 else 5 if geom.ndim == 3 else 3
    lengths = [sorted(set(c) | {1 << i for i in range(o.bit_length()) if (1 << i) < o})
               for c, o in zip(costs.tile_candidates(geom, per_axis), geom.out_size)]
    return [tuple(t) for t in itertools.product(*lengths)]


def _fft_estimate(geom, dtype) -> Tuple[float, None]:
    return costs.seconds(costs.fft_work(geom, dtype)), None


def _direct_estimate(geom, dtype) -> Tuple[float, None]:
    return costs.seconds(costs.direct_work(geom, dtype)), None


def _overlap_add_estimate(geom, dtype) -> Tuple[float, tuple]:
    tile, seconds = costs.best_tile(geom, dtype)
    return seconds, tile


REGISTRY: Dict[str, Algorithm] = {a.name: a for a in (
    Algorithm("fft",
              build=lambda geom, dtype, settings, chunk: FFTEngine(geom, dtype, settings, chunk),
              option=lambda func, geom, dtype, budget, tile: choose_chunk(func, geom, dtype, budget),
              work=lambda geom, dtype, option=None: costs.fft_work(geom, dtype),
              estimate=_fft_estimate, circular_fast=True),
    Algorithm("direct",
              build=lambda geom, dtype, settings, chunk: DirectEngine(geom, dtype, settings,
                                                                      chunk),
              option=lambda func, geom, dtype, budget, tile: direct_chunk(func, geom, dtype,
                                                                          budget),
              work=lambda geom, dtype, option=None: costs.direct_work(geom, dtype),
              estimate=_direct_estimate),
    Algorithm("overlap_add",
              build=lambda geom, dtype, settings, tile: overlap_add.engine(geom, dtype,
                                                                           settings, tile),
              option=lambda func, geom, dtype, budget, tile: fitting_tile(func, geom, dtype,
                                                                          budget, tile),
              work=lambda geom, dtype, tile=None: costs.overlap_add_work(
                  geom, dtype, tile or costs.best_tile(geom, dtype)[0]),
              estimate=_overlap_add_estimate, tiled=True),
)}

#: Algorithm names, in registry order; ``"auto"`` chooses among them.
NAMES = tuple(REGISTRY)


def option(func: str, name: str, geom: ConvGeometry, dtype, budget: Optional[int] = None,
           tile=None):
    """Algorithm ``name``'s engine option for ``geom`` (see :class:`Algorithm`)."""
    return REGISTRY[name].option(func, geom, np.dtype(dtype), budget, tile)


def build(name: str, geom: ConvGeometry, dtype, settings: Settings, engine_option):
    """The engine of algorithm ``name`` for ``geom`` with its :func:`option`."""
    return REGISTRY[name].build(geom, np.dtype(dtype), settings, engine_option)


def estimates(geom: ConvGeometry, dtype) -> Dict[str, Tuple[float, Optional[tuple]]]:
    """``{name: (estimated step seconds, option)}`` for every registered algorithm."""
    return {name: entry.estimate(geom, np.dtype(dtype)) for name, entry in REGISTRY.items()}
