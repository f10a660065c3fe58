"""Performance targets of the ``perf`` and ``algorithms`` suites and their check.

A target is a bound on the ratio of two competitors' step times (or peak
memory) on the cases it selects (by number of spatial axes and kernel size,
or by listing them).  Unmet targets are reported, never raised: the benchmark
measures, it does not judge the build.
"""
from __future__ import annotations

import dataclasses
from typing import List, Optional, Tuple

from .competitors import BEST


@dataclasses.dataclass(frozen=True)
class Target:
    """``time[numerator] / time[denominator]`` must be ``>= bound`` (or ``<=``).

    Attributes
    ----------
    numerator, denominator : str
        Competitor keys (see :data:`bench.competitors.COMPETITORS`), or
        :data:`~bench.competitors.BEST`, the fastest of fftconv's own algorithms.
    bound : float
    at_least : bool
        True for ``ratio >= bound`` (a speed-up), False for ``ratio <= bound``.
    ndim : int or None
        Only cases with this many spatial axes (None: all).
    min_kernel, max_kernel : int or None
        Only cases whose kernel size lies in this closed range.
    cases : tuple of Case
        Only these cases (empty: no such restriction).
    memory : bool
        Bound the ratio of peak memory instead of time.
    """

    numerator: str
    denominator: str
    bound: float
    at_least: bool = True
    ndim: Optional[int] = None
    min_kernel: Optional[int] = None
    max_kernel: Optional[int] = None
    cases: Tuple = ()
    memory: bool = False

    @property
    def figure(self) -> str:
        """E.g. ``"torch/fft"``, ``"peak MB overlap_add/fft"``."""
        return f"{'peak MB ' if self.memory else ''}{self.numerator}/{self.denominator}"

    @property
    def requirement(self) -> str:
        return f"{'>=' if self.at_least else '<='} {self.bound:g}"

    def applies_to(self, case) -> bool:
        k = case.kernel_size
        return ((self.ndim is None or case.ndim == self.ndim)
                and (self.min_kernel is None or k >= self.min_kernel)
                and (self.max_kernel is None or k <= self.max_kernel)
                and (not self.cases or case in self.cases))

    def value(self, result) -> Optional[float]:
        """The ratio this target bounds, in a :class:`~bench.runner.CaseResult`."""
        ratio = result.memory_ratio if self.memory else result.ratio
        return ratio(self.numerator, self.denominator)

    def met(self, ratio: float) -> bool:
        return ratio >= self.bound if self.at_least else ratio <= self.bound


def _speedup(numerator, bound, ndim, k, and_up=False):
    """``numerator/fft >= bound`` at kernel size ``k`` (and above if ``and_up``)."""
    return Target(numerator, "fft", bound, ndim=ndim, min_kernel=k,
                  max_kernel=None if and_up else k)


SPEEDUP_TARGETS = (
    _speedup("torch", 15, 2, 15),
    _speedup("torch", 40, 2, 31),
    _speedup("torch", 6, 3, 9),
    _speedup("torch", 30, 1, 1023),
    _speedup("scipy", 20, 2, 15, and_up=True),
)


def perf_targets(floor_cases: tuple, torch_bounds: tuple) -> tuple:
    """Targets of the ``perf`` suite (issue 11).

    The FFT path within 1.6x of its transform floor on ``floor_cases``; ``auto``
    over PyTorch at most ``bound`` on each ``(case, bound)`` of ``torch_bounds``;
    ``auto`` within 1.2x of the fastest of fftconv's own algorithms on every case;
    and the speed-ups over PyTorch and the scipy loop of :data:`SPEEDUP_TARGETS`.
    (Overlap-add within 1.15x of the FFT path where it uses a single tile holds
    by construction: a single tile runs the FFT path's engine, which
    ``tests/test_overlap_add.py`` checks; timed, the two differ only by noise.)
    """
    return ((Target("fft", "floor", 1.6, at_least=False, cases=tuple(floor_cases)),)
            + tuple(Target("auto", "torch", bound, at_least=False, cases=(case,))
                    for case, bound in torch_bounds)
            + (Target("auto", BEST, 1.2, at_least=False),)
            + SPEEDUP_TARGETS)


def algorithm_targets(overlap_cases: tuple, direct_case) -> tuple:
    """Targets of the ``algorithms`` suite.

    ``auto`` within 1.2x of the fastest of fftconv's own algorithms on every
    case; on ``overlap_cases`` overlap-add at most half the FFT path's time
    (issue 11) and peak memory; on ``direct_case`` the direct path within 2x of
    PyTorch.
    """
    return (
        Target("auto", BEST, 1.2, at_least=False),
        Target("overlap_add", "fft", 0.5, at_least=False, cases=overlap_cases),
        Target("overlap_add", "fft", 0.5, at_least=False, cases=overlap_cases, memory=True),
        Target("direct", "torch", 2.0, at_least=False, cases=(direct_case,)),
    )


@dataclasses.dataclass(frozen=True)
class TargetCheck:
    """One target on one case: the measured ratio (None if a side was skipped)."""

    target: Target
    case_name: str
    ratio: Optional[float]

    @property
    def verdict(self) -> str:
        if self.ratio is None:
            return "not measured"
        return "yes" if self.target.met(self.ratio) else "NO"


def check_targets(targets, results) -> List[TargetCheck]:
    """Every (target, case result) pair the target applies to, in target order."""
    return [TargetCheck(t, r.case.name, t.value(r))
            for t in targets for r in results if t.applies_to(r.case)]
