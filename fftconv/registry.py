"""The one registry of algorithm plugins: name -> :class:`~fftconv.protocol.Algorithm`.

Every algorithm is a module of ``fftconv.algorithms`` that owns its engine,
its cost terms and its partition search, and exports ``ALGORITHM``; adding one
is that module plus one line in :data:`REGISTRY`.  Callers above (argument
checks, ``autoselect``, the planner, the PyTorch bridge, the bench) take the
names from here; nothing else names an algorithm.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

import numpy as np

from .algorithms import direct, fft, fft_tiles, overlap_add, winograd
from .backends import Arrays
from .config import Settings
from .geometry import ConvGeometry
from .protocol import Algorithm, Engine, Partition

REGISTRY: Dict[str, Algorithm] = {a.name: a for a in (
    fft.ALGORITHM,
    direct.ALGORITHM,
    overlap_add.ALGORITHM,
    winograd.ALGORITHM,
    fft_tiles.ALGORITHM,
)}

#: Algorithm names, in registry order; ``"auto"`` chooses among them.
NAMES: Tuple[str, ...] = tuple(REGISTRY)


def partition(func: str, name: str, geom: ConvGeometry, dtype, budget: Optional[int] = None,
              tile: Optional[Tuple[int, ...]] = None) -> Partition:
    """Algorithm ``name``'s partition of ``geom`` for a workspace budget."""
    return REGISTRY[name].partition(func, geom, np.dtype(dtype), budget, tile)


def build(name: str, geom: ConvGeometry, dtype, settings: Settings,
          engine_partition: Partition, arrays: Arrays) -> Engine:
    """The engine of algorithm ``name`` for ``geom`` with its :func:`partition`, on
    ``arrays``' library and device."""
    return REGISTRY[name].build(geom, np.dtype(dtype), settings, engine_partition, arrays)


def names_on(arrays: Arrays) -> Tuple[str, ...]:
    """The algorithms whose engines run on ``arrays``' library, in registry order."""
    return tuple(name for name, entry in REGISTRY.items() if entry.runs_on(arrays))


def candidates(geom: ConvGeometry, dtype,
               arrays: Optional[Arrays] = None) -> Dict[str, Tuple[float, Optional[Tuple[int, ...]]]]:
    """:func:`estimates` of the algorithms that can run ``geom``: those whose engine
    runs on ``arrays``' library (default: all) and whose cost is finite (an
    algorithm prices a geometry outside its scope as infinite)."""
    names = NAMES if arrays is None else names_on(arrays)
    return {name: priced for name, priced in estimates(geom, dtype, names).items()
            if math.isfinite(priced[0])}


def estimates(geom: ConvGeometry, dtype,
              names: Optional[Tuple[str, ...]] = None) -> Dict[str, Tuple[float, Optional[Tuple[int, ...]]]]:
    """``{name: (estimated step seconds, tile)}`` for the algorithms ``names``
    (default: every registered one)."""
    return {name: REGISTRY[name].estimate(geom, np.dtype(dtype)) for name in names or NAMES}
