"""The engine protocol and the algorithm plugin: what every algorithm provides.

An :class:`Engine` computes one zero-padded correlation geometry
(:class:`~fftconv.geometry.ConvGeometry`) and its two gradients, in the
compute dtype, on arrays already checked.  Every other operation is one of
these with roles exchanged (JAX's ``_conv_general_dilated_transpose_*``): a
transposed layer runs :meth:`Engine.input_grad` forward and
:meth:`Engine.transposed_backward` backward (``fftconv.runner``).

What an engine keeps for a backward pass is a :class:`Saved`, owned by the
caller (a plan or a pullback), never by the engine: any number can be
outstanding, and each stays valid however the engine is used afterwards.

An :class:`Algorithm` is one plugin (a module of ``fftconv.algorithms``): how
to build its engine, how to split its work under a workspace budget (its
*partition*: a batch chunk or an output tile), and what a training step
costs.  ``fftconv.registry`` lists the plugins; nothing else names them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import (Any, Callable, ContextManager, Dict, NamedTuple, Optional, Protocol,
                    Tuple, Union)

import numpy as np

from . import budget, costs
from .backends import Arrays
from .config import Settings
from .costs import Work
from .geometry import ConvGeometry

class Tiling(NamedTuple):
    """A tiled algorithm's partition: output samples per tile and axis, and how
    many tiles one pass runs as one batch."""

    tile: Tuple[int, ...]
    per_pass: int


class GroupShares(NamedTuple):
    """A grouped layer's partition when not even one sample of all its groups fits:
    ``groups`` groups per pass, ``chunk`` samples at a time."""

    groups: int
    chunk: int


#: An engine's partition: samples per pass (an int), a :class:`Tiling` or
#: :class:`GroupShares`.
Partition = Union[int, Tiling, GroupShares]


class Saved(NamedTuple):
    """What a backward pass needs of one operand, as a forward pass left it.

    ``kind`` is the engine's own word for ``array``: ``"spectrum"`` (the FFT
    engine's frequency-major spectrum), ``"signal"`` (the operand itself) or
    ``"padded"`` (the direct engine's zero-padded input).  ``scale``: the
    operand was saved multiplied by ``2**-scale`` (``fftconv.scaling``; set by
    the runner, never by an engine).
    """

    kind: str
    array: np.ndarray
    scale: int = 0


Pair = Tuple[Optional[np.ndarray], Optional[np.ndarray]]


class Engine(Protocol):
    """One geometry, one compute dtype, one algorithm.

    ``out=`` arguments take any array of the result's shape (a strided view
    of a channels-last array, say): the result is written there, not copied
    afterwards.
    """

    #: The correlation this engine computes.
    geom: ConvGeometry
    #: The compute dtype.
    dtype: np.dtype
    #: The array library and device its buffers live on (``fftconv.backends``).
    arrays: Arrays
    #: Samples per pass.
    chunk: int

    @property
    def tile(self) -> Optional[Tuple[int, ...]]:
        """Overlap-add's output tile, else ``None``."""

    @property
    def lock(self) -> ContextManager[Any]:
        """Held by callers that share the engine between threads."""

    @property
    def fft_shape(self) -> Optional[Tuple[int, ...]]:
        """The transforms' size, ``None`` when no FFT runs."""

    @property
    def workspace_bytes(self) -> int:
        """Bytes the engine allocates beyond its inputs and outputs."""

    @property
    def kept_bytes(self) -> int:
        """Bytes a forward pass keeps for the backward pass."""

    @property
    def transform_counts(self) -> Dict[str, int]:
        """``{"forward": n, "inverse": n}`` transforms run so far."""

    def weights(self, w: np.ndarray) -> Any:
        """The weight state the passes read (the FFT engines' spectrum ``K``, the
        direct engine's ``w`` itself): never changed afterwards.  ``w`` is a private
        array no one changes (``planner.WeightCache`` passes its copy), so a state
        may keep it."""

    def save_input(self, x: np.ndarray) -> Saved:
        """``x`` as :meth:`backward` reads it, without a forward pass (may share ``x``)."""

    def save_output(self, dy: np.ndarray) -> Saved:
        """``dy`` as :meth:`transposed_backward` reads it (may share ``dy``)."""

    def forward(self, x: np.ndarray, weights: Any, keep: bool = False,
                out: Optional[np.ndarray] = None) -> Tuple[np.ndarray, Optional[Saved]]:
        """``(y, saved x)``: the correlation (no bias); with ``keep``, what
        :meth:`backward` needs of ``x``, independent of the caller's ``x``."""

    def input_grad(self, dy: np.ndarray, weights: Any, keep: bool = False,
                   out: Optional[np.ndarray] = None) -> Tuple[np.ndarray, Optional[Saved]]:
        """``(dx, saved dy)``: the input gradient alone; with ``keep``, what
        :meth:`transposed_backward` needs of ``dy``."""

    def backward(self, dy: np.ndarray, saved_x: Saved, weights: Any, need_dx: bool = True,
                 need_dw: bool = True, out: Optional[np.ndarray] = None) -> Pair:
        """``(dx, dw)`` for output gradient ``dy``; either may be skipped (``None``)."""

    def transposed_backward(self, x: np.ndarray, saved_dy: Saved, weights: Any,
                            need_y: bool = True, need_dw: bool = True,
                            out: Optional[np.ndarray] = None) -> Pair:
        """``(y, dw)``: the correlation of ``x`` and the weight gradient of ``x``
        against the saved ``dy``, from one pass over ``x``."""


@dataclass(frozen=True)
class Algorithm:
    """One algorithm plugin.

    ``partition(func, geom, dtype, budget, tile)`` is the engine's one free
    parameter for a workspace budget (``tile``: the caller's own tile, for a
    ``tiled`` algorithm), part of the engine cache key; ``build(geom, dtype,
    settings, partition, arrays)`` makes the engine for the array library and
    device ``arrays`` (``fftconv.backends``); ``work(geom, dtype, partition)``
    counts the units of one training step (``fftconv.costs`` prices them) and
    ``estimate(geom, dtype)`` gives ``(seconds, tile)`` without a budget (the
    tile ``None`` unless ``tiled``).
    ``circular_fast``: the engine can run circular padding as one transform at
    the input size (``geometry.circular_geometry``); ``tiled``: its partition is
    an output tile the caller may set (``tile=``); ``spatial``: it computes in
    the spatial domain, as a framework's own convolution does (the PyTorch
    bridge weighs only the others against that); ``strided``: its engine views
    arrays with explicit strides, so it runs only where the backend can
    (``Arrays.strided``; :meth:`runs_on`).
    """

    name: str
    build: Callable[[ConvGeometry, np.dtype, Settings, Partition, Arrays], Engine]
    partition: Callable[[str, ConvGeometry, np.dtype, Optional[int], Optional[Tuple[int, ...]]],
                        Partition]
    work: Callable[[ConvGeometry, np.dtype, Optional[Partition]], Work]
    estimate: Callable[[ConvGeometry, np.dtype], Tuple[float, Optional[Tuple[int, ...]]]]
    circular_fast: bool = False
    tiled: bool = False
    spatial: bool = False
    strided: bool = False

    def runs_on(self, arrays: Arrays) -> bool:
        """Whether this algorithm's engine runs on ``arrays``' library."""
        return arrays.strided or not self.strided


def batch_chunked(name: str,
                  engine: Callable[[ConvGeometry, np.dtype, Settings, int, Arrays], Engine],
                  work: Callable[[ConvGeometry, np.dtype], Work],
                  workspace_bytes: Callable[[ConvGeometry, np.dtype, int], int],
                  workspace_kind: str, **flags: bool) -> Algorithm:
    """The plugin of an algorithm whose partition is a batch chunk: the most samples
    per pass whose ``workspace_bytes(geom, dtype, chunk)`` fit the budget
    (``workspace_kind`` names that workspace in the error when one sample does
    not), priced by ``work(geom, dtype)``; ``flags`` as :class:`Algorithm`'s."""
    def build(geom: ConvGeometry, dtype: np.dtype, settings: Settings,
              chunk: Partition, arrays: Arrays) -> Engine:
        assert isinstance(chunk, int), chunk
        return engine(geom, dtype, settings, chunk, arrays)

    def partition(func: str, geom: ConvGeometry, dtype: np.dtype, limit: Optional[int],
                  tile: Optional[Tuple[int, ...]]) -> int:
        return budget.largest_chunk(func, geom.batch, limit,
                                    lambda chunk: workspace_bytes(geom, dtype, chunk),
                                    workspace_kind)

    return Algorithm(name, build=build, partition=partition,
                     work=lambda geom, dtype, chunk: work(geom, dtype),
                     estimate=lambda geom, dtype: (costs.seconds(work(geom, dtype)), None),
                     **flags)
