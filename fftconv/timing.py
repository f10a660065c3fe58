"""The step timer: warm-ups, then timed samples; shared by ``measure=True``,
the PyTorch bridge's ``auto`` and the bench (``python -m bench``).

A warm-up builds what a first call builds (FFTW plans, caches, torch's
kernels), so it is never a sample.  Before each sample an untimed ``prepare``
runs (training moves the weights, so no cached weight spectrum is reused).
The figure to compare is the best (minimum) sample, the usual estimate of the
cost on a machine shared with other work.
"""
from __future__ import annotations

import time
from typing import Callable, List, Optional

#: Weights move by this before every timed training step, as in training, so that
#: no cached weight spectrum is reused (fftconv shares it while ``w`` is unchanged).
WEIGHT_STEP = 1e-3


def samples(step: Callable[[], object], *, repeats: int = 3, warmups: int = 1,
            prepare: Optional[Callable[[], object]] = None, budget: Optional[float] = None,
            min_samples: int = 1, warmup_counts: bool = False) -> List[float]:
    """Seconds of ``repeats`` timed calls of ``step()`` after ``warmups`` warm-up calls.

    ``prepare()`` runs untimed before every call, warm-ups included.  With a
    ``budget`` in seconds, sampling stops early once the samples add up to it,
    but never before ``min_samples`` samples.  ``warmup_counts`` says that the
    step builds nothing on its first call, so a warm-up is a fair sample: one
    that alone reaches ``budget`` is then returned as the only sample, and a
    step of many seconds runs once instead of ``min_samples + 1`` times.
    """
    taken: List[float] = []
    warm = 0
    while len(taken) < max(repeats, min_samples):
        if len(taken) >= min_samples and budget is not None and sum(taken) >= budget:
            break
        if prepare is not None:
            prepare()
        start = time.perf_counter()
        step()
        took = time.perf_counter() - start
        if warm < warmups:
            warm += 1
            if warmup_counts and budget is not None and took >= budget:
                return [took]
        else:
            taken.append(took)
    return taken


def best_of(step: Callable[[], object], repeats: int = 3,
            prepare: Optional[Callable[[], object]] = None) -> float:
    """The fastest of ``repeats`` timed calls of ``step()`` after one warm-up."""
    return min(samples(step, repeats=repeats, prepare=prepare))
