"""Argument checking for every public entry point.

All checks run before any array is copied or transformed.  Each failure raises
``TypeError`` (wrong kind of thing) or ``ValueError`` (right kind, bad value)
with a message that names the function, the parameter, the rule and the value
(CONVENTIONS §5), e.g.
``fftconv.forward: groups must divide C_in, got groups=3 and C_in=8``.
"""
from __future__ import annotations

import numbers
import operator

import numpy as np

from .geometry import PADDING_MODES, make_geometry

ALGORITHMS = ("auto", "fft", "direct", "overlap_add")


def fail(func: str, message: str, kind=ValueError):
    """Raise ``kind`` with the house prefix ``"<func>: "``."""
    raise kind(f"{func}: {message}")


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))


def check_array(func: str, name: str, a) -> np.ndarray:
    """Return ``a`` as an ndarray with a numeric (bool excluded) dtype."""
    try:
        arr = np.asarray(a)
    except ValueError as exc:  # ragged nested lists
        fail(func, f"{name} must be an array or a rectangular nested sequence ({exc})")
    if arr.dtype.kind not in "iufc":
        fail(func, f"{name} must have a numeric dtype, got dtype={arr.dtype}", TypeError)
    if arr.dtype.kind in "fc" and arr.dtype.itemsize > np.dtype(np.complex128 if arr.dtype.kind == "c"
                                                                 else np.float64).itemsize:
        fail(func, f"{name} has extended precision dtype={arr.dtype}, which is not supported; "
                   "cast it to float64 or complex128", TypeError)
    return arr


def dtypes_for(func: str, *arrays) -> tuple:
    """``(compute_dtype, result_dtype)`` for the given arrays (CONVENTIONS §4).

    float32/float64/complex stay as they are (no silent downcast); float16 is
    computed in float32 and returned as float16; integers follow numpy's
    promotion to float64.
    """
    result = np.result_type(*[a.dtype for a in arrays if a is not None])
    if result.kind in "iu":
        result = np.dtype(np.float64)
    compute = np.dtype(np.float32) if result == np.float16 else result
    return compute, result


def check_ints(func: str, name: str, value, ndim: int, minimum: int) -> tuple:
    """An int or a length-``ndim`` sequence of ints, each ``>= minimum``."""
    values = (value,) * ndim if _is_int(value) else value
    if not _is_int(value):
        try:
            values = tuple(values)
        except TypeError:
            fail(func, f"{name} must be an int or a sequence of {ndim} ints, got {name}={value!r}",
                 TypeError)
        if not all(_is_int(v) for v in values):
            fail(func, f"{name} must contain only ints, got {name}={value!r}", TypeError)
        if len(values) != ndim:
            fail(func, f"{name} must have one entry per spatial axis ({ndim}), "
                       f"got {len(values)} in {name}={value!r}")
    if any(v < minimum for v in values):
        fail(func, f"{name} must be >= {minimum} on every axis, got {name}={value!r}")
    return tuple(operator.index(v) for v in values)


def check_padding(func: str, padding, ndim: int):
    """Validate ``padding``; returns it as a mode string, an int or a tuple."""
    if isinstance(padding, str):
        if padding not in PADDING_MODES:
            fail(func, f"padding must be one of {PADDING_MODES}, an int or a sequence, "
                       f"got padding={padding!r}")
        return padding
    if _is_int(padding):
        if padding < 0:
            fail(func, f"padding must be >= 0, got padding={padding!r}")
        return int(padding)
    try:
        entries = tuple(padding)
    except TypeError:
        fail(func, f"padding must be a mode string, an int or a sequence, got padding={padding!r}",
             TypeError)
    if len(entries) != ndim:
        fail(func, f"padding must have one entry per spatial axis ({ndim}), "
                   f"got {len(entries)} in padding={padding!r}")
    out = []
    for p in entries:
        pair = (p,) if _is_int(p) else tuple(p) if isinstance(p, (tuple, list)) else None
        if pair is None or len(pair) not in (1, 2) or not all(_is_int(v) for v in pair):
            fail(func, f"padding entries must be ints or (lo, hi) pairs of ints, "
                       f"got padding={padding!r}", TypeError)
        if any(v < 0 for v in pair):
            fail(func, f"padding must be >= 0, got padding={padding!r}")
        out.append(int(pair[0]) if len(pair) == 1 else (int(pair[0]), int(pair[1])))
    return tuple(out)


def check_algorithm(func: str, algorithm) -> str:
    if algorithm not in ALGORITHMS:
        fail(func, f"algorithm must be one of {ALGORITHMS}, got algorithm={algorithm!r}")
    return algorithm


def check_layer(func: str, x_shape, w_shape, *, padding, stride, dilation, groups,
                flip_kernel, real: bool):
    """Validate the layer's shapes and options; returns its ``ConvGeometry``."""
    x_shape, w_shape = tuple(x_shape), tuple(w_shape)
    if len(x_shape) < 3:
        fail(func, f"x must have shape (N, C_in, *spatial) with at least one spatial axis, "
                   f"got x.shape={x_shape}")
    if len(w_shape) != len(x_shape):
        fail(func, f"w must have the same number of dimensions as x "
                   f"(C_out, C_in // groups, *kernel), got w.shape={w_shape} and x.shape={x_shape}")
    ndim = len(x_shape) - 2
    if not _is_int(groups):
        fail(func, f"groups must be an int, got groups={groups!r}", TypeError)
    if groups < 1:
        fail(func, f"groups must be >= 1, got groups={groups}")
    n_batch, c_in = x_shape[:2]
    c_out, c_per_group = w_shape[:2]
    if c_in < 1 or c_out < 1:
        fail(func, f"channel counts must be >= 1, got C_in={c_in} and C_out={c_out}")
    if c_in % groups:
        fail(func, f"groups must divide C_in, got groups={groups} and C_in={c_in}")
    if c_out % groups:
        fail(func, f"groups must divide C_out, got groups={groups} and C_out={c_out}")
    if c_per_group * groups != c_in:
        fail(func, f"w.shape[1] must equal C_in // groups = {c_in // groups}, "
                   f"got w.shape={w_shape} with x.shape={x_shape} and groups={groups}")
    if min(w_shape[2:]) < 1:
        fail(func, f"kernel axes must have size >= 1, got w.shape={w_shape}")
    stride = check_ints(func, "stride", stride, ndim, 1)
    dilation = check_ints(func, "dilation", dilation, ndim, 1)
    padding = check_padding(func, padding, ndim)
    if not isinstance(flip_kernel, (bool, np.bool_)):
        fail(func, f"flip_kernel must be a bool, got flip_kernel={flip_kernel!r}", TypeError)
    geom = make_geometry(x_shape, w_shape, padding, stride, dilation, groups, flip_kernel, real)
    if min(geom.out_size) < 1:
        fail(func, f"the dilated kernel {geom.effective_kernel} is larger than the padded input "
                   f"{geom.padded_size}, which leaves no output; got x.shape={x_shape}, "
                   f"w.shape={w_shape}, padding={geom.padding}, dilation={geom.dilation}")
    return geom


def check_bias(func: str, b, c_out: int):
    """``None`` or a numeric array of shape ``(C_out,)``."""
    if b is None:
        return None
    b = check_array(func, "b", b)
    if b.shape != (c_out,):
        fail(func, f"b must have shape (C_out,) = ({c_out},), got b.shape={b.shape}")
    return b


def check_shape(func: str, name: str, a: np.ndarray, expected: tuple, why: str):
    """``a.shape`` must equal ``expected``."""
    if a.shape != tuple(expected):
        fail(func, f"{name} must have shape {tuple(expected)} ({why}), got {name}.shape={a.shape}")
