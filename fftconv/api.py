"""The public functions ``forward``, ``backward``, ``vjp`` and ``plan``: check
every argument, then hand the work to a plan or to an engine of the cache."""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Optional, Sequence, Tuple

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from .backends import Arrays, arrays_of
from .checks import (ALGORITHM, DEFAULTS, LAYER_DEFAULTS, SHAPES, Ints, Layout, Padding,
                     PaddingMode, check_algorithm, check_array, check_bias, check_dtype,
                     check_kind, check_layer, check_like_argument, check_plan_options,
                     check_shape, check_shape_tuple, dtype_of, dtypes_for, keywords_checked,
                     layer_keywords)
from .config import Settings, get_settings
from .docstrings import EXECUTION, PARAMETERS, SIZES
from .registry import NAMES, REGISTRY
from .runner import Runner
from .planner import (Gradients, Plan, Pullback, check_runs_on, choose_algorithm, engine_for,
                      resolve, result_gradients)

#: The algorithms that take an output tile (``tile=``).
TILED = tuple(name for name, entry in REGISTRY.items() if entry.tiled)


def _layer_for(func, x, w, arrays, algorithm, keywords: dict) -> tuple:
    """Check every argument; returns ``(layer, compute dtype, result dtype)``."""
    check_algorithm(func, algorithm, NAMES)
    compute, result = dtypes_for(x, w, *arrays)
    layer = check_layer(func, tuple(x.shape), tuple(w.shape), real=compute.kind == "f",
                        **keywords)
    return layer, compute, result


def _call_settings(func: str, layer, algorithm: str, max_workspace_bytes, measure) -> Settings:
    """The settings of one stateless call: the current ones, with this call's
    ``max_workspace_bytes`` and ``measure`` where given (checked)."""
    settings = get_settings()
    budget, measure, _ = check_plan_options(func, max_workspace_bytes, measure, None, algorithm,
                                            layer.ndim, settings, TILED)
    if budget == settings.max_workspace_bytes and measure == settings.measure:
        return settings
    return dataclasses.replace(settings, max_workspace_bytes=budget, measure=measure)


@contextlib.contextmanager
def _shared(func, layer, compute, algorithm, settings: Settings, arrays: Arrays):
    """``(runner, shared engine)`` for a stateless call: an engine lent by the bounded
    cache for the block, its lock held (a pullback may be using it)."""
    choice = choose_algorithm(func, layer.conv, compute, algorithm, settings, settings.measure,
                              arrays=arrays)
    resolved = resolve(layer, choice.algorithm)
    with engine_for(func, resolved.conv, compute, choice.algorithm, settings,
                    choice.tile, arrays) as shared, shared.engine.lock:
        yield Runner(resolved, shared.engine, settings.threads, func), shared


def _operands(func, layer, compute, arrays: Arrays, x, w, b):
    """``x``, ``w``, ``b`` checked against the layer and cast to the compute dtype."""
    b = check_bias(func, b, layer.out_channels)
    return (arrays.astype(x, compute), arrays.astype(w, compute),
            None if b is None else arrays.astype(b, compute))


def _checked(func: str, **operands) -> tuple:
    """The operands checked (``None`` kept), and the one array library they share;
    nested sequences become arrays of it."""
    checked = {name: None if a is None else check_array(func, name, a)
               for name, a in operands.items()}
    arrays = check_kind(func, **{name: a for name, a in operands.items() if _is_array(a)})
    return tuple(a if a is None or arrays_of(a).key == arrays.key
                 else arrays.asarray(a, dtype_of(a)) for a in checked.values()) + (arrays,)


def _is_array(a) -> bool:
    """An array of some library (a nested sequence is not: it takes the others' kind)."""
    return hasattr(a, "shape") and hasattr(a, "dtype")


def _forward(func, x, w, b, keywords: dict, algorithm, max_workspace_bytes, measure,
             keep: bool) -> tuple:
    """``(y, pullback)`` (``pullback`` is ``None`` unless ``keep``)."""
    x, w, b, arrays = _checked(func, x=x, w=w, b=b)
    layer, compute, result = _layer_for(func, x, w, [] if b is None else [b], algorithm,
                                        keywords)
    check_runs_on(func, algorithm, arrays)
    settings = _call_settings(func, layer, algorithm, max_workspace_bytes, measure)
    x, w, b = _operands(func, layer, compute, arrays, x, w, b)
    with _shared(func, layer, compute, algorithm, settings, arrays) as (runner, shared):
        weights = shared.weights(runner.weight_form).state(w, runner.weights)
        y, saved = runner.forward(x, weights, b, keep=keep)
    pullback = (Pullback(runner, saved, weights, result, shared.engine.lock,
                         "fftconv.vjp pullback")
                if keep else None)
    return arrays.astype(y, result), pullback


@keywords_checked("fftconv.forward")
def forward(x: ArrayLike, w: ArrayLike, b: Optional[ArrayLike] = None, *,
            padding: Padding = DEFAULTS.padding, stride: Ints = DEFAULTS.stride,
            dilation: Ints = DEFAULTS.dilation, groups: int = DEFAULTS.groups,
            flip_kernel: bool = DEFAULTS.flip_kernel, transposed: bool = DEFAULTS.transposed,
            output_padding: Ints = DEFAULTS.output_padding,
            padding_mode: PaddingMode = DEFAULTS.padding_mode,
            layout: Layout = DEFAULTS.layout, algorithm: str = ALGORITHM,
            max_workspace_bytes: Optional[int] = None, measure: Optional[bool] = None) -> np.ndarray:
    """N-d convolution layer forward pass: ``y = conv(x, w) + b``.

    Parameters
    ----------
    x : array_like, shape ``(N, C_in, *spatial)``
        Input, any number of spatial axes.
    w : array_like, shape ``(C_out, C_in // groups, *kernel)``
        Weights, as many spatial axes as ``x``.
    b : array_like, shape ``(C_out,)``, optional
        Bias.{params}{execution}

    Returns
    -------
    y : ndarray, shape ``(N, C_out, *out)``
        Same dtype as the inputs (float16 is computed in float32; integers are
        promoted as numpy does).  Output length per axis:

        {sizes}
    Notes
    -----
    ``y[n, o, i] = b[o] + sum_c sum_j w[o, c, j] * xpad[n, g(o)*Cg + c, i*s + j*d]``.
    The FFT error is relative to the largest output magnitude (about 1e-15
    for float64, 1e-7 for float32), not to each element: outputs much smaller
    than the largest one carry a larger relative error.

    Non-finite inputs (NaN, Inf): ``"fft"`` transforms a whole sample at once,
    so a NaN or Inf in ``x[n]`` makes every output of sample ``n`` non-finite,
    in every output channel that reads its input channel (all of them when
    ``groups=1``); ``"overlap_add"`` does the same within the output tiles
    whose input windows contain it.  Neither ever carries it into another
    sample.  ``"direct"`` keeps it in the outputs whose receptive field
    contains it, as the sum itself does.  A non-finite weight reaches every
    sample on every path, as it does in the sum.

    Examples
    --------
    >>> import numpy as np, fftconv
    >>> x = np.arange(8.0).reshape(1, 1, 8)
    >>> w = np.array([[[1.0, 0.0, -1.0]]])
    >>> fftconv.forward(x, w, padding="valid").round(12)
    array([[[-2., -2., -2., -2., -2., -2.]]])
    """
    return _forward("fftconv.forward", x, w, b, layer_keywords(locals()), algorithm,
                    max_workspace_bytes, measure, keep=False)[0]


@keywords_checked("fftconv.vjp")
def vjp(x: ArrayLike, w: ArrayLike, b: Optional[ArrayLike] = None, *,
        padding: Padding = DEFAULTS.padding, stride: Ints = DEFAULTS.stride,
        dilation: Ints = DEFAULTS.dilation, groups: int = DEFAULTS.groups,
        flip_kernel: bool = DEFAULTS.flip_kernel, transposed: bool = DEFAULTS.transposed,
        output_padding: Ints = DEFAULTS.output_padding,
        padding_mode: PaddingMode = DEFAULTS.padding_mode,
        layout: Layout = DEFAULTS.layout, algorithm: str = ALGORITHM,
        max_workspace_bytes: Optional[int] = None, measure: Optional[bool] = None) -> Tuple[np.ndarray, Pullback]:
    """Forward pass and its pullback: ``y, pullback = vjp(x, w, b, padding=...)``.

    ``pullback(dy)`` returns the :class:`Gradients` ``(dx, dw, db)`` for this
    call's ``x`` and ``w`` as they are now (later in-place changes do not
    matter), as many times as asked, in any order with other pullbacks: a
    layer used several times in one forward pass gets one pullback per use.
    The pullback keeps the spectrum of ``x`` (or its equivalent) and shares
    the weight spectrum with other calls while the weights' values do not
    change; dropping it frees them.

    Parameters
    ----------
    x, w, b : array_like
        As for :func:`forward`.{params}{execution}

    Returns
    -------
    y : ndarray
        As :func:`forward` returns it.  Output length per axis:

        {sizes}
    pullback : Pullback
        ``pullback(dy, need_dx=True, need_dw=True)`` -> ``Gradients(dx, dw, db)``.

    Examples
    --------
    >>> import numpy as np, fftconv
    >>> rng = np.random.default_rng(0)
    >>> w = rng.standard_normal((4, 3, 3, 3))
    >>> x1, x2 = rng.standard_normal((2, 2, 3, 8, 8))
    >>> y1, pb1 = fftconv.vjp(x1, w, padding="same")     # a layer used twice
    >>> y2, pb2 = fftconv.vjp(x2, w, padding="same")
    >>> g2, g1 = pb2(np.ones_like(y2)), pb1(np.ones_like(y1))   # any order
    >>> ref = fftconv.backward(np.ones_like(y1), x1, w, padding="same")
    >>> bool(np.allclose(g1.dw, ref.dw))
    True
    """
    return _forward("fftconv.vjp", x, w, b, layer_keywords(locals()), algorithm,
                    max_workspace_bytes, measure, keep=True)


def _forward_output(keywords: dict) -> str:
    """What backward's expected ``dy`` shape assumes: forward's output with these
    layer keywords (``padding`` and ``stride`` always shown, so a forgotten one
    is seen; the others where they are not the defaults)."""
    shown = ", ".join(f"{k}={v!r}" for k, v in keywords.items()
                      if k in ("padding", "stride") or repr(v) != repr(LAYER_DEFAULTS[k]))
    return f"forward's output with {shown}; pass backward the layer keywords forward ran with"


@keywords_checked("fftconv.backward")
def backward(dy: ArrayLike, x: ArrayLike, w: ArrayLike, *,
             padding: Padding = DEFAULTS.padding, stride: Ints = DEFAULTS.stride,
             dilation: Ints = DEFAULTS.dilation, groups: int = DEFAULTS.groups,
             flip_kernel: bool = DEFAULTS.flip_kernel, transposed: bool = DEFAULTS.transposed,
             output_padding: Ints = DEFAULTS.output_padding,
             padding_mode: PaddingMode = DEFAULTS.padding_mode,
             layout: Layout = DEFAULTS.layout, algorithm: str = ALGORITHM,
             max_workspace_bytes: Optional[int] = None, measure: Optional[bool] = None) -> Gradients:
    """Gradients of the layer: ``dx, dw, db`` for output gradient ``dy``.

    Parameters
    ----------
    dy : array_like, shape ``(N, C_out, *out)``
        Gradient of the loss with respect to ``y``.
    x, w : array_like
        The forward pass's input and weights.{params}{execution}

    Returns
    -------
    Gradients
        Named tuple ``(dx, dw, db)`` with the shapes of ``x``, ``w`` and
        ``(C_out,)``, summed over the batch (no ``1/N``, as PyTorch).  ``dx`` is
        ``dy`` convolved with the flipped weights (a transposed convolution),
        ``dw`` is ``x`` correlated with ``dy``; both are the exact adjoints of
        :func:`forward`.  Complex inputs get PyTorch's convention (the gradient
        with respect to the conjugate).

    Examples
    --------
    >>> import numpy as np, fftconv
    >>> x = np.arange(8.0).reshape(1, 1, 8)
    >>> w = np.array([[[1.0, 0.0, -1.0]]])
    >>> dx, dw, db = fftconv.backward(np.ones((1, 1, 6)), x, w)
    >>> dw.round(12), db
    (array([[[15., 21., 27.]]]), array([6.]))
    """
    func = "fftconv.backward"
    keywords = layer_keywords(locals())
    dy, x, w, arrays = _checked(func, dy=dy, x=x, w=w)
    layer, compute, result = _layer_for(func, x, w, [dy], algorithm, keywords)
    check_runs_on(func, algorithm, arrays)
    settings = _call_settings(func, layer, algorithm, max_workspace_bytes, measure)
    check_shape(func, "dy", dy, layer.y_shape, _forward_output(keywords))
    dy, x, w = (arrays.astype(a, compute) for a in (dy, x, w))
    with _shared(func, layer, compute, algorithm, settings, arrays) as (runner, shared):
        weights = shared.weights(runner.weight_form).state(w, runner.weights)
        grads = runner.backward(dy, runner.save(x), weights)
    return result_gradients(grads, result, arrays)


@keywords_checked("fftconv.plan")
def plan(x_shape: Sequence[int], w_shape: Sequence[int], *, dtype: DTypeLike,
         padding: Padding = DEFAULTS.padding, stride: Ints = DEFAULTS.stride,
         dilation: Ints = DEFAULTS.dilation, groups: int = DEFAULTS.groups,
         flip_kernel: bool = DEFAULTS.flip_kernel, transposed: bool = DEFAULTS.transposed,
         output_padding: Ints = DEFAULTS.output_padding,
         padding_mode: PaddingMode = DEFAULTS.padding_mode,
         layout: Layout = DEFAULTS.layout, algorithm: str = ALGORITHM,
         max_workspace_bytes: Optional[int] = None, measure: Optional[bool] = None,
         tile: Optional[Ints] = None, like=None) -> Plan:
    """Plan a layer once and run many training steps with it.

    Parameters
    ----------
    x_shape, w_shape : tuple of int
        Shapes of ``x`` ``(N, C_in, *spatial)`` and ``w`` ``(C_out, C_in // groups, *kernel)``.
    dtype : dtype
        dtype of ``x`` and ``w`` (float16/32/64, complex64/128).{params}{execution}
        ``p.workspace_bytes`` counts the buffers and the ``x`` a forward pass keeps.
    tile : int or sequence of int, optional
        With ``algorithm="overlap_add"``: output samples per tile and axis
        (default: the cost model's best).  For a transposed layer the tiles
        cut its engine's convolution, whose output is the transposed input.
    like : array, optional
        An array (numpy, CuPy, a torch tensor, any array API array) whose library
        and device the plan runs on: its buffers live there, it takes operands
        of that kind only and returns results of it (``p.arrays``).  Default:
        numpy.

    Returns
    -------
    Plan
        ``y, pullback = p.vjp(x, w, b)`` returns ``y`` and a pullback that keeps
        the spectra of this ``x`` and ``w``; ``pullback(dy)`` reuses them, so a
        training step costs three forward and three inverse batched transforms,
        and any number of calls can be in flight.  ``p.forward(x, w, b)`` /
        ``p.backward(dy)`` are the same for the last forward only.  ``w`` is transformed
        again only when its values change.  ``p.algorithm`` is the algorithm
        in use and ``p.explain`` why; ``p.out_shape``, ``p.fft_shape`` and
        ``repr(p)`` describe the geometry.  Output length per axis:

        {sizes}
    Examples
    --------
    >>> import numpy as np, fftconv
    >>> p = fftconv.plan((2, 3, 16, 16), (4, 3, 5, 5), dtype=np.float32, padding="same")
    >>> p.out_shape
    (2, 4, 16, 16)
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((2, 3, 16, 16), dtype=np.float32)
    >>> w = rng.standard_normal((4, 3, 5, 5), dtype=np.float32)
    >>> y = p.forward(x, w)
    >>> dx, dw, db = p.backward(np.ones_like(y))
    >>> y.dtype, dx.shape, dw.shape, db.shape
    (dtype('float32'), (2, 3, 16, 16), (4, 3, 5, 5), (4,))
    """
    func = "fftconv.plan"
    keywords = layer_keywords(locals())
    arrays = check_like_argument(func, like)
    check_algorithm(func, algorithm, NAMES)
    check_runs_on(func, algorithm, arrays)
    compute, result = dtypes_for(check_dtype(func, dtype, arrays))
    x_shape, w_shape = check_shape_tuple(func, "x_shape", x_shape), check_shape_tuple(
        func, "w_shape", w_shape)
    layer = check_layer(func, x_shape, w_shape, real=compute.kind == "f", names=SHAPES,
                        **keywords)
    geom = layer.conv
    settings = get_settings()
    budget, timed, tiles = check_plan_options(func, max_workspace_bytes, measure, tile,
                                              algorithm, geom.ndim, settings, TILED)
    choice = choose_algorithm(func, geom, compute, algorithm, settings, timed, budget=budget,
                              arrays=arrays)
    return Plan(layer, result, choice.algorithm, settings, max_workspace_bytes=budget,
                explain=choice.explain, tile=tiles or choice.tile, arrays=arrays)


for _f in (forward, vjp, backward, plan):
    if _f.__doc__:  # None under python -OO
        _f.__doc__ = _f.__doc__.format(params=PARAMETERS, execution=EXECUTION,
                                       sizes=SIZES.replace("\n", "\n        "))
