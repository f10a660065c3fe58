"""The engine protocol: what every algorithm (FFT, overlap-add, direct, a future
GPU backend) provides, so that plans, pullbacks and layers never ask which
algorithm they hold.

An engine computes one zero-padded correlation geometry
(:class:`~fftconv.geometry.ConvGeometry`) and its two gradients, in the
compute dtype, on arrays already checked.  Every other operation is one of
these with roles exchanged (JAX's ``_conv_general_dilated_transpose_*``): a
transposed layer runs :meth:`Engine.input_grad` forward and
:meth:`Engine.transposed_backward` backward (``fftconv.layer``).

What an engine keeps for a backward pass is a :class:`Saved`, owned by the
caller (a plan or a pullback), never by the engine: any number can be
outstanding, and each stays valid however the engine is used afterwards.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Protocol, Tuple

import numpy as np


class Saved(NamedTuple):
    """What a backward pass needs of one operand, as a forward pass left it.

    ``kind`` is the engine's own word for ``array``: ``"spectrum"`` (the FFT
    engine's frequency-major spectrum), ``"signal"`` (the operand itself) or
    ``"padded"`` (the direct engine's zero-padded input).  ``scale``: the
    operand was saved multiplied by ``2**-scale`` (``fftconv.scaling``; set by
    the layer, never by an engine).
    """

    kind: str
    array: np.ndarray
    scale: int = 0


class Engine(Protocol):
    """One geometry, one compute dtype, one algorithm.

    Attributes: ``geom``, ``chunk`` (samples per pass), ``fft_shape`` (``None``
    when no FFT runs), ``tile`` (overlap-add's output tile, else ``None``),
    ``workspace_bytes``, ``transform_counts`` (``{"forward": n, "inverse":
    n}``) and ``lock`` (held by callers that share the engine between threads).

    ``out=`` arguments take any array of the result's shape (a strided view
    of a channels-last array, say): the result is written there, not copied
    afterwards.
    """

    geom: object
    chunk: int
    fft_shape: Optional[Tuple[int, ...]]
    tile: Optional[Tuple[int, ...]]

    def weights(self, w: np.ndarray):
        """The weight state the passes read (the FFT engines' spectrum ``K``, the
        direct engine's ``w`` itself): never changed afterwards.  ``w`` is a private
        array no one changes (``planner.WeightCache`` passes its copy), so a state
        may keep it."""

    def save_input(self, x: np.ndarray) -> Saved:
        """``x`` as :meth:`backward` reads it, without a forward pass (may share ``x``)."""

    def save_output(self, dy: np.ndarray) -> Saved:
        """``dy`` as :meth:`transposed_backward` reads it (may share ``dy``)."""

    def forward(self, x, weights, keep: bool = False, out=None) -> Tuple[np.ndarray, Optional[Saved]]:
        """``(y, saved x)``: the correlation (no bias); with ``keep``, what
        :meth:`backward` needs of ``x``, independent of the caller's ``x``."""

    def input_grad(self, dy, weights, keep: bool = False, out=None) -> Tuple[np.ndarray, Optional[Saved]]:
        """``(dx, saved dy)``: the input gradient alone; with ``keep``, what
        :meth:`transposed_backward` needs of ``dy``."""

    def backward(self, dy, saved_x: Saved, weights, need_dx: bool = True, need_dw: bool = True,
                 out=None) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
        """``(dx, dw)`` for output gradient ``dy``; either may be skipped (``None``)."""

    def transposed_backward(self, x, saved_dy: Saved, weights, need_y: bool = True,
                            need_dw: bool = True, out=None) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
        """``(y, dw)``: the correlation of ``x`` and the weight gradient of ``x``
        against the saved ``dy``, from one pass over ``x``."""
