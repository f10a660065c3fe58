"""Performance targets of the ``perf`` suite and their check.

A target is a bound on the ratio of two competitors' step times on the cases
it selects (by number of spatial axes and kernel size).  Unmet targets are
reported, never raised: the benchmark measures, it does not judge the build.
"""
from __future__ import annotations

import dataclasses
from typing import List, Optional


@dataclasses.dataclass(frozen=True)
class Target:
    """``time[numerator] / time[denominator]`` must be ``>= bound`` (or ``<=``).

    Attributes
    ----------
    numerator, denominator : str
        Competitor keys (see :data:`bench.competitors.COMPETITORS`).
    bound : float
    at_least : bool
        True for ``ratio >= bound`` (a speed-up), False for ``ratio <= bound``.
    ndim : int or None
        Only cases with this many spatial axes (None: all).
    min_kernel, max_kernel : int or None
        Only cases whose kernel size lies in this closed range.
    """

    numerator: str
    denominator: str
    bound: float
    at_least: bool = True
    ndim: Optional[int] = None
    min_kernel: Optional[int] = None
    max_kernel: Optional[int] = None

    @property
    def figure(self) -> str:
        """E.g. ``"torch/fft"``."""
        return f"{self.numerator}/{self.denominator}"

    @property
    def requirement(self) -> str:
        return f"{'>=' if self.at_least else '<='} {self.bound:g}"

    def applies_to(self, case) -> bool:
        k = case.kernel_size
        return ((self.ndim is None or case.ndim == self.ndim)
                and (self.min_kernel is None or k >= self.min_kernel)
                and (self.max_kernel is None or k <= self.max_kernel))

    def met(self, ratio: float) -> bool:
        return ratio >= self.bound if self.at_least else ratio <= self.bound


def _speedup(numerator, bound, ndim, k, and_up=False):
    """``numerator/fft >= bound`` at kernel size ``k`` (and above if ``and_up``)."""
    return Target(numerator, "fft", bound, ndim=ndim, min_kernel=k,
                  max_kernel=None if and_up else k)


PERF_TARGETS = (
    Target("fft", "floor", 1.5, at_least=False, min_kernel=7),
    _speedup("torch", 15, 2, 15),
    _speedup("torch", 40, 2, 31),
    _speedup("torch", 6, 3, 9),
    _speedup("torch", 30, 1, 1023),
    _speedup("scipy", 20, 2, 15, and_up=True),
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
    return [TargetCheck(t, r.case.name, r.ratio(t.numerator, t.denominator))
            for t in targets for r in results if t.applies_to(r.case)]
