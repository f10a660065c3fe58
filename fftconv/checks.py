"""Argument checking for every public entry point.

All checks run before any array is copied or transformed.  Each failure raises
``TypeError`` (wrong kind of thing) or ``ValueError`` (right kind, bad value)
with a message that names the function, the parameter, the rule and the value
(CONVENTIONS §5), e.g.
``fftconv.forward: groups must divide C_in, got groups=3 and C_in=8``.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import numbers
import operator
import reprlib
import sys
from typing import (Callable, Literal, NamedTuple, NoReturn, Optional, ParamSpec, Sequence, Tuple,
                    TypeVar, Union)

import numpy as np

from .backends import Arrays, KindError, arrays_of, common, host
from .backends import like as arrays_like
from .geometry import LAYOUTS, PADDING_FILLS, PADDING_MODES, make_layer, to_channels_first

#: The settings' vocabularies (``fftconv.configure``).
BACKENDS = ("pyfftw", "scipy")
PLANNER_EFFORTS = ("FFTW_ESTIMATE", "FFTW_MEASURE", "FFTW_PATIENT", "FFTW_EXHAUSTIVE")

#: The types of the public keywords (shared by ``fftconv``, ``fftconv.torch``,
#: ``fftconv.dask`` and ``fftconv.Conv``).
PaddingName = Literal["valid", "same", "full", "causal"]
#: A mode name, one int for every side, one int per axis, or ``(lo, hi)`` per axis
#: (in 1-D, a bare ``(lo, hi)`` pair too).
Padding = Union[PaddingName, int, Sequence[Union[int, Tuple[int, int]]]]
#: One int for every spatial axis, or one per axis.
Ints = Union[int, Sequence[int]]
PaddingMode = Literal["zeros", "circular", "reflect", "replicate"]
Layout = Literal["channels_first", "channels_last"]


@dataclasses.dataclass(frozen=True)
class LayerKeywords:
    """The layer keywords every entry point takes, with their types and defaults:
    the one place the defaults are written (CONVENTIONS §1-2 give the meaning).

    ``fftconv.forward``, ``backward``, ``vjp``, ``plan``, ``fftconv.Conv``,
    ``fftconv.torch.conv`` and ``fftconv.dask``'s functions take every field as a
    keyword-only parameter whose default is the field's (``DEFAULTS.padding``...).
    """

    padding: Padding = "valid"
    stride: Ints = 1
    dilation: Ints = 1
    groups: int = 1
    flip_kernel: bool = False
    transposed: bool = False
    output_padding: Ints = 0
    padding_mode: PaddingMode = "zeros"
    layout: Layout = "channels_first"

    def as_dict(self) -> dict:
        """The keywords as a dict (a shallow copy; the values are not copied)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


#: The default layer keywords, and the default ``algorithm``.
DEFAULTS = LayerKeywords()
ALGORITHM = "auto"
#: The layer keywords every public function takes, with their defaults (a dict view
#: of :data:`DEFAULTS`).
LAYER_DEFAULTS = DEFAULTS.as_dict()

_P = ParamSpec("_P")
_R = TypeVar("_R")


def keywords_checked(func: str) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """Decorate a public function so that an unknown keyword is a ``TypeError`` that
    names ``func`` (``"fftconv.forward"``, not just ``forward``) and lists the
    keywords it takes.  Everything else is the function's own: its signature
    (``inspect.signature`` follows ``__wrapped__``), docstring and checks."""
    def decorate(f: Callable[_P, _R]) -> Callable[_P, _R]:
        params = inspect.signature(f).parameters
        names = frozenset(n for n, p in params.items()
                          if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
        keywords = [n for n, p in params.items() if p.kind is p.KEYWORD_ONLY]

        @functools.wraps(f)
        def checked(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            if not names.issuperset(kwargs):
                check_keywords(func, set(kwargs) - names, keywords, "its keywords")
            return f(*args, **kwargs)
        return checked
    return decorate


def _axes(n: int) -> str:
    """``"1 spatial axis"``, ``"2 spatial axes"``."""
    return f"{n} spatial axis" if n == 1 else f"{n} spatial axes"


def fail(func: str, message: str, kind: type = ValueError) -> NoReturn:
    """Raise ``kind`` with the house prefix ``"<func>: "``."""
    raise kind(f"{func}: {message}")


def is_int(v) -> bool:
    """An integer that is not a bool."""
    return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))


_is_int = is_int


def _foreign_array(func: str, name: str, a) -> None:
    """Refuse the arrays that ``np.asarray`` would read wrongly or silently: a
    masked array (its mask would be ignored), a Dask array (it would be computed
    into memory) outside ``fftconv.dask``, and a torch tensor that requires grad
    (numpy cannot read it; ``fftconv.torch`` differentiates it).  Dask and torch
    are recognised only when already imported: this never imports them."""
    if isinstance(a, np.ma.MaskedArray):
        fail(func, f"{name} is a numpy masked array, whose mask a convolution would ignore "
                   f"(masked entries would be convolved as their stored values); pass a plain "
                   f"array: {name}.filled(0) to zero the masked entries, or "
                   f"np.ma.getdata({name}) to use the stored values", TypeError)
    dask_array = sys.modules.get("dask.array")
    if (dask_array is not None and isinstance(a, dask_array.Array)
            and not func.startswith("fftconv.dask.")):
        lazy = func.rsplit(".", 1)[-1]
        lazy = f"fftconv.dask.{lazy if lazy in ('backward', 'vjp') else 'forward'}"
        fail(func, f"{name} is a Dask array, which {func} would compute into memory whole; use "
                   f"{lazy} (lazy, block by block), or pass {name}.compute() to compute it "
                   f"here", TypeError)
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(a, torch.Tensor) and a.requires_grad:
        fail(func, f"{name} is a torch tensor that requires grad, which {func} (outside "
                   f"autograd) cannot differentiate; use fftconv.torch.conv (an autograd function "
                   f"with fftconv's gradients) or fftconv.torch.FFTConv{{1,2,3}}d, or pass "
                   f"{name}.detach() for values without gradients", TypeError)


def dtype_of(a) -> np.dtype:
    """The numpy dtype of an array of any library (``fftconv.backends``), or of a
    numpy dtype itself."""
    if isinstance(a, np.dtype):
        return a
    return arrays_of(a).numpy_dtype(a.dtype)


def check_array(func: str, name: str, a):
    """Return ``a`` as an array of its own library (numpy for a nested sequence)
    with a numeric (bool excluded) dtype numpy has an equal of.

    Masked arrays, Dask arrays (outside ``fftconv.dask``) and torch tensors that
    require grad are a ``TypeError`` that says what to pass instead."""
    _foreign_array(func, name, a)
    arrays = arrays_of(a)
    if arrays.owns(a):
        arr = a
        try:
            dtype = arrays.numpy_dtype(a.dtype)
        except TypeError as exc:
            fail(func, f"{name} has {exc}", TypeError)
    else:
        try:
            arr = host().asarray(a)
        except ValueError as exc:  # ragged nested lists
            fail(func, f"{name} must be an array or a rectangular nested sequence ({exc})")
        dtype = arr.dtype
    if dtype.kind not in "iufc":
        fail(func, f"{name} must have a numeric dtype, got dtype={dtype}", TypeError)
    if dtype.kind in "fc" and dtype.itemsize > np.dtype(np.complex128 if dtype.kind == "c"
                                                       else np.float64).itemsize:
        fail(func, f"{name} has extended precision dtype={dtype}, which is not supported; "
                   "cast it to float64 or complex128", TypeError)
    return arr


def check_kind(func: str, **operands) -> Arrays:
    """The one array library and device of ``operands`` (``None`` skipped): a
    ``TypeError`` naming them when they differ."""
    try:
        return common(operands)
    except KindError as exc:
        fail(func, str(exc), TypeError)


def check_like_argument(func: str, like) -> Arrays:
    """``like=``: ``None`` (numpy) or an array whose library and device to run on."""
    try:
        return arrays_like(like)
    except TypeError as exc:
        fail(func, str(exc), TypeError)


def check_like(func: str, arrays: Arrays, **operands) -> None:
    """``operands`` must be arrays of ``arrays``' library and device (a plan's, a
    pullback's): a ``TypeError`` that says which they are."""
    for name, a in operands.items():
        if a is None or not hasattr(a, "shape"):
            continue
        other = arrays_of(a)
        if other.key != arrays.key:
            fail(func, f"{name} is {other.describe()} but this runs on {arrays.describe()}; "
                       f"pass {name} as that (or build it with like= an array of "
                       f"{name}'s kind)", TypeError)


def _numpy_dtype_like(dtype) -> bool:
    """A numpy dtype, a numpy scalar type or a dtype string (not another library's dtype)."""
    return isinstance(dtype, (np.dtype, str)) or (isinstance(dtype, type)
                                                   and issubclass(dtype, np.generic))


def check_dtype(func: str, dtype, arrays: Optional[Arrays] = None) -> np.dtype:
    """``fftconv.plan``'s ``dtype``: anything ``np.dtype`` accepts (not ``None``,
    which numpy reads as float64) or a dtype of ``arrays``' library (``torch.float32``
    for a plan ``like=`` a tensor), numeric and supported as :func:`check_array` says."""
    native = None
    if arrays is not None and not arrays.fftw and dtype is not None and not _numpy_dtype_like(dtype):
        try:
            native = arrays.numpy_dtype(dtype)
        except (TypeError, KeyError):
            native = None
    try:
        if dtype is None:
            raise TypeError
        dtype = native if native is not None else np.dtype(dtype)
    except TypeError:
        fail(func, f"dtype must be a numpy dtype, got dtype={_shown(dtype)}", TypeError)
    return dtype_of(check_array(func, "dtype", host().empty((0,), dtype)))


def dtypes_for(*arrays) -> tuple:
    """``(compute_dtype, result_dtype)`` for the given arrays (CONVENTIONS §4).

    float32/float64/complex stay as they are (no silent downcast); float16 is
    computed in float32 and returned as float16; integers follow numpy's
    promotion to float64.
    """
    result = np.result_type(*[dtype_of(a) for a in arrays if a is not None])
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
    if any(isinstance(v, (bool, np.bool_)) for v in entries):
        fail(func, f"padding entries must be ints or (lo, hi) pairs of ints, "
                   f"got padding={padding!r}", TypeError)
    if ndim == 1 and len(entries) == 2 and all(_is_int(v) for v in entries):
        entries = (entries,)     # 1-D: two ints cannot be one per axis, so they are (lo, hi)
    if len(entries) != ndim:
        hint = "; for the one axis's (lo, hi) write padding=[(lo, hi)]" if ndim == 1 else ""
        fail(func, f"padding must have one entry per spatial axis ({ndim}), "
                   f"got {len(entries)} in padding={padding!r}{hint}")
    out = []
    for p in entries:
        pair: tuple = (p,) if _is_int(p) else tuple(p) if isinstance(p, (tuple, list)) else ()
        if len(pair) not in (1, 2) or not all(_is_int(v) for v in pair):
            fail(func, f"padding entries must be ints or (lo, hi) pairs of ints, "
                       f"got padding={padding!r}", TypeError)
        if any(v < 0 for v in pair):
            fail(func, f"padding must be >= 0, got padding={padding!r}")
        out.append(int(pair[0]) if len(pair) == 1 else (int(pair[0]), int(pair[1])))
    return tuple(out)


def check_algorithm(func: str, algorithm, names) -> str:
    """``"auto"`` or one of the registered algorithm ``names`` (the caller's registry)."""
    return check_choice(func, "algorithm", algorithm, ("auto",) + tuple(names))


def check_choice(func: str, name: str, value, choices):
    """One of the strings ``choices`` (anything but a string is a ``TypeError``)."""
    if not isinstance(value, str):
        fail(func, f"{name} must be one of {tuple(choices)}, got {name}={value!r}", TypeError)
    if value not in choices:
        fail(func, f"{name} must be one of {tuple(choices)}, got {name}={value!r}")
    return value


def check_count(func: str, name: str, value, minimum: int = 1) -> int:
    """One int ``>= minimum`` (a bool or a float is a ``TypeError``)."""
    rule = f"{name} must be an int >= {minimum}, got {name}={value!r}"
    if not _is_int(value):
        fail(func, rule, TypeError)
    if value < minimum:
        fail(func, rule)
    return int(value)


def check_budget(func: str, value):
    """``max_workspace_bytes``: ``None`` (no bound) or an int >= 1."""
    if value is None:
        return None
    rule = f"max_workspace_bytes must be None or an int >= 1, got max_workspace_bytes={value!r}"
    if not _is_int(value):
        fail(func, rule, TypeError)
    if value < 1:
        fail(func, rule)
    return int(value)


def check_seconds(func: str, name: str, value) -> float:
    """A finite number of seconds > 0."""
    if not isinstance(value, numbers.Real) or isinstance(value, (bool, np.bool_)):
        fail(func, f"{name} must be a number of seconds > 0, got {name}={value!r}", TypeError)
    seconds = float(value)
    if not (math.isfinite(seconds) and seconds > 0):
        fail(func, f"{name} must be a finite number of seconds > 0, got {name}={value!r}")
    return seconds


def check_keywords(func: str, given, accepted, what: str) -> None:
    """Every keyword in ``given`` is one of ``accepted``; else a ``TypeError`` naming
    the unknown ones and listing ``what`` the accepted ones are."""
    unknown = sorted(set(given) - set(accepted))
    if unknown:
        fail(func, f"got unexpected keyword argument(s) {', '.join(unknown)}; {what} are "
                   f"{', '.join(accepted)}", TypeError)


def check_not_given(func: str, given, refused, why: str) -> None:
    """None of the keywords ``refused`` is in ``given``; else a ``TypeError`` naming
    them, followed by ``why``."""
    named = [name for name in refused if name in given]
    if named:
        fail(func, f"{', '.join(named)} {why}", TypeError)


def layer_keywords(values: dict) -> dict:
    """The layer keywords picked out of ``values`` (a public function's ``locals()``:
    its explicit keyword parameters)."""
    return {name: values[name] for name in LAYER_DEFAULTS}


def check_layer_keywords(func: str, options: dict) -> dict:
    """The layer keywords with defaults filled in; an unknown one is a ``TypeError``."""
    check_keywords(func, options, LAYER_DEFAULTS, "the layer keywords")
    return {**LAYER_DEFAULTS, **options}


def check_settings(func: str, values: dict, pyfftw_available: bool) -> dict:
    """The settings ``values`` (a dict of every setting) checked and normalised
    (plain ints, floats and bools); ``func`` is ``fftconv.configure`` or
    ``fftconv.using``."""
    backend = check_choice(func, "backend", values["backend"], BACKENDS)
    if backend == "pyfftw" and not pyfftw_available:
        fail(func, "backend='pyfftw' needs the pyfftw package, which is not installed; "
                   "use backend='scipy'")
    return dict(values, backend=backend,
                threads=check_count(func, "threads", values["threads"]),
                planner_effort=check_choice(func, "planner_effort", values["planner_effort"],
                                            PLANNER_EFFORTS),
                planning_timelimit=check_seconds(func, "planning_timelimit",
                                                 values["planning_timelimit"]),
                max_workspace_bytes=check_budget(func, values["max_workspace_bytes"]),
                measure=check_bool(func, "measure", values["measure"]),
                compiled=check_bool(func, "compiled", values["compiled"]),
                engine_cache_bytes=check_count(func, "engine_cache_bytes",
                                               values["engine_cache_bytes"]),
                engine_cache_entries=check_count(func, "engine_cache_entries",
                                                 values["engine_cache_entries"]))


def check_bool(func: str, name: str, value):
    if not isinstance(value, (bool, np.bool_)):
        fail(func, f"{name} must be a bool, got {name}={value!r}", TypeError)
    return bool(value)


class Names(NamedTuple):
    """How messages name the operands: ``x``/``w`` with ``x.shape``/``w.shape`` for
    arrays (:data:`ARRAYS`), ``x_shape``/``w_shape`` for ``fftconv.plan``'s shapes
    (:data:`SHAPES`)."""

    x: str
    w: str
    xs: str
    ws: str
    has_shape: str


ARRAYS = Names("x", "w", "x.shape", "w.shape", "must have shape")
SHAPES = Names("x_shape", "w_shape", "x_shape", "w_shape", "must be")


def _check_channels(func, x_shape, w_shape, xc, wc, groups, transposed, last, n: Names):
    """Channel counts and groups; ``xc``/``wc`` are the channels-first shapes, the
    messages name the caller's axes (``last``: channels-last)."""
    c_in = xc[1]
    if transposed:  # w: (C_in, C_out // groups, *k), channels-last (*k, C_out // groups, C_in)
        c_w, c_out = wc[0], wc[1] * groups
        rule = f"{n.ws}[{-1 if last else 0}] must equal C_in = {c_in} for a transposed convolution"
    else:           # w: (C_out, C_in // groups, *k), channels-last (*k, C_in // groups, C_out)
        c_w, c_out = wc[1] * groups, wc[0]
        rule = f"{n.ws}[{-2 if last else 1}] must equal C_in // groups = {c_in // groups}"
    if c_in < 1 or c_out < 1:
        fail(func, f"channel counts must be >= 1, got C_in={c_in} and C_out={c_out}")
    if c_in % groups:
        fail(func, f"groups must divide C_in, got groups={groups} and C_in={c_in}")
    if not transposed and c_out % groups:
        fail(func, f"groups must divide C_out, got groups={groups} and C_out={c_out}")
    if c_w != c_in:
        fail(func, f"{rule}, got {n.ws}={w_shape} with {n.xs}={x_shape} and groups={groups}")


def _check_halo(func, padding_mode, pads, in_size):
    """PyTorch's limits: reflect padding below the input size, circular up to it,
    and replicate padding needs a sample to replicate."""
    for axis, ((lo, hi), n) in enumerate(zip(pads, in_size)):
        if padding_mode == "replicate" and max(lo, hi) > 0 and n < 1:
            fail(func, f"padding_mode='replicate' needs at least one input sample on every "
                       f"padded axis, got padding ({lo}, {hi}) for size {n} on spatial axis {axis}")
        if padding_mode == "reflect" and max(lo, hi) >= n:
            fail(func, f"padding_mode='reflect' needs padding smaller than the input on every "
                       f"axis, got padding ({lo}, {hi}) for size {n} on spatial axis {axis}")
        if padding_mode == "circular" and max(lo, hi) > n:
            fail(func, f"padding_mode='circular' needs padding no larger than the input on every "
                       f"axis, got padding ({lo}, {hi}) for size {n} on spatial axis {axis}")


def _check_output_padding(func, output_padding, padding, stride, dilation, ndim, transposed):
    if output_padding is None:
        output_padding = 0
    ops = check_ints(func, "output_padding", output_padding, ndim, 0)
    if not transposed:
        if any(ops):
            fail(func, f"output_padding is for transposed=True, got output_padding="
                       f"{output_padding!r} with transposed=False")
        return None
    if padding in ("same", "causal") and any(ops):
        fail(func, f"output_padding must be 0 with padding={padding!r} (the output is n * stride "
                   f"long), got output_padding={output_padding!r}")
    for op, s, d in zip(ops, stride, dilation):
        if op >= max(s, d):
            fail(func, f"output_padding must be smaller than stride or dilation on every axis, "
                       f"got output_padding={output_padding!r} with stride={stride} and "
                       f"dilation={dilation}")
    return ops


def _w_in_channels(w_shape, groups: int, transposed: bool, last: bool) -> int:
    """The ``C_in`` that the weights ``w_shape`` take (in the caller's layout)."""
    if transposed:
        return w_shape[-1 if last else 0]
    return w_shape[-2 if last else 1] * groups


def check_layer(func: str, x_shape, w_shape, *, padding, stride, dilation, groups,
                flip_kernel, real: bool, transposed=False, output_padding=0,
                padding_mode="zeros", layout="channels_first", names: Names = ARRAYS):
    """Validate the layer's shapes and options; returns its ``LayerGeometry``.

    Shapes are the caller's (in ``layout``); messages quote them as given and
    call them as ``names`` says.
    """
    n = names
    layout = check_choice(func, "layout", layout, LAYOUTS)
    transposed = check_bool(func, "transposed", transposed)
    padding_mode = check_choice(func, "padding_mode", padding_mode, tuple(PADDING_FILLS))
    x_shape, w_shape = tuple(x_shape), tuple(w_shape)
    last = layout == "channels_last"
    if len(w_shape) >= 3 and len(x_shape) == len(w_shape) - 1 and _is_int(groups) and \
            x_shape[-1 if last else 0] == _w_in_channels(w_shape, groups, transposed, last):
        form = "(N, *spatial, C_in)" if last else "(N, C_in, *spatial)"
        fail(func, f"{n.x} lacks the batch axis: {n.x} {n.has_shape} {form} with "
                   f"{_axes(len(w_shape) - 2)} as {n.w} has, got {n.xs}={x_shape} with "
                   f"{n.ws}={w_shape}; for one sample add the axis "
                   f"({n.x + '[None]' if n is ARRAYS else '(1,) + ' + n.x})")
    if len(x_shape) < 3:
        form = "(N, *spatial, C_in)" if last else "(N, C_in, *spatial)"
        fail(func, f"{n.x} {n.has_shape} {form} with at least one spatial axis, "
                   f"got {n.xs}={x_shape}")
    if len(w_shape) != len(x_shape):
        pair = "C_in, C_out // groups" if transposed else "C_out, C_in // groups"
        form = f"(*kernel, {', '.join(reversed(pair.split(', ')))})" if last else f"({pair}, *kernel)"
        fail(func, f"{n.w} must have the same number of dimensions as {n.x} {form}, "
                   f"got {n.ws}={w_shape} and {n.xs}={x_shape}")
    xc = to_channels_first(x_shape) if last else x_shape
    wc = to_channels_first(w_shape, weights=True) if last else w_shape
    ndim = len(x_shape) - 2
    if not _is_int(groups):
        fail(func, f"groups must be an int, got groups={groups!r}", TypeError)
    if groups < 1:
        fail(func, f"groups must be >= 1, got groups={groups}")
    _check_channels(func, x_shape, w_shape, xc, wc, groups, transposed, last, n)
    if min(wc[2:]) < 1:
        fail(func, f"kernel axes must have size >= 1, got {n.ws}={w_shape}")
    stride = check_ints(func, "stride", stride, ndim, 1)
    dilation = check_ints(func, "dilation", dilation, ndim, 1)
    padding = check_padding(func, padding, ndim)
    flip_kernel = check_bool(func, "flip_kernel", flip_kernel)
    ops = _check_output_padding(func, output_padding, padding, stride, dilation, ndim,
                                transposed)
    if transposed and padding_mode != "zeros":
        fail(func, f"padding_mode must be 'zeros' for a transposed convolution (as PyTorch), "
                   f"got padding_mode={padding_mode!r}")
    layer = make_layer(xc, wc, padding, stride, dilation, groups, flip_kernel, real,
                       transposed=transposed, output_padding=ops, padding_mode=padding_mode,
                       layout=layout)
    if transposed:
        _check_transposed_size(func, layer, x_shape, w_shape, n)
    if padding_mode != "zeros":
        _check_halo(func, padding_mode, layer.mode_padding, layer.in_size)
    geom = layer.conv
    if min(geom.out_size) < 1:
        fail(func, f"the dilated kernel {geom.effective_kernel} is larger than the padded input "
                   f"{geom.padded_size}, which leaves no output; got {n.xs}={x_shape}, "
                   f"{n.ws}={w_shape}, padding={layer.padding}, dilation={geom.dilation}")
    return layer


def _check_transposed_size(func, layer, x_shape, w_shape, n: Names):
    """A transposed layer's input and output must have at least one sample per axis."""
    if min(layer.in_size) < 1:
        fail(func, f"{n.x} must have at least one sample on every spatial axis for a transposed "
                   f"convolution, got {n.xs}={x_shape}")
    if min(layer.out_size) < 1:
        c = layer.conv
        fail(func, f"the padding {layer.padding} removes the whole output of the transposed "
                   f"convolution (output size {layer.out_size}); got {n.xs}={x_shape}, "
                   f"{n.ws}={w_shape}, stride={c.stride}, dilation={c.dilation}, "
                   f"output_padding={layer.output_padding}")


def check_layer_input(func: str, x, dtype: np.dtype, channels: int, ndim: int,
                      last: bool) -> np.ndarray:
    """``fftconv.Conv``'s input: an array ``(N, C, *spatial)`` (``last``:
    ``(N, *spatial, C)``) with ``channels`` channels and ``ndim`` spatial axes,
    whose dtype promotes to the layer's ``dtype``.  A list or another sequence
    (not an array: it has no dtype of its own) is converted to ``dtype`` when
    numpy can cast it so within its kind (Python floats to float32)."""
    a = check_array(func, "x", x)
    if not hasattr(x, "dtype") and np.can_cast(a.dtype, dtype, "same_kind"):
        a = a.astype(dtype)
    given = dtype_of(a)
    form = f"(N, *spatial, {channels})" if last else f"(N, {channels}, *spatial)"
    if a.ndim == ndim + 1 and a.shape[-1 if last else 0] == channels:
        fail(func, f"x lacks the batch axis: x must have shape {form} with {_axes(ndim)}, "
                   f"got x.shape={a.shape}; for one sample add the axis (x[None])")
    if a.ndim != ndim + 2 or a.shape[-1 if last else 1] != channels:
        fail(func, f"x must have shape {form} with {_axes(ndim)}, got x.shape={a.shape}")
    if np.result_type(given, dtype) != dtype:
        read = "" if hasattr(x, "dtype") else f" (read from a {type(x).__name__})"
        fail(func, f"x has dtype={given}{read} but the layer's dtype is {dtype}; cast x, or "
                   f"build the layer with dtype={np.result_type(given, dtype)}", TypeError)
    return a


def check_parameter(func: str, name: str, a, shape: Optional[tuple], dtype: np.dtype,
                    why: str) -> Optional[np.ndarray]:
    """A layer's new ``w`` or ``b``: ``shape`` exactly (``why`` says where it comes
    from) and a dtype that promotes to the layer's ``dtype`` (ints, narrower floats);
    returned as an array of ``dtype`` (the same object when it already is one).
    ``shape=None``: the layer has no such parameter (``bias=False``), and ``a``
    must be ``None`` too; a layer that has one cannot drop it."""
    if shape is None or a is None:
        if shape is None and a is not None:
            fail(func, f"the layer has no {name} (it was built with bias=False), got a "
                       f"{name} of shape {tuple(getattr(a, 'shape', ()))}; build the layer with bias=True", TypeError)
        if shape is not None:
            fail(func, f"{name} cannot be None on a layer built with one; build the layer "
                       f"with bias=False", TypeError)
        return None
    a = check_array(func, name, a)
    if a.shape != tuple(shape):
        fail(func, f"{name} must have shape {tuple(shape)} ({why}), got {name}.shape={a.shape}")
    given = dtype_of(a)
    if np.result_type(given, dtype) != dtype:
        fail(func, f"{name} has dtype={given} but the layer's dtype is {dtype} (no silent "
                   f"downcast); assign {name}.astype(np.{dtype})", TypeError)
    return arrays_of(a).astype(a, dtype)


def check_bias(func: str, b, c_out: int):
    """``None`` or a numeric array of shape ``(C_out,)``."""
    if b is None:
        return None
    b = check_array(func, "b", b)
    check_bias_shape(func, b.shape, c_out)
    return b


def check_bias_shape(func: str, shape, c_out: int) -> None:
    """A bias's shape (of any kind of array) must be ``(C_out,)``."""
    if tuple(shape) != (c_out,):
        fail(func, f"b must have shape (C_out,) = ({c_out},), got b.shape={tuple(shape)}")


def check_instance(func: str, name: str, value, kind: type, hint: str) -> None:
    """``value`` must be a ``kind`` (a ``TypeError`` naming its type, then ``hint``)."""
    if not isinstance(value, kind):
        fail(func, f"{name} must be a {kind.__module__}.{kind.__qualname__}, got "
                   f"{type(value).__module__}.{type(value).__qualname__}; {hint}", TypeError)


def check_one_kind(func: str, dtypes: dict, complex_kinds: set) -> None:
    """The operands ``dtypes`` (``{"x": dtype, ...}``, ``None`` for an absent one) must
    be all real or all complex (``complex_kinds``: those that are complex), as
    ``torch.nn.functional.conv*d`` requires: a mix is a ``TypeError``."""
    given = {name: dtype for name, dtype in dtypes.items() if dtype is not None}
    kinds = {name in complex_kinds for name in given}
    if len(kinds) > 1:
        shown = ", ".join(f"{name}.dtype={dtype}" for name, dtype in given.items())
        fail(func, f"{', '.join(given)} must be all real or all complex (as "
                   f"torch.nn.functional.conv*d requires), got {shown}; cast them to one kind "
                   f"(a real tensor t to complex: t.to(torch.complex128), say)", TypeError)


def check_shape(func: str, name: str, a, expected: tuple, why: str):
    """``a.shape`` must equal ``expected``."""
    if tuple(a.shape) != tuple(expected):
        fail(func, f"{name} must have shape {tuple(expected)} ({why}), got "
                   f"{name}.shape={tuple(a.shape)}")


def _is_array(value) -> bool:
    return hasattr(value, "shape") and hasattr(value, "dtype")


def _shown(value) -> str:
    """``repr(value)``, abbreviated: an error message never prints a whole array."""
    if _is_array(value):
        return f"an array of shape {value.shape}"
    return reprlib.repr(value)


def check_shape_tuple(func: str, name: str, shape) -> tuple:
    """A shape given as a sequence of non-negative ints (``fftconv.plan``)."""
    if _is_array(shape):
        fail(func, f"{name} must be a tuple of ints (an array's .shape, not the array), "
                   f"got {name}={_shown(shape)}", TypeError)
    if isinstance(shape, (str, bytes)) or not hasattr(shape, "__len__") or not all(
            _is_int(v) for v in shape):
        fail(func, f"{name} must be a tuple of ints, got {name}={_shown(shape)}", TypeError)
    if any(v < 0 for v in shape):
        fail(func, f"{name} must not have negative sizes, got {name}={_shown(shape)}")
    return tuple(int(v) for v in shape)


def check_plan_options(func: str, max_workspace_bytes, measure, tile, algorithm, ndim: int,
                       settings, tiled) -> tuple:
    """``(max_workspace_bytes, measure, tile)`` of ``fftconv.plan``, defaults filled
    in from ``settings``; ``tile`` only for an algorithm named in ``tiled``."""
    max_workspace_bytes = check_budget(func, max_workspace_bytes)
    if max_workspace_bytes is None:
        max_workspace_bytes = settings.max_workspace_bytes
    measure = settings.measure if measure is None else check_bool(func, "measure", measure)
    if tile is not None:
        if algorithm not in tiled:
            fail(func, f"tile is for algorithm={' or '.join(map(repr, tiled))}, "
                       f"got algorithm={algorithm!r}")
        tile = check_ints(func, "tile", tile, ndim, 1)
    return max_workspace_bytes, measure, tile


#: How :func:`check_operand` says where the expected shape and dtype come from.
_ORIGINS = {"plan": ("the shape this plan was built for", "this plan was built for dtype={0}; "
                     "build a plan with dtype={1}"),
            "forward": ("the shape of y from the forward pass", "the forward pass ran in "
                        "dtype={0}; cast {2} to {0}")}


def check_operand(func: str, name: str, a, shape, result_dtype, compute_dtype,
                  origin: str = "plan", arrays: Optional[Arrays] = None):
    """``a`` must have ``shape`` and a dtype that promotes to ``result_dtype``.

    Anything that would change the result dtype (a float64 ``x`` for a float32
    plan, an int64 one, a complex bias for a real plan) is a ``TypeError``: a
    plan never downcasts silently.  ``origin`` (``"plan"`` or ``"forward"``)
    says where the expectation comes from, in the message.
    """
    shape_rule, dtype_rule = _ORIGINS[origin]
    a = check_array(func, name, a)
    check_shape(func, name, a, shape, shape_rule)
    given = dtype_of(a)
    if np.result_type(given, result_dtype) != result_dtype:
        rule = dtype_rule.format(result_dtype, np.result_type(given, result_dtype), name)
        fail(func, f"{name} has dtype={given} but {rule}", TypeError)
    if arrays is not None and arrays_of(a).key != arrays.key:   # a sequence, read by numpy
        return arrays.asarray(a, compute_dtype)
    return arrays_of(a).astype(a, compute_dtype)
