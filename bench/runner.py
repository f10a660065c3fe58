"""Run cases: decide skips, warm up and time each competitor, compare outputs, trace memory."""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional

import numpy as np

from .cases import Case, make_data
from .competitors import BEST, COMPETITORS, OWN, Outputs
from .progress import Progress
from .timing import Timed, best_of, peak_memory


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
    """

    case: Case
    seconds: Dict[str, float] = dataclasses.field(default_factory=dict)
    skipped: Dict[str, float] = dataclasses.field(default_factory=dict)
    errors: Dict[str, Dict[str, float]] = dataclasses.field(default_factory=dict)
    medians: Dict[str, float] = dataclasses.field(default_factory=dict)
    peak_bytes: Dict[str, int] = dataclasses.field(default_factory=dict)
    choice: Optional[str] = None
    same_as: Dict[str, str] = dataclasses.field(default_factory=dict)

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
    """Prepare, warm up and time one competitor.

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
    timed = Timed(prepared.run, prepared.reset, data.w.copy(), comp.first_call_counts)
    best_of(timed, options.repeat, options.budget)
    return timed.samples, timed.outputs, prepared


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
    for r in range(options.rounds):
        for comp in running if r % 2 == 0 else running[::-1]:
            progress.show(f"{case.name} {comp.key}")
            taken, outputs[comp.key], prepared = measure(comp, case, data, options)
            samples.setdefault(comp.key, []).extend(taken)
            result.choice = prepared.choice or result.choice
            if prepared.same_as:
                result.same_as[comp.key] = prepared.same_as
            progress.advance(f"{case.name} {comp.key}")
    for key, taken in samples.items():
        result.seconds[key], result.medians[key] = min(taken), float(np.median(taken))
    reference = outputs[competitors[0].key]
    result.errors = {key: compare(out, reference) for key, out in outputs.items()
                     if COMPETITORS[key].checked and key != competitors[0].key}
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
