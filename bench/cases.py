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


#: Layer keywords a case may set beyond the shapes and ``padding`` (``--case``).
LAYER_KEYS = ("stride", "dilation", "groups", "padding_mode", "transposed", "layout")


@dataclasses.dataclass(frozen=True)
class Case:
    """One convolution layer: ``x (N, C, *size) * w (O, C, *kernel) -> y (N, O, *out)``.

    ``padding`` is ``"valid"``, ``"same"``, ``"full"`` or an int; ``options`` holds
    the other layer keywords of ``fftconv.plan`` as sorted ``(name, value)`` pairs
    (:data:`LAYER_KEYS`); ``dtype`` overrides ``--dtype`` for this case.
    """

    batch: int
    in_channels: int
    out_channels: int
    size: Tuple[int, ...]
    kernel: Tuple[int, ...]
    padding: object = "valid"
    options: Tuple[Tuple[str, object], ...] = ()
    dtype: Optional[str] = None

    @property
    def ndim(self) -> int:
        """Number of spatial axes."""
        return len(self.size)

    @property
    def plain(self) -> bool:
        """No layer keyword beyond a string ``padding`` (sizes follow by formula)."""
        return not self.options and isinstance(self.padding, str)

    @property
    def opts(self) -> dict:
        return dict(self.options)

    @property
    def channels_last(self) -> bool:
        return self.opts.get("layout") == "channels_last"

    @property
    def out_size(self) -> Tuple[int, ...]:
        """Spatial size of ``y``: ``n - k + 1`` per axis ("valid"), ``n`` ("same"),
        ``n + k - 1`` ("full"); fftconv's own sizes for other layers."""
        if not self.plain:
            shape = _out_shape(self)
            return shape[1:-1] if self.channels_last else shape[2:]
        extra = {"valid": 0, "same": None, "full": 2}[self.padding]
        return tuple(n if extra is None else n + (extra - 1) * (k - 1)
                     for n, k in zip(self.size, self.kernel))

    @property
    def layer(self) -> dict:
        """The layer keywords of ``fftconv.plan`` beyond the shapes."""
        return {"padding": self.padding, **self.opts}

    def _arrange(self, batch: int, channels: int, spatial) -> Tuple[int, ...]:
        spatial = tuple(spatial)
        return ((batch,) + spatial + (channels,) if self.channels_last
                else (batch, channels) + spatial)

    @property
    def x_shape(self) -> Tuple[int, ...]:
        return self._arrange(self.batch, self.in_channels, self.size)

    @property
    def w_shape(self) -> Tuple[int, ...]:
        groups, transposed = self.opts.get("groups", 1), self.opts.get("transposed", False)
        rows, cols = ((self.in_channels, self.out_channels // groups) if transposed
                      else (self.out_channels, self.in_channels // groups))
        if self.channels_last:
            return self.kernel + (cols, rows)
        return (rows, cols) + self.kernel

    @property
    def y_shape(self) -> Tuple[int, ...]:
        return self._arrange(self.batch, self.out_channels, self.out_size)

    @property
    def kernel_size(self) -> int:
        """The largest kernel extent, the "k" that targets and plots refer to."""
        return max(self.kernel)

    @property
    def macs(self) -> int:
        """Multiply-adds of one direct forward pass: ``N C O prod(out) prod(kernel) / groups``
        (of the larger side, for a transposed layer)."""
        spatial = max(prod(self.out_size), prod(self.size))
        return (self.batch * self.in_channels * self.out_channels * spatial * prod(self.kernel)
                // self.opts.get("groups", 1))

    @property
    def layer_name(self) -> str:
        """The layer without its kernel, e.g. ``"2d N8 16>16 128x128"``."""
        return (f"{self.ndim}d N{self.batch} {self.in_channels}>{self.out_channels} "
                f"{'x'.join(map(str, self.size))}")

    @property
    def name(self) -> str:
        """Short label, e.g. ``"2d N8 16>16 128x128 k15"``, ``"... k7 same s=2 float64"``."""
        kernel = (str(self.kernel[0]) if len(set(self.kernel)) == 1
                  else "x".join(map(str, self.kernel)))
        padding = ("" if self.padding == "valid" else f" {self.padding}"
                   if isinstance(self.padding, str) else f" padding={self.padding}")
        extra = "".join(f" {k}={v}" for k, v in self.options)
        dtype = f" {self.dtype}" if self.dtype else ""
        return f"{self.layer_name} k{kernel}{padding}{extra}{dtype}"


def _out_shape(case: Case) -> Tuple[int, ...]:
    """``y``'s shape as fftconv computes it (a direct plan builds no buffers)."""
    import fftconv
    return fftconv.plan(case.x_shape, case.w_shape, dtype=np.float64, algorithm="direct",
                        **case.layer).out_shape


class CaseData(NamedTuple):
    """The arrays of one case: input, initial weights, bias and output gradient."""

    x: np.ndarray
    w: np.ndarray
    b: np.ndarray
    dy: np.ndarray


def make_data(case: Case, dtype, seed: int = 0) -> CaseData:
    """Standard-normal ``x``, ``b``, ``dy`` and ``w`` scaled by ``1/sqrt(fan_in)``,
    in ``case.dtype`` if the case sets one, else ``dtype``."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(case.dtype or dtype)

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


# algorithms and decisions compare close algorithms (the FFT path and overlap-add
# with a few tiles do nearly the same work), where a best of 5 moved by 30% between
# runs on 2 shared cores: they sample more.
SUITES = {
    "default": Suite(
        "default",
        cases=tuple(layers(2, 8, 16, 128, (3, 7, 15)) + layers(3, 2, 8, 32, (3, 5, 9))
                    + layers(1, 4, 16, 16384, (255,))),
        sweep=SWEEP_DEFAULT, skip_limits=SKIP_DEFAULT),
    "perf": Suite("perf", cases=PERF_ALL, sweep=SWEEP_DEFAULT, skip_limits=SKIP_PERF,
                  targets=PERF_TARGETS, rounds=3),
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


def _layer_value(key: str, value: str):
    """A ``--case`` value: ints (per axis with ``x``), booleans, or the string."""
    if key == "transposed":
        if value.lower() not in ("0", "1", "true", "false"):
            raise ValueError(f"transposed must be true or false, got {value!r}")
        return value.lower() in ("1", "true")
    if key in ("stride", "dilation", "groups", "padding") and value.replace("x", "").isdigit():
        ints = tuple(int(v) for v in value.split("x"))
        return ints[0] if len(ints) == 1 else ints
    return value


def parse_case(spec: str) -> Case:
    """Parse ``"N=8,C=16,O=16,size=128x128,k=15,padding=same"`` into a :class:`Case`.

    ``O`` defaults to ``C`` and ``padding`` to ``valid``.  ``k`` is one int (a
    cubic kernel) or one per axis (``"15x7"``).  The rest of a layer is optional:
    ``padding`` (``valid``, ``same``, ``full`` or ints), ``stride``, ``dilation``
    (ints, ``2`` or ``2x1``), ``groups``, ``padding_mode`` (``zeros``,
    ``circular``, ``reflect``, ``replicate``), ``transposed`` (true/false),
    ``layout`` (``channels_first``, ``channels_last``) and ``dtype`` (``float32``,
    ``float64``).

    Raises
    ------
    ValueError
        On an unknown or missing key, a bad value, or a layer fftconv rejects.
    """
    known = ("N", "C", "O", "size", "k", "padding", "dtype") + LAYER_KEYS
    fields = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        key, sep, value = item.partition("=")
        if not sep or key.strip() not in known:
            raise ValueError(f"bad case field {item!r} in {spec!r}: expected "
                             f"{', '.join(k + '=' for k in known)}")
        fields[key.strip()] = value.strip()
    missing = {"N", "C", "size", "k"} - fields.keys()
    if missing:
        raise ValueError(f"case {spec!r} lacks {', '.join(sorted(missing))}")
    size = _ints(fields["size"])
    padding = _layer_value("padding", fields.get("padding", "valid"))
    if isinstance(padding, str) and padding not in ("valid", "same", "full"):
        raise ValueError(f"case {spec!r}: padding must be valid, same, full or ints, "
                         f"got {padding!r}")
    dtype = fields.get("dtype")
    if dtype not in (None, "float32", "float64"):
        raise ValueError(f"case {spec!r}: dtype must be float32 or float64, got {dtype!r}")
    options = tuple(sorted((k, _layer_value(k, fields[k])) for k in LAYER_KEYS if k in fields))
    case = Case(int(fields["N"]), int(fields["C"]), int(fields.get("O", fields["C"])), size,
                _ints(fields["k"], len(size)), padding, options, dtype)
    if len(case.kernel) != case.ndim:
        raise ValueError(f"case {spec!r}: kernel {case.kernel} does not fit input {size}")
    try:
        out = case.out_size
    except (TypeError, ValueError) as exc:
        raise ValueError(f"case {spec!r}: {exc}") from None
    if min(out) < 1:
        raise ValueError(f"case {spec!r}: kernel {case.kernel} does not fit input {size}")
    return case


def custom_suite(suite: Suite, specs) -> Suite:
    """``suite`` with the ``--case`` layers instead of its own cases."""
    return suite.with_cases(parse_case(s) for s in specs)
