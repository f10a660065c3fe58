"""Timers: best-of-k after a warm-up, and peak memory.

Timing model.  Each competitor runs one untimed warm-up step (it builds FFTW
plans, torch's kernels, caches...; its outputs are the ones checked for
accuracy), then timed steps measured with :func:`time.perf_counter`.  Before
every timed step, untimed, the weights move by ``WEIGHT_STEP`` in place (so no
cache of weight spectra can be reused) and the competitor's ``reset`` runs.
The figure is the best (minimum) of the samples, the usual estimate of the
cost on a machine shared with other work.  Sampling stops after ``repeat``
samples or once they add up to ``budget`` seconds, whichever comes first, but
there is always at least one.  For competitors that build nothing on their
first call (``first_call_counts``), a warm-up that alone reaches the budget
is kept as the only sample, so a step of many seconds is run once, not twice.

The samples of one competitor are taken back to back, right after its
warm-up, never interleaved with another's: the libraries keep thread pools
that spin for a while after each call (OpenMP in torch, OpenBLAS under numpy,
FFTW's threads), and on a machine with few cores alternating between them
makes each step wait for the other pool's spinning threads (100 ms per step
was seen for a 0.3 ms torch step on 2 cores).

Memory.  :func:`peak_memory` runs a callable under :mod:`tracemalloc`, which
sees every numpy allocation (numpy reports its data buffers to it, and
pyFFTW's aligned buffers are numpy arrays), so the peak covers the arrays a
step allocates, plan buffers included when the plan is built inside.
"""
from __future__ import annotations

import dataclasses
import time
import tracemalloc
from typing import Callable, List

WEIGHT_STEP = 1e-3


@dataclasses.dataclass
class Timed:
    """A competitor's prepared step and its samples.

    Attributes
    ----------
    run : callable ``run(w) -> outputs``
        One training step with weights ``w``.
    reset : callable
        Untimed work before each timed step (e.g. refill destroyed buffers).
    w : ndarray
        This competitor's private copy of the weights, moved in place.
    first_call_counts : bool
        The warm-up is a fair sample (nothing is planned or cached on it).
    """

    run: Callable
    reset: Callable[[], None]
    w: object
    first_call_counts: bool = False
    samples: List[float] = dataclasses.field(default_factory=list)
    outputs: object = None

    @property
    def best(self) -> float:
        return min(self.samples)

    def warm_up(self) -> float:
        """The first step; keeps its outputs and returns its seconds."""
        start = time.perf_counter()
        self.outputs = self.run(self.w)
        return time.perf_counter() - start

    def sample(self):
        """Move the weights and reset (untimed), then time one step."""
        self.w += WEIGHT_STEP
        self.reset()
        start = time.perf_counter()
        self.run(self.w)
        self.samples.append(time.perf_counter() - start)


def best_of(timed: Timed, repeat: int, budget: float) -> float:
    """Warm up, then sample until ``repeat`` samples or ``budget`` seconds; best seconds."""
    first = timed.warm_up()
    if timed.first_call_counts and first >= budget:
        timed.samples.append(first)
    while not timed.samples or (len(timed.samples) < repeat and sum(timed.samples) < budget):
        timed.sample()
    return timed.best


def peak_memory(fn: Callable[[], object]) -> int:
    """Peak bytes allocated (and traced) while ``fn()`` runs."""
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        if not was_tracing:
            tracemalloc.stop()
