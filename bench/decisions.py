"""The cost model's choice of algorithm against measurements (``--suite decisions``).

For each case the runner times fftconv's own algorithms (``fft``, ``direct``,
``overlap_add``) on fresh plans, and :func:`rematch` times near ties again;
:func:`decide` asks fftconv what
``algorithm="auto"`` picks by its cost model (``measure=False``) and collects
the model's estimates and units of work.  :func:`summarise` counts how often
the pick was the measured fastest and what the wrong picks cost, and
:func:`write_csv` writes one row per case for refitting ``fftconv.costs.RATES``:
a step's seconds are modelled as ``sum(units * RATES[unit])``, so the
``<algorithm>_<unit>`` columns against ``<algorithm>_s`` are a linear
least-squares problem.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Tuple

import numpy as np

import fftconv
from fftconv import costs

from .cases import make_data
from .competitors import OWN
from .runner import measure

#: Fraction of cases in which the model should pick the measured fastest.
AGREEMENT_TARGET = 0.9
#: A pick this close to the fastest (time ratio) counts as "close" in the summary.
CLOSE = 1.1
#: Cases whose two fastest algorithms came within this factor are timed again
#: (:func:`rematch`), alternately, this many rounds.
REMATCH = 1.1
REMATCH_ROUNDS = 3


class Decision(NamedTuple):
    """What the cost model says about one case.

    Attributes
    ----------
    algorithm : str
        ``p.algorithm`` of ``fftconv.plan(..., algorithm="auto", measure=False)``.
    tile : tuple of int
        The overlap-add output tile the model prices (its best).
    estimates : dict
        Algorithm -> estimated seconds per step (``fftconv.registry.estimates``).
    work : dict
        Algorithm -> ``{unit: count}`` (``fftconv.costs.*_work``).
    """

    algorithm: str
    tile: Tuple[int, ...]
    estimates: Dict[str, float]
    work: Dict[str, Dict[str, float]]


def decide(case, dtype) -> Decision:
    """The cost model's choice, estimates and units of work for ``case``."""
    dtype = np.dtype(dtype)
    p = fftconv.plan(case.x_shape, case.w_shape, dtype=dtype, algorithm="auto", measure=False,
                     **case.layer)
    geom = p.geometry
    priced = fftconv.registry.estimates(geom, dtype)
    work = {name: fftconv.registry.REGISTRY[name].work(geom, dtype, option)
            for name, (_, option) in priced.items()}
    return Decision(p.algorithm, priced["overlap_add"][1],
                    {name: seconds for name, (seconds, _) in priced.items()}, work)


def decide_all(results, dtype) -> List[Decision]:
    """:func:`decide` for every result, recording the pick as ``result.choice``."""
    decisions = [decide(r.case, dtype) for r in results]
    for result, decision in zip(results, decisions):
        result.choice = decision.algorithm
    return decisions


def rematch(results, competitors, options) -> int:
    """Time the two fastest of fftconv's algorithms again, alternately, on every
    case where they came within :data:`REMATCH` of each other; each keeps its
    best time over all its samples.  One best-of-k per algorithm cannot order
    near ties on a shared machine (the same plan timed twice differs by 10-30%
    here), and the agreement figure should not rest on that noise.  Applied to
    every near tie, whatever the model picked.  Returns how many cases were
    timed again."""
    by_key = {c.key: c for c in competitors}
    retimed = 0
    for result in results:
        ranked = sorted((t, k) for k, t in result.seconds.items()
                        if k in OWN and result.same_as.get(k) not in result.seconds)
        if len(ranked) < 2 or ranked[1][0] > REMATCH * ranked[0][0]:
            continue
        data = make_data(result.case, options.dtype, options.seed)
        for _ in range(REMATCH_ROUNDS):
            for _, key in ranked[:2]:
                seconds = min(measure(by_key[key], result.case, data, options)[0])
                result.seconds[key] = min(result.seconds[key], seconds)
        retimed += 1
    return retimed


class Summary(NamedTuple):
    """Agreement of the model with the measurements over a set of cases."""

    cases: int
    agreed: int
    close: int
    worst: Optional[float]
    worst_result: object

    @property
    def fraction(self) -> float:
        return self.agreed / self.cases if self.cases else 0.0

    @property
    def met(self) -> bool:
        return self.fraction >= AGREEMENT_TARGET


def summarise(results) -> Summary:
    """Cases where the pick was the fastest, within :data:`CLOSE` of it, and the worst."""
    judged = [r for r in results if r.slowdown() is not None]
    worst = max(judged, key=lambda r: r.slowdown(), default=None)
    return Summary(cases=len(judged),
                   agreed=sum(r.choice == r.fastest_own() for r in judged),
                   close=sum(r.slowdown() <= CLOSE for r in judged),
                   worst=worst.slowdown() if worst else None, worst_result=worst)


def _csv_header() -> List[str]:
    return (["case", "ndim", "batch", "in_channels", "out_channels", "size", "kernel", "dtype",
             "threads"] + [f"{a}_s" for a in OWN]
            + ["model", "fastest", "agree", "slowdown", "overlap_add_tile"]
            + [f"est_{a}_s" for a in OWN] + [f"{a}_{u}" for a in OWN for u in sorted(costs.RATES)])


def _joined(values) -> str:
    """``(128, 128)`` -> ``"128x128"``."""
    return "x".join(map(str, values))


def _csv_row(result, decision: Decision, dtype: str, threads: int) -> list:
    c, fastest = result.case, result.fastest_own()
    return ([c.name, c.ndim, c.batch, c.in_channels, c.out_channels, _joined(c.size),
             _joined(c.kernel), dtype, threads] + [result.seconds.get(a, "") for a in OWN]
            + [decision.algorithm, fastest, int(decision.algorithm == fastest),
               result.slowdown(), _joined(decision.tile)]
            + [decision.estimates[a] for a in OWN]
            + [decision.work[a].get(u, 0.0) for a in OWN for u in sorted(costs.RATES)])


def write_csv(path, results, decisions, dtype: str, threads: int) -> Path:
    """One row per case: measured and estimated seconds, the pick, units of work."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(_csv_header())
        writer.writerows(_csv_row(r, d, dtype, threads) for r, d in zip(results, decisions))
    return path
