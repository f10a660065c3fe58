"""The problems: layer shapes, the suites that group them, and their data.

Every case is a "valid" cross-correlation layer with ``groups=1`` and a square
(cubic) kernel unless given otherwise, i.e. what ``torch.nn.functional.conv*d``
computes with ``padding=0`` and what ``scipy.signal.fftconvolve(mode="valid")``
computes per channel pair.

A :class:`Suite` bundles the cases of one run with the competitors to time,
the 2-D kernel sweep that feeds the crossover plot, the per-competitor skip
limits and, for the ``perf`` and ``algorithms`` suites, the targets to check.
The ``decisions`` suite is a sweep of small layers that compares the cost
model's choice of algorithm with the measured fastest (``bench.decisions``).
"""
from __future__ import annotations

import dataclasses
from math import prod
from typing import Dict, NamedTuple, Optional, Tuple

import numpy as np

from .targets import Target, algorithm_targets, perf_targets


@dataclasses.dataclass(frozen=True)
class Case:
    """One convolution layer: ``x (N, C, *size) * w (O, C, *kernel) -> y (N, O, *out)``."""

    batch: int
    in_channels: int
    out_channels: int
    size: Tuple[int, ...]
    kernel: Tuple[int, ...]
    padding: str = "valid"

    @property
    def ndim(self) -> int:
        """Number of spatial axes."""
        return len(self.size)

    @property
    def out_size(self) -> Tuple[int, ...]:
        """Spatial size of ``y``: ``n - k + 1`` per axis ("valid"), ``n`` ("same"),
        ``n + k - 1`` ("full")."""
        extra = {"valid": 0, "same": None, "full": 2}[self.padding]
        return tuple(n if extra is None else n + (extra - 1) * (k - 1)
                     for n, k in zip(self.size, self.kernel))

    @property
    def layer(self) -> dict:
        """The layer keywords of ``fftconv.plan`` beyond the shapes."""
        return {"padding": self.padding}

    @property
    def x_shape(self) -> Tuple[int, ...]:
        return (self.batch, self.in_channels) + self.size

    @property
    def w_shape(self) -> Tuple[int, ...]:
        return (self.out_channels, self.in_channels) + self.kernel

    @property
    def y_shape(self) -> Tuple[int, ...]:
        return (self.batch, self.out_channels) + self.out_size

    @property
    def kernel_size(self) -> int:
        """The largest kernel extent, the "k" that targets and plots refer to."""
        return max(self.kernel)

    @property
    def macs(self) -> int:
        """Multiply-adds of one direct forward pass: ``N C O prod(out) prod(kernel)``."""
        return self.batch * self.in_channels * self.out_channels * prod(self.out_size) * prod(
            self.kernel)

    @property
    def layer_name(self) -> str:
        """The layer without its kernel, e.g. ``"2d N8 16>16 128x128"``."""
        return (f"{self.ndim}d N{self.batch} {self.in_channels}>{self.out_channels} "
                f"{'x'.join(map(str, self.size))}")

    @property
    def name(self) -> str:
        """Short label, e.g. ``"2d N8 16>16 128x128 k15"``."""
        kernel = (str(self.kernel[0]) if len(set(self.kernel)) == 1
                  else "x".join(map(str, self.kernel)))
        padding = "" if self.padding == "valid" else f" {self.padding}"
        return f"{self.layer_name} k{kernel}{padding}"


class CaseData(NamedTuple):
    """The arrays of one case: input, initial weights, bias and output gradient."""

    x: np.ndarray
    w: np.ndarray
    b: np.ndarray
    dy: np.ndarray


def make_data(case: Case, dtype, seed: int = 0) -> CaseData:
    """Standard-normal ``x``, ``b``, ``dy`` and ``w`` scaled by ``1/sqrt(fan_in)``."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)

    def normal(shape, scale=1.0):
        return (rng.standard_normal(shape) * scale).astype(dtype)

    fan_in = case.in_channels * prod(case.kernel)
    return CaseData(x=normal(case.x_shape), w=normal(case.w_shape, fan_in ** -0.5),
                    b=normal((case.out_channels,)), dy=normal(case.y_shape))


def layers(ndim: int, batch: int, channels: int, size: int, kernels, out_channels=None,
           padding: str = "valid"):
    """Cases of one layer shape (cubic input ``size``) for several cubic kernels."""
    out = channels if out_channels is None else out_channels
    return [Case(batch, channels, out, (size,) * ndim, (k,) * ndim, padding) for k in kernels]


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
    mode : {"table", "decisions", "torch"}
        ``"decisions"`` compares the cost model's choices with measurements
        instead of printing the competitors' table; ``"torch"`` times PyTorch
        layers against their converted modules (``bench.torch_suite``).
    repeat, budget : int, float
        Default timed steps per competitor and seconds of sampling
        (``--repeat``, ``--budget``).
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
#: Issue 11: "same" padding, where PyTorch is the rival of mid-sized kernels, and
#: a 64-channel layer of small images.
SAME_CASES = tuple(layers(2, 8, 16, 128, (5, 7, 9, 15, 31), padding="same")
                   + layers(3, 2, 8, 32, (5,), padding="same"))
WIDE_CASE = Case(32, 64, 64, (32, 32), (3, 3), "same")
PERF_ALL = PERF_CASES + SAME_CASES + (WIDE_CASE,)
PERF_TARGETS = perf_targets(
    floor_cases=[c for c in PERF_ALL if (c.ndim == 2 and c.kernel_size in (7, 15, 31))
                 or (c.ndim == 3 and c.kernel_size == 9) or c.ndim == 1],
    torch_bounds=tuple(zip(SAME_CASES[:3], (1.3, 1.0, 0.8))) + ((SAME_CASES[5], 1.0),
                                                               (WIDE_CASE, 1.4)))
#: Large inputs and small kernels, where overlap-add should beat one big FFT.
OVERLAP_CASES = (Case(1, 4, 4, (2 ** 20,), (65,)), Case(1, 1, 1, (2048, 2048), (9, 9)))
#: Where the direct path should win (and, for the first, stay close to PyTorch).
SMALL_KERNEL_CASES = tuple(layers(2, 8, 16, 128, (3,)) + layers(2, 8, 16, 64, (3,))
                           + layers(3, 2, 8, 32, (3,)))


def decision_cases() -> Tuple[Case, ...]:
    """Small, fast layers over input size and kernel size, 1-D to 3-D (55 cases)."""
    one = [c for n in (256, 1024, 4096, 16384, 65536) for c in layers(1, 2, 8, n, (3, 15, 63, 255))]
    two = [c for n, batch in ((16, 8), (32, 8), (64, 4), (128, 4), (256, 2))
           for c in layers(2, batch, 8, n, (1, 3, 7, 15))]
    three = [c for n in (8, 16, 24, 40) for c in layers(3, 1, 4, n, (1, 3, 5, 9))]
    return tuple(c for c in one + two + three if min(c.out_size) >= 1)


# algorithms and decisions compare close algorithms (the FFT path and a one-tile
# overlap-add do nearly the same work), where a best of 5 moved by 30% between
# runs on 2 shared cores: they sample more.
SUITES = {
    "default": Suite(
        "default",
        cases=tuple(layers(2, 8, 16, 128, (3, 7, 15)) + layers(3, 2, 8, 32, (3, 5, 9))
                    + layers(1, 4, 16, 16384, (255,))),
        sweep=SWEEP_DEFAULT, skip_limits=SKIP_DEFAULT),
    "perf": Suite("perf", cases=PERF_ALL, sweep=SWEEP_DEFAULT, skip_limits=SKIP_PERF,
                  targets=PERF_TARGETS),
    "algorithms": Suite(
        "algorithms", cases=unique(PERF_CASES + OVERLAP_CASES + SMALL_KERNEL_CASES),
        sweep=SWEEP_DEFAULT, skip_limits=SKIP_DEFAULT,
        targets=algorithm_targets(OVERLAP_CASES, SMALL_KERNEL_CASES[0]),
        competitors=("fft", "direct", "overlap_add", "auto", "torch"),
        only={"torch": SMALL_KERNEL_CASES[:1]}, repeat=10, budget=2.0),
    "decisions": Suite("decisions", cases=decision_cases(), mode="decisions",
                       competitors=("fft", "direct", "overlap_add"), repeat=15, budget=2.0),
    # nn.Conv*d against the converted module (bench.torch_suite builds its own rows)
    "torch": Suite("torch", cases=PERF_CASES, mode="torch", repeat=5, budget=4.0),
    "quick": Suite(
        "quick",
        cases=tuple(layers(1, 2, 4, 256, (9,)) + layers(2, 2, 4, 32, (5,))
                    + layers(3, 1, 2, 12, (3,))),
        sweep=SWEEP_QUICK, skip_limits=SKIP_DEFAULT),
}


def _ints(text: str, ndim: Optional[int] = None) -> Tuple[int, ...]:
    """``"128x128"`` -> ``(128, 128)``; a single value is repeated ``ndim`` times."""
    values = tuple(int(v) for v in text.lower().split("x"))
    if ndim is not None and len(values) == 1:
        values *= ndim
    return values


def parse_case(spec: str) -> Case:
    """Parse ``"N=8,C=16,O=16,size=128x128,k=15,padding=same"`` (``O`` defaults to
    ``C``, ``padding`` to ``valid``).

    ``k`` is one int (a cubic kernel) or one per axis (``"15x7"``); ``padding`` is
    ``valid``, ``same`` or ``full``.

    Raises
    ------
    ValueError
        On an unknown or missing key, or a kernel larger than the input.
    """
    fields = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        key, sep, value = item.partition("=")
        if not sep or key.strip() not in ("N", "C", "O", "size", "k", "padding"):
            raise ValueError(f"bad case field {item!r} in {spec!r}: expected N=, C=, O=, size=, "
                             f"k=, padding=")
        fields[key.strip()] = value.strip()
    missing = {"N", "C", "size", "k"} - fields.keys()
    if missing:
        raise ValueError(f"case {spec!r} lacks {', '.join(sorted(missing))}")
    size = _ints(fields["size"])
    padding = fields.get("padding", "valid")
    if padding not in ("valid", "same", "full"):
        raise ValueError(f"case {spec!r}: padding must be valid, same or full, got {padding!r}")
    case = Case(int(fields["N"]), int(fields["C"]), int(fields.get("O", fields["C"])), size,
                _ints(fields["k"], len(size)), padding)
    if len(case.kernel) != case.ndim or min(case.out_size) < 1:
        raise ValueError(f"case {spec!r}: kernel {case.kernel} does not fit input {size}")
    return case


def custom_suite(suite: Suite, specs) -> Suite:
    """``suite`` with the ``--case`` layers instead of its own cases."""
    return suite.with_cases(parse_case(s) for s in specs)
