"""The suites (``--suite NAME``) and their performance targets.

A :class:`Suite` bundles the cases of one run with the competitors to time,
the 2-D kernel sweep that feeds the crossover plot, the per-competitor skip
limits and, for the ``perf`` and ``algorithms`` suites, the targets to check.
The ``decisions`` suite is a sweep of small layers that compares the cost
model's choice of algorithm with the measured fastest (``bench.runner``).

A target is a bound on the ratio of two competitors' step times (or peak
memory) on the cases it selects (by number of spatial axes and kernel size,
or by listing them).  Unmet targets are reported, never raised: the benchmark
measures, it does not judge the build.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Tuple

from .cases import Case, layers, parse_case
from .competitors import BEST, OWN


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


#: The large-kernel guard: never slower than before issue 20 (torch/fft was 38x
#: at 2-D 128x128 k31 and 42x at 1-D k1023 then), and the older speed-ups.
SPEEDUP_TARGETS = (
    _speedup("torch", 15, 2, 15),
    _speedup("torch", 38, 2, 31),
    _speedup("torch", 6, 3, 9),
    _speedup("torch", 42, 1, 1023),
    _speedup("scipy", 20, 2, 15, and_up=True),
)


def perf_targets(floor_cases: tuple, torch_bounds: tuple) -> tuple:
    """Targets of the ``perf`` suite (issue 20).

    The FFT path within 1.5x of its transform floor on ``floor_cases``; ``auto``
    over PyTorch at most ``bound`` on each ``(case, bound)`` of ``torch_bounds``;
    ``auto`` within 1.2x of the fastest of fftconv's own algorithms on every case;
    and the speed-ups over PyTorch and the scipy loop of :data:`SPEEDUP_TARGETS`.
    (Overlap-add within 1.15x of the FFT path where it uses a single tile holds
    by construction: a single tile runs the FFT path's engine, which
    ``tests/test_overlap_add.py`` checks; timed, the two differ only by noise.)
    """
    return ((Target("fft", "floor", 1.5, at_least=False, cases=tuple(floor_cases)),)
            + tuple(Target("auto", "torch", bound, at_least=False, cases=(case,))
                    for case, bound in torch_bounds)
            + (Target("auto", BEST, 1.2, at_least=False),)
            + SPEEDUP_TARGETS)


def algorithm_targets(overlap_cases: tuple, direct_case) -> tuple:
    """Targets of the ``algorithms`` suite.

    ``auto`` within 1.2x of the fastest of fftconv's own algorithms on every
    case; on ``overlap_cases`` overlap-add at most half the FFT path's time
    and peak memory; on ``direct_case`` the direct path within 2x of
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
    #: Why a side of the ratio has no time: the error its plan or step raised.
    error: Optional[str] = None

    @property
    def verdict(self) -> str:
        if self.error:
            return f"NO: {self.error}"
        if self.ratio is None:
            return "not measured"
        return "yes" if self.target.met(self.ratio) else "NO"


def check_targets(targets, results) -> List[TargetCheck]:
    """Every (target, case result) pair the target applies to, in target order."""
    def error(t, r) -> Optional[str]:
        failed = getattr(r, "failed", {})
        keys = [k for k in (t.numerator, t.denominator) if k in failed]
        return "; ".join(f"{k} failed: {failed[k]}" for k in keys) or None
    return [TargetCheck(t, r.case.name, t.value(r), error(t, r))
            for t in targets for r in results if t.applies_to(r.case)]


@dataclasses.dataclass(frozen=True)
class Suite:
    """What one run measures.

    Attributes
    ----------
    name : str
    cases : tuple of Case
        The table rows.
    sweep : tuple of Case
        2-D cases of growing kernel for the crossover plot (may be empty).
    skip_limits : dict
        Competitor key -> estimated seconds per step above which it is skipped
        (competitors not listed are never skipped).
    targets : tuple of Target
        Figures to check and report (empty outside the perf and algorithms suites).
    competitors : tuple of str or None
        Keys of the competitors of the table, in order, the FFT path first
        (None: all of them).
    only : dict
        Competitor key -> the only cases it runs on (others: every case).
    mode : {"table", "decisions", "torch", "gpu"}
        ``"decisions"`` compares the cost model's choices with measurements
        instead of printing the competitors' table; ``"torch"`` times PyTorch
        layers against their converted modules (``bench.compare``); ``"gpu"``
        times training steps on a CUDA device against cuDNN (``bench.gpu``).
    repeat, budget : int, float
        Default timed steps per competitor and seconds of sampling
        (``--repeat``, ``--budget``).
    rounds : int
        Default times every competitor of a case is measured, in alternating
        order, the best kept (``--rounds``).
    """

    name: str
    cases: Tuple[Case, ...]
    sweep: Tuple[Case, ...] = ()
    skip_limits: Dict[str, float] = dataclasses.field(default_factory=dict)
    targets: Tuple[Target, ...] = ()
    competitors: Optional[Tuple[str, ...]] = None
    only: Dict[str, Tuple[Case, ...]] = dataclasses.field(default_factory=dict)
    mode: str = "table"
    repeat: int = 5
    budget: float = 1.0
    rounds: int = 1

    def restricted(self, dims=None, full: bool = False) -> "Suite":
        """This suite keeping only cases with ``ndim in dims``; no skip limits if ``full``."""
        keep = (lambda c: True) if dims is None else (lambda c: c.ndim in dims)
        return dataclasses.replace(
            self, cases=tuple(filter(keep, self.cases)), sweep=tuple(filter(keep, self.sweep)),
            skip_limits={} if full else dict(self.skip_limits))

    def with_cases(self, cases) -> "Suite":
        """This suite with ``cases`` instead of its own (``--case``)."""
        return dataclasses.replace(self, name=f"{self.name} (custom cases)", cases=tuple(cases))


def unique(cases) -> Tuple[Case, ...]:
    """``cases`` without repeats, in first-seen order."""
    return tuple(dict.fromkeys(cases))


SKIP_DEFAULT = {"direct": 20.0, "torch": 20.0, "scipy": 20.0}
SKIP_PERF = {"direct": 60.0, "scipy": 60.0}  # torch is the comparison: never skipped

SWEEP_DEFAULT = tuple(layers(2, 4, 8, 64, (1, 3, 5, 7, 9, 11)))
SWEEP_QUICK = tuple(layers(2, 2, 4, 24, (1, 3, 5, 7)))

PERF_CASES = tuple(layers(2, 8, 16, 128, (3, 7, 15, 31)) + layers(3, 2, 8, 40, (3, 5, 9))
                   + layers(1, 4, 16, 16384, (1023,)))
#: "same" padding, where PyTorch is the rival of mid-sized kernels, and
#: a 64-channel layer of small images.
SAME_CASES = tuple(layers(2, 8, 16, 128, (5, 7, 9, 15, 31), padding="same")
                   + layers(3, 2, 8, 32, (5,), padding="same"))
WIDE_CASE = Case(32, 64, 64, (32, 32), (3, 3), "same")
#: The mid band and the small layers of issue 20, where PyTorch's CPU
#: convolution (oneDNN) is the rival: 2-D 80x80 k7 at 24 channels, 3-D 24^3
#: k7 and k3 at 16 channels, 2-D 48x48 k3 and 1-D 1024 k5.
MID_CASES = (Case(4, 24, 24, (80, 80), (7, 7), "same"),
             Case(4, 16, 16, (24,) * 3, (7,) * 3, "same"))
SMALL_CASES = (Case(8, 32, 32, (1024,), (5,), "same"),
               Case(16, 8, 8, (48, 48), (3, 3), "same"),
               Case(4, 16, 16, (24,) * 3, (3,) * 3, "same"))
PERF_ALL = PERF_CASES + SAME_CASES + (WIDE_CASE,) + MID_CASES + SMALL_CASES
#: auto/PyTorch bounds: <= 1.0 on 2-D "same" k5-k9 at 16 channels, the mid band
#: and 3-D k7; <= 1.2 at k3 with 64 channels and on the small layers.
TORCH_BOUNDS = (tuple((case, 1.0) for case in SAME_CASES[:3] + MID_CASES)
                + tuple((case, 1.2) for case in (WIDE_CASE,) + SMALL_CASES))
PERF_TARGETS = perf_targets(
    floor_cases=PERF_ALL, torch_bounds=TORCH_BOUNDS)
#: Long convolutions of sequence models (issue 21): depthwise, causal, a true
#: convolution with a kernel as long as the sequence, (B, H, L) = (4, 64, 8192),
#: (2, 256, 16384) and (1, 32, 2**20), the last under a 256 MiB workspace budget;
#: timed against the ``torch.fft`` reference (``torchfft``).
LONG_CASES = tuple(
    Case(b, h, h, (n,), (n,), "causal", (("flip_kernel", True), ("groups", h)),
         max_workspace_bytes=budget)
    for b, h, n, budget in ((4, 64, 8192, None), (2, 256, 16384, None),
                            (1, 32, 2 ** 20, 256 << 20)))
#: fftconv (``auto``, the default) at least 1.5x faster than the ``torch.fft`` reference.
LONG_TARGETS = (Target("torchfft", "auto", 1.5, cases=LONG_CASES),)
#: The perf suite's competitors: every default one, and the reference of the long rows.
PERF_COMPETITORS = ("fft", "floor", "direct", "overlap_add", "auto", "torch", "scipy",
                    "torchfft")
#: Large inputs and small kernels, where overlap-add should beat one big FFT.
OVERLAP_CASES = (Case(1, 4, 4, (2 ** 20,), (65,)), Case(1, 1, 1, (2048, 2048), (9, 9)))
#: Where the direct path should win (and, for the first, stay close to PyTorch).
SMALL_KERNEL_CASES = tuple(layers(2, 8, 16, 128, (3,)) + layers(2, 8, 16, 64, (3,))
                           + layers(3, 2, 8, 32, (3,)))


# -- the GPU suite (issue 19): training steps on a CUDA device, against cuDNN -------------------
#: Long kernels, where fftconv should beat cuDNN's best algorithm by far (float32).
GPU_CONV_CASES = tuple(layers(1, 4, 32, 16384, (255, 1023)) + layers(2, 8, 32, 128, (15, 31))
                       + layers(3, 2, 16, 40, (9, 15)))
#: Small and mid kernels, where cuDNN wins: ``auto`` must then run cuDNN (never slower).
GPU_SMALL_CASES = (WIDE_CASE, Case(8, 64, 64, (56, 56), (3, 3), "same"),
                   Case(8, 64, 64, (4096,), (9,), "same"),
                   Case(8, 16, 16, (128, 128), (7, 7), "same"))
#: Hyena/H3 long convolutions: depthwise, causal, a true convolution with a kernel as
#: long as the sequence, (B, H, L) = (4, 768, 8192) and (2, 768, 65536); timed
#: against the ``torch.fft`` reference ``irfft(rfft(u, n=2L) * rfft(k, n=2L))[..., :L]``.
GPU_LONG_CASES = tuple(Case(b, h, h, (n,), (n,), "causal", (("flip_kernel", True), ("groups", h)))
                       for b, h, n in ((4, 768, 8192), (2, 768, 65536)))
GPU_CASES = GPU_CONV_CASES + GPU_SMALL_CASES + GPU_LONG_CASES
#: ``--suite gpu --quick``: one row of each kind, for a first look on a rented GPU.
GPU_QUICK_CASES = (GPU_CONV_CASES[0], GPU_CONV_CASES[2], GPU_CONV_CASES[4], GPU_SMALL_CASES[0],
                   GPU_LONG_CASES[0])


def gpu_targets(conv: tuple, small: tuple, long: tuple) -> tuple:
    """Targets of the ``gpu`` suite (float32, on one GPU), each with TF32 off and on
    (keys ``*_tf32`` for the latter: cuDNN's convolutions and the matmuls may use
    TF32).  ``fft`` and ``auto`` are ``fftconv.torch.conv`` on CUDA tensors,
    ``cudnn`` PyTorch's convolution with ``torch.backends.cudnn.benchmark=True``
    (its best algorithm), ``floor`` the six batched cuFFT transforms of the step.

    * 1-D k >= 255 and 3-D k >= 9: fftconv at least 5x faster than cuDNN;
    * 2-D k >= 15: at least 1.5x faster;
    * ``auto`` (the bridge, with cuDNN among its candidates) never slower than
      ``nn.Conv``: at most 1.1x cuDNN's time on every conv row;
    * the long depthwise causal convolutions at least as fast as the ``torch.fft``
      reference;
    * a step at most 1.5x its cuFFT transform floor (long-kernel and long rows).
    """
    out = []
    for tf32 in ("", "_tf32"):
        cudnn, fft, auto = "cudnn" + tf32, "fft" + tf32, "auto" + tf32
        out += [Target(cudnn, fft, 5.0, ndim=1, min_kernel=255, cases=conv),
                Target(cudnn, fft, 1.5, ndim=2, min_kernel=15, cases=conv),
                Target(cudnn, fft, 5.0, ndim=3, min_kernel=9, cases=conv),
                Target(auto, cudnn, 1.1, at_least=False, cases=conv + small)]
    out += [Target("torchfft", "fft", 1.0, cases=long),
            Target("fft", "floor", 1.5, at_least=False, cases=conv + long)]
    return tuple(out)


GPU_TARGETS = gpu_targets(GPU_CONV_CASES, GPU_SMALL_CASES, GPU_LONG_CASES)


#: Layers where the cost model once missed its own best (issue 20: 3.4x and 1.6x).
MISPICK_CASES = (Case(2, 8, 8, (200, 200), (25, 25)), Case(16, 8, 8, (48, 48), (3, 3)))


def decision_cases() -> Tuple[Case, ...]:
    """Small, fast layers over input size and kernel size, 1-D to 3-D, the
    layers the model once mispicked, and the mid band and small layers of the
    perf suite (66 cases)."""
    one = [c for n in (256, 1024, 4096, 16384, 65536) for c in layers(1, 2, 8, n, (3, 15, 63, 255))]
    two = [c for n, batch in ((16, 8), (32, 8), (64, 4), (128, 4), (256, 2))
           for c in layers(2, batch, 8, n, (1, 3, 7, 15))]
    three = [c for n in (8, 16, 24, 40) for c in layers(3, 1, 4, n, (1, 3, 5, 9))]
    issue = MISPICK_CASES + SAME_CASES[:3] + (WIDE_CASE,) + MID_CASES + SMALL_CASES
    return unique(c for c in one + two + three + list(issue) if min(c.out_size) >= 1)


# algorithms and decisions compare close algorithms (the FFT path and overlap-add
# with a few tiles do nearly the same work), where a best of 5 moved by 30% between
# runs on 2 shared cores: they sample more.
SUITES = {
    "default": Suite(
        "default",
        cases=tuple(layers(2, 8, 16, 128, (3, 7, 15)) + layers(3, 2, 8, 32, (3, 5, 9))
                    + layers(1, 4, 16, 16384, (255,))),
        sweep=SWEEP_DEFAULT, skip_limits=SKIP_DEFAULT),
    "perf": Suite("perf", cases=PERF_ALL + LONG_CASES, sweep=SWEEP_DEFAULT,
                  skip_limits=SKIP_PERF, targets=PERF_TARGETS + LONG_TARGETS,
                  competitors=PERF_COMPETITORS, rounds=3,
                  # the direct path and the sweep's layers are no rivals at kernels of
                  # 8192 and more (a direct step of the second long row is ~40 s)
                  only={"torchfft": LONG_CASES, "direct": PERF_ALL}),
    "algorithms": Suite(
        "algorithms", cases=unique(PERF_CASES + OVERLAP_CASES + SMALL_KERNEL_CASES),
        sweep=SWEEP_DEFAULT, skip_limits=SKIP_DEFAULT,
        targets=algorithm_targets(OVERLAP_CASES, SMALL_KERNEL_CASES[0]),
        competitors=("fft", "direct", "overlap_add", "auto", "torch"),
        only={"torch": SMALL_KERNEL_CASES[:1]}, repeat=10, budget=2.0),
    "decisions": Suite("decisions", cases=decision_cases(), mode="decisions",
                       competitors=OWN, repeat=15, budget=2.0),
    # nn.Conv*d against the converted module (bench.compare builds its own rows)
    "torch": Suite("torch", cases=PERF_CASES, mode="torch", repeat=5, budget=4.0),
    # training steps on a CUDA device (bench.gpu builds its own rows; --quick: fewer)
    "gpu": Suite("gpu", cases=GPU_CASES, targets=GPU_TARGETS, mode="gpu", repeat=5, budget=2.0),
    "quick": Suite(
        "quick",
        cases=tuple(layers(1, 2, 4, 256, (9,)) + layers(2, 2, 4, 32, (5,))
                    + layers(3, 1, 2, 12, (3,))),
        sweep=SWEEP_QUICK, skip_limits=SKIP_DEFAULT),
}


def custom_suite(suite: Suite, specs) -> Suite:
    """``suite`` with the ``--case`` layers instead of its own cases."""
    return suite.with_cases(parse_case(s) for s in specs)
