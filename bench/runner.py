"""Run cases: decide skips, time each competitor, compare outputs, trace memory; and the
cost model's choice of algorithm against those measurements (``--suite decisions``).

For ``--suite decisions`` the runner times fftconv's own algorithms (``fft``,
``direct``, ``overlap_add``) on fresh plans, and :func:`rematch` times near
ties again; :func:`decide` asks fftconv what ``algorithm="auto"`` picks by its
cost model (``measure=False``) and collects the model's estimates and units of
work.  :func:`summarise` counts how often the pick was the measured fastest and
what the wrong picks cost, and :func:`write_csv` writes one row per case for
refitting ``fftconv.costs.RATES``: a step's seconds are modelled as
``sum(units * RATES[unit])``, so the ``<algorithm>_<unit>`` columns against
``<algorithm>_s`` are a linear least-squares problem.
"""
from __future__ import annotations

import csv
import dataclasses
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Tuple

import numpy as np

import fftconv
from fftconv import costs
from fftconv.protocol import Tiling

from .cases import Case, make_data
from .competitors import BEST, COMPETITORS, OWN, Outputs
from .timing import Progress, alternating, peak_memory, spread_out, time_step


@dataclasses.dataclass(frozen=True)
class Options:
    """How to measure: dtype, threads, samples, time budget, skips, memory."""

    dtype: str = "float32"
    threads: int = 1
    repeat: int = 5
    budget: float = 1.0
    skip_limits: Dict[str, float] = dataclasses.field(default_factory=dict)
    memory: bool = True
    seed: int = 0
    rounds: int = 1


@dataclasses.dataclass
class CaseResult:
    """Measurements of one case.

    Attributes
    ----------
    case : Case
    seconds : dict
        Competitor key -> best seconds per step.
    skipped : dict
        Competitor key -> estimated seconds per step, for those not run.
    errors : dict
        Competitor key -> ``{"y": e, "dx": e, "dw": e}``, the max abs difference
        to the FFT path divided by the largest magnitude of the FFT result.
    medians : dict
        Competitor key -> median seconds per step over the same samples (the
        spread beside ``seconds``, the best).
    peak_bytes : dict
        Competitor key -> peak traced bytes of one step, plan built inside
        (the competitors with ``traced`` set).
    choice : str or None
        The algorithm ``algorithm="auto"`` chose for this case.
    same_as : dict
        Competitor key -> the key whose computation it ran (see
        :class:`~bench.competitors.Prepared`).
    failed : dict
        Competitor key -> the error its ``prepare`` or step raised (e.g. a plan
        that does not fit ``max_workspace_bytes``): reported, not fatal.
    spread : dict
        Competitor key -> its slowest sample over its best, for the
        competitors whose samples spread out (:func:`bench.timing.spread_out`):
        the table marks them.
    """

    case: Case
    seconds: Dict[str, float] = dataclasses.field(default_factory=dict)
    skipped: Dict[str, float] = dataclasses.field(default_factory=dict)
    errors: Dict[str, Dict[str, float]] = dataclasses.field(default_factory=dict)
    medians: Dict[str, float] = dataclasses.field(default_factory=dict)
    peak_bytes: Dict[str, int] = dataclasses.field(default_factory=dict)
    choice: Optional[str] = None
    same_as: Dict[str, str] = dataclasses.field(default_factory=dict)
    spread: Dict[str, float] = dataclasses.field(default_factory=dict)
    failed: Dict[str, str] = dataclasses.field(default_factory=dict)

    def fastest_own(self) -> Optional[str]:
        """The fastest of fftconv's own algorithms measured here (None if none was);
        one that ran another's computation (``same_as``, e.g. a single overlap-add
        tile, which is the FFT path) is not a candidate of its own."""
        measured = [k for k in OWN if k in self.seconds
                    and self.same_as.get(k) not in self.seconds]
        return min(measured, key=self.seconds.__getitem__) if measured else None

    def time(self, key: str) -> Optional[float]:
        """Best seconds of competitor ``key``; ``BEST``: of :meth:`fastest_own`."""
        if key == BEST:
            key = self.fastest_own()
        return self.seconds.get(key)

    def ratio(self, numerator: str, denominator: str) -> Optional[float]:
        """``time(numerator) / time(denominator)``, None if either is missing."""
        return _ratio(self.time(numerator), self.time(denominator))

    def memory_ratio(self, numerator: str, denominator: str) -> Optional[float]:
        """``peak_bytes[numerator] / peak_bytes[denominator]``, None if either is missing."""
        return _ratio(self.peak_bytes.get(numerator), self.peak_bytes.get(denominator))

    def slowdown(self) -> Optional[float]:
        """Time of the chosen algorithm over the fastest one's (1 when it chose the fastest)."""
        return None if self.choice is None else self.ratio(self.choice, BEST)

    def max_error(self, key: str) -> Optional[float]:
        errors = self.errors.get(key)
        return max(errors.values()) if errors else None


def _ratio(a, b) -> Optional[float]:
    return a / b if a is not None and b else None


def relative_error(a: np.ndarray, ref: np.ndarray) -> float:
    """``max|a - ref| / max|ref|`` (in float64)."""
    ref = np.asarray(ref, np.float64)
    scale = np.max(np.abs(ref)) if ref.size else 0.0
    diff = np.max(np.abs(np.asarray(a, np.float64) - ref)) if ref.size else 0.0
    return float(diff / scale) if scale > 0 else float(diff)


def compare(outputs: Outputs, reference: Outputs) -> Dict[str, float]:
    return {name: relative_error(a, r) for name, a, r in
            zip(Outputs._fields, outputs, reference)}


def measure(comp, case: Case, data, options: Options):
    """Prepare one competitor and time it (``bench.timing.time_step``).

    Returns
    -------
    samples : list of float
        Seconds of each timed step.
    outputs : Outputs
        Those of the warm-up step.
    prepared : Prepared
        The prepared step (``choice``: the algorithm an ``"auto"`` plan chose;
        ``same_as``).
    """
    prepared = comp.prepare(case, data, options.threads)
    taken, outputs = time_step(prepared.run, data.w.copy(), options.repeat, options.budget,
                               reset=prepared.reset, first_call_counts=comp.first_call_counts)
    return taken, outputs, prepared


def run_case(case: Case, competitors, options: Options, progress: Progress) -> CaseResult:
    """Measure every competitor on ``case``, one after the other; the first is the reference.

    With ``options.rounds`` > 1 the competitors are measured that many times,
    in alternating order (forward, backward, ...), so that a slow spell of a
    shared machine does not fall on one competitor only; each keeps its best
    step and the median of all its samples.  Competitors whose estimate is
    above their skip limit are not run.  The ``auto`` competitor's pick becomes
    ``choice``; with ``options.memory`` the ``traced`` competitors that ran get
    a tracemalloc run.
    """
    result = CaseResult(case)
    data = make_data(case, options.dtype, options.seed)
    outputs, samples = {}, {}
    for comp in competitors:
        estimate = comp.estimate(case)
        if estimate == float("inf") or estimate > options.skip_limits.get(comp.key, estimate):
            result.skipped[comp.key] = estimate
            progress.advance(f"{case.name} {comp.key} skipped", options.rounds)
    running = [c for c in competitors if c.key not in result.skipped]
    by_key = {c.key: c for c in running}
    for _, key in alternating(by_key, options.rounds):
        comp = by_key[key]
        progress.show(f"{case.name} {comp.key}")
        if key in result.failed:
            progress.advance(f"{case.name} {comp.key} failed")
            continue
        try:
            taken, outputs[comp.key], prepared = measure(comp, case, data, options)
        except (MemoryError, ValueError) as exc:   # e.g. no plan fits max_workspace_bytes
            result.failed[key] = f"{type(exc).__name__}: {exc}"
            progress.advance(f"{case.name} {comp.key} failed")
            continue
        samples.setdefault(comp.key, []).extend(taken)
        result.choice = prepared.choice or result.choice
        if prepared.same_as:
            result.same_as[comp.key] = prepared.same_as
        progress.advance(f"{case.name} {comp.key}")
    for key, taken in samples.items():
        result.seconds[key], result.medians[key] = min(taken), float(np.median(taken))
        if spread_out(taken):
            result.spread[key] = max(taken) / min(taken)
    first = next((c.key for c in competitors if c.key in outputs), None)
    reference = outputs.get(first)
    result.errors = {key: compare(out, reference) for key, out in outputs.items()
                     if COMPETITORS[key].checked and key != first}
    if options.memory:
        for comp in (c for c in competitors if c.traced and c.key in result.seconds):
            progress.show(f"{case.name} {comp.key} peak memory")
            result.peak_bytes[comp.key] = peak_memory(
                lambda: comp.prepare(case, data, options.threads).run(data.w))
    return result


def run_cases(cases, competitors, options: Options, title: str,
              only: Optional[Dict[str, tuple]] = None) -> List[CaseResult]:
    """:func:`run_case` on each case under one progress bar on stderr.

    ``only`` maps a competitor key to the cases it is restricted to (it is not
    run, nor listed as skipped, on the others).
    """
    only = only or {}

    def runs_on(comp, case) -> bool:
        return comp.key not in only or case in only[comp.key]

    plans = [(case, [c for c in competitors if runs_on(c, case)]) for case in cases]
    with Progress(sum(len(comps) for _, comps in plans) * options.rounds, title) as progress:
        return [run_case(case, comps, options, progress) for case, comps in plans]


# -- the cost model's decisions ----------------------------------------------------------------
#: Fraction of cases in which the model should pick the measured fastest.
AGREEMENT_TARGET = 0.9
#: A pick this close to the fastest (time ratio) counts as "close" in the summary.
CLOSE = 1.1
#: auto's pick must run within this factor of the measured fastest on every case (issue 20).
SLOWDOWN_TARGET = 1.2
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


def partition_of(tile: Optional[Tuple[int, ...]]) -> Optional[Tiling]:
    """The partition an algorithm's ``work`` takes for the tile the cost model prices
    (overlap-add's, at its default tiles per pass), ``None`` for an algorithm without one."""
    return None if tile is None else Tiling(tuple(tile), 0)


def decide(case, dtype) -> Decision:
    """The cost model's choice, estimates and units of work for ``case``."""
    dtype = np.dtype(dtype)
    p = fftconv.plan(case.x_shape, case.w_shape, dtype=dtype, algorithm="auto", measure=False,
                     **case.layer)
    geom = p.geometry
    priced = fftconv.registry.estimates(geom, dtype)
    work = {name: fftconv.registry.REGISTRY[name].work(geom, dtype, partition_of(option))
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
        for _, key in alternating([key for _, key in ranked[:2]], REMATCH_ROUNDS):
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
