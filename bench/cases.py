"""The problems: layer shapes (``--case SPEC``) and their data.

Every case is a "valid" cross-correlation layer with ``groups=1`` and a square
(cubic) kernel unless given otherwise, i.e. what ``torch.nn.functional.conv*d``
computes with ``padding=0`` and what ``scipy.signal.fftconvolve(mode="valid")``
computes per channel pair.  ``bench.suites`` groups them.
"""
from __future__ import annotations

import dataclasses
from math import prod
from typing import NamedTuple, Optional, Tuple

import numpy as np


#: Layer keywords a case may set beyond the shapes and ``padding`` (``--case``).
LAYER_KEYS = ("stride", "dilation", "groups", "padding_mode", "transposed", "layout",
              "flip_kernel")


@dataclasses.dataclass(frozen=True)
class Case:
    """One convolution layer: ``x (N, C, *size) * w (O, C, *kernel) -> y (N, O, *out)``.

    ``padding`` is ``"valid"``, ``"same"``, ``"full"``, ``"causal"`` or an int;
    ``options`` holds the other layer keywords of ``fftconv.plan`` as sorted
    ``(name, value)`` pairs (:data:`LAYER_KEYS`); ``dtype`` overrides ``--dtype``
    for this case; ``max_workspace_bytes`` is the workspace budget of fftconv's
    plans for this case (None: the setting's).
    """

    batch: int
    in_channels: int
    out_channels: int
    size: Tuple[int, ...]
    kernel: Tuple[int, ...]
    padding: object = "valid"
    options: Tuple[Tuple[str, object], ...] = ()
    dtype: Optional[str] = None
    max_workspace_bytes: Optional[int] = None

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
        extra = {"valid": 0, "same": None, "causal": None, "full": 2}[self.padding]
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
        budget = (f" budget={self.max_workspace_bytes / 2 ** 20:g}MiB"
                  if self.max_workspace_bytes else "")
        return f"{self.layer_name} k{kernel}{padding}{extra}{dtype}{budget}"


def _out_shape(case: Case) -> Tuple[int, ...]:
    """``y``'s shape as fftconv computes it (its argument checks: no plan, no buffers)."""
    from fftconv.checks import check_layer, check_layer_keywords
    func = "bench.cases"
    return check_layer(func, case.x_shape, case.w_shape, real=True,
                       **check_layer_keywords(func, case.layer)).y_shape


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


def _ints(text: str, ndim: Optional[int] = None) -> Tuple[int, ...]:
    """``"128x128"`` -> ``(128, 128)``; a single value is repeated ``ndim`` times."""
    values = tuple(int(v) for v in text.lower().split("x"))
    if ndim is not None and len(values) == 1:
        values *= ndim
    return values


def _layer_value(key: str, value: str):
    """A ``--case`` value: ints (per axis with ``x``), booleans, or the string."""
    if key in ("transposed", "flip_kernel"):
        if value.lower() not in ("0", "1", "true", "false"):
            raise ValueError(f"{key} must be true or false, got {value!r}")
        return value.lower() in ("1", "true")
    if key in ("stride", "dilation", "groups", "padding") and value.replace("x", "").isdigit():
        ints = tuple(int(v) for v in value.split("x"))
        return ints[0] if len(ints) == 1 else ints
    return value


def parse_case(spec: str) -> Case:
    """Parse ``"N=8,C=16,O=16,size=128x128,k=15,padding=same"`` into a :class:`Case`.

    ``O`` defaults to ``C`` and ``padding`` to ``valid``.  ``k`` is one int (a
    cubic kernel) or one per axis (``"15x7"``).  The rest of a layer is optional:
    ``padding`` (``valid``, ``same``, ``full``, ``causal`` or ints), ``stride``,
    ``dilation`` (ints, ``2`` or ``2x1``), ``groups``, ``padding_mode`` (``zeros``,
    ``circular``, ``reflect``, ``replicate``), ``transposed`` and ``flip_kernel``
    (true/false), ``layout`` (``channels_first``, ``channels_last``), ``dtype``
    (``float32``, ``float64``) and ``max_workspace_bytes`` (an int).

    Raises
    ------
    ValueError
        On an unknown or missing key, a bad value, or a layer fftconv rejects.
    """
    known = ("N", "C", "O", "size", "k", "padding", "dtype", "max_workspace_bytes") + LAYER_KEYS
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
    if isinstance(padding, str) and padding not in ("valid", "same", "full", "causal"):
        raise ValueError(f"case {spec!r}: padding must be valid, same, full, causal or ints, "
                         f"got {padding!r}")
    budget = fields.get("max_workspace_bytes")
    if budget is not None and not budget.isdigit():
        raise ValueError(f"case {spec!r}: max_workspace_bytes must be an int, got {budget!r}")
    dtype = fields.get("dtype")
    if dtype not in (None, "float32", "float64"):
        raise ValueError(f"case {spec!r}: dtype must be float32 or float64, got {dtype!r}")
    options = tuple(sorted((k, _layer_value(k, fields[k])) for k in LAYER_KEYS if k in fields))
    case = Case(int(fields["N"]), int(fields["C"]), int(fields.get("O", fields["C"])), size,
                _ints(fields["k"], len(size)), padding, options, dtype,
                None if budget is None else int(budget))
    if len(case.kernel) != case.ndim:
        raise ValueError(f"case {spec!r}: kernel {case.kernel} does not fit input {size}")
    try:
        out = case.out_size
    except (TypeError, ValueError) as exc:
        raise ValueError(f"case {spec!r}: {exc}") from None
    if min(out) < 1:
        raise ValueError(f"case {spec!r}: kernel {case.kernel} does not fit input {size}")
    return case
