"""Run cases: decide skips, warm up and time each competitor, compare outputs, trace memory."""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional

import numpy as np

from .cases import Case, make_data
from .competitors import COMPETITORS, Outputs
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
    peak_bytes : int or None
        Peak traced memory of one FFT-path step, plan built inside.
    """

    case: Case
    seconds: Dict[str, float] = dataclasses.field(default_factory=dict)
    skipped: Dict[str, float] = dataclasses.field(default_factory=dict)
    errors: Dict[str, Dict[str, float]] = dataclasses.field(default_factory=dict)
    peak_bytes: Optional[int] = None

    def ratio(self, numerator: str, denominator: str) -> Optional[float]:
        """``seconds[numerator] / seconds[denominator]``, None if either is missing."""
        if numerator in self.seconds and denominator in self.seconds:
            return self.seconds[numerator] / self.seconds[denominator]
        return None

    def max_error(self, key: str) -> Optional[float]:
        errors = self.errors.get(key)
        return max(errors.values()) if errors else None


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
    """Prepare, warm up and time one competitor; returns ``(best seconds, outputs)``."""
    prepared = comp.prepare(case, data, options.threads)
    timed = Timed(prepared.run, prepared.reset, data.w.copy(), comp.first_call_counts)
    return best_of(timed, options.repeat, options.budget), timed.outputs


def run_case(case: Case, competitors, options: Options, progress: Progress) -> CaseResult:
    """Measure every competitor on ``case``, one after the other; the first is the reference.

    Competitors whose estimate is above their skip limit are not run.
    """
    result = CaseResult(case)
    data = make_data(case, options.dtype, options.seed)
    outputs = {}
    for comp in competitors:
        estimate = comp.estimate(case)
        if estimate > options.skip_limits.get(comp.key, float("inf")):
            result.skipped[comp.key] = estimate
            progress.advance(f"{case.name} {comp.key} skipped")
            continue
        progress.show(f"{case.name} {comp.key}")
        result.seconds[comp.key], outputs[comp.key] = measure(comp, case, data, options)
        progress.advance(f"{case.name} {comp.key}")
    reference = outputs[competitors[0].key]
    result.errors = {key: compare(out, reference) for key, out in outputs.items()
                     if COMPETITORS[key].checked and key != competitors[0].key}
    if options.memory:
        progress.show(f"{case.name} peak memory")
        result.peak_bytes = peak_memory(
            lambda: competitors[0].prepare(case, data, options.threads).run(data.w))
    return result


def run_cases(cases, competitors, options: Options, title: str) -> List[CaseResult]:
    """:func:`run_case` on each case under one progress bar on stderr."""
    with Progress(len(cases) * len(competitors), title) as progress:
        return [run_case(case, competitors, options, progress) for case in cases]
