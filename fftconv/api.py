"""The public functions: check everything, then hand the work to a plan.

=========  ==========================  =======================================
padding    per-axis ``(lo, hi)``       output length (``ke = d*(k-1)+1``)
=========  ==========================  =======================================
"valid"    ``(0, 0)``                  ``(n - ke) // s + 1``
"same"     see CONVENTIONS §2          ``ceil(n / s)``
"full"     ``(ke-1, ke-1)``            ``(n + ke - 2) // s + 1``
int ``p``  ``(p, p)``                  ``(n + 2p - ke) // s + 1``
pairs      ``(lo, hi)``                ``(n + lo + hi - ke) // s + 1``
=========  ==========================  =======================================
"""
from __future__ import annotations

import numpy as np

from .checks import (check_algorithm, check_array, check_bias, check_ints, check_layer, check_shape,
                     dtypes_for)
from .config import get_settings
from .planner import Gradients, Plan, choose_algorithm, engine_for

_SIZES = __doc__[__doc__.index("====="):]

_PARAMETERS = """
    padding : {"valid", "same", "full"}, int, sequence of int or of (lo, hi) pairs
        Zero padding per spatial axis.  ``"same"`` gives ``ceil(n / stride)``
        outputs; for even kernels the extra pad goes after the input for
        correlation (like PyTorch/TF) and before it with ``flip_kernel=True``
        (like ``scipy.signal.convolve(mode="same")``).
    stride, dilation : int or sequence of int, optional
        Per spatial axis, each >= 1.
    groups : int, optional
        Split channels into ``groups`` independent convolutions; must divide
        ``C_in`` and ``C_out`` (``groups == C_in`` is depthwise).
    flip_kernel : bool, optional
        False (default): cross-correlation, as ``torch.nn.functional.conv*d``.
        True: true convolution, as ``scipy.signal.convolve``.
    algorithm : {"auto", "fft", "direct", "overlap_add"}, optional
        ``"auto"`` (default) picks the fastest of the others for this layer by
        a calibrated cost model (or by timing, see ``measure``); ``"fft"``
        computes in the frequency domain; ``"direct"`` runs the vectorised
        spatial-domain implementation; ``"overlap_add"`` tiles the output and
        runs a small FFT per tile.  All give the same results."""


def _prepare(func, x, w, arrays, padding, stride, dilation, groups, flip_kernel, algorithm):
    """Check every argument; returns ``(geometry, compute dtype, result dtype)``."""
    check_algorithm(func, algorithm)
    compute, result = dtypes_for(func, x, w, *arrays)
    geom = check_layer(func, x.shape, w.shape, padding=padding, stride=stride, dilation=dilation,
                       groups=groups, flip_kernel=flip_kernel, real=compute.kind == "f")
    return geom, compute, result


def _plan_for(func, geom, compute, result, algorithm) -> Plan:
    """A one-use plan; its engine comes from the bounded cache."""
    settings = get_settings()
    choice = choose_algorithm(func, geom, compute, algorithm, settings, settings.measure)
    engine = engine_for(func, geom, compute, choice.algorithm, settings, choice.tile)
    return Plan(geom, result, choice.algorithm, settings, engine=engine, explain=choice.explain)


def _run(plan: Plan, work):
    """Run ``work(plan)`` holding the plan's shared engine, if it has one."""
    engine = plan._engine
    if engine is None:
        return work(plan)
    with engine.lock:
        return work(plan)


def forward(x, w, b=None, *, padding="valid", stride=1, dilation=1, groups=1,
            flip_kernel=False, algorithm="auto"):
    """N-d convolution layer forward pass: ``y = conv(x, w) + b``.

    Parameters
    ----------
    x : array_like, shape ``(N, C_in, *spatial)``
        Input, any number of spatial axes.
    w : array_like, shape ``(C_out, C_in // groups, *kernel)``
        Weights, as many spatial axes as ``x``.
    b : array_like, shape ``(C_out,)``, optional
        Bias.{params}

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

    Examples
    --------
    >>> import numpy as np, fftconv
    >>> x = np.arange(8.0).reshape(1, 1, 8)
    >>> w = np.array([[[1.0, 0.0, -1.0]]])
    >>> fftconv.forward(x, w, padding="valid").round(12)
    array([[[-2., -2., -2., -2., -2., -2.]]])
    """
    func = "fftconv.forward"
    x, w = check_array(func, "x", x), check_array(func, "w", w)
    b = None if b is None else check_array(func, "b", b)
    geom, compute, result = _prepare(func, x, w, [] if b is None else [b],
                                     padding, stride, dilation, groups, flip_kernel, algorithm)
    b = check_bias(func, b, geom.out_channels)
    x, w = x.astype(compute, copy=False), w.astype(compute, copy=False)
    b = None if b is None else b.astype(compute, copy=False)
    plan = _plan_for(func, geom, compute, result, algorithm)
    y = _run(plan, lambda p: p.run_forward(x, w, b, for_backward=False))
    return y.astype(result, copy=False)


def backward(dy, x, w, *, padding="valid", stride=1, dilation=1, groups=1,
             flip_kernel=False, algorithm="auto"):
    """Gradients of the layer: ``dx, dw, db`` for output gradient ``dy``.

    Parameters
    ----------
    dy : array_like, shape ``(N, C_out, *out)``
        Gradient of the loss with respect to ``y``.
    x, w : array_like
        The forward pass's input and weights.{params}

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
    dy = check_array(func, "dy", dy)
    x, w = check_array(func, "x", x), check_array(func, "w", w)
    geom, compute, result = _prepare(func, x, w, [dy], padding, stride, dilation, groups,
                                     flip_kernel, algorithm)
    check_shape(func, "dy", dy, geom.y_shape, "the shape of forward's output")
    dy, x, w = (a.astype(compute, copy=False) for a in (dy, x, w))
    plan = _plan_for(func, geom, compute, result, algorithm)

    def gradients(p: Plan):
        p.remember(x, w, copy=False)
        return p.run_backward(dy)

    return Gradients(*(a.astype(result, copy=False) for a in _run(plan, gradients)))


def plan(x_shape, w_shape, *, dtype, padding="valid", stride=1, dilation=1, groups=1,
         flip_kernel=False, algorithm="auto", max_workspace_bytes=None, measure=None,
         tile=None) -> Plan:
    """Plan a layer once and run many training steps with it.

    Parameters
    ----------
    x_shape, w_shape : tuple of int
        Shapes of ``x`` ``(N, C_in, *spatial)`` and ``w`` ``(C_out, C_in // groups, *kernel)``.
    dtype : dtype
        dtype of ``x`` and ``w`` (float16/32/64, complex64/128).{params}
    max_workspace_bytes : int, optional
        Bound on the FFT buffers (``p.workspace_bytes``); above it the batch is
        processed in chunks, with the same results.  Defaults to the
        ``max_workspace_bytes`` setting (no bound).
    tile : sequence of int, optional
        With ``algorithm="overlap_add"``: output samples per tile and axis
        (default: the cost model's best).
    measure : bool, optional
        With ``algorithm="auto"``: time the candidates once for this geometry
        (and remember the winner across processes) instead of trusting the
        cost model.  Defaults to the ``measure`` setting (False).

    Returns
    -------
    Plan
        ``p.forward(x, w, b)`` returns ``y`` and keeps the spectra of ``x`` and
        ``w``; ``p.backward(dy)`` reuses them, so a training step costs three
        forward and three inverse batched transforms.  ``w`` is transformed
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
    check_algorithm(func, algorithm)
    try:
        if dtype is None:
            raise TypeError
        dtype = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{func}: dtype must be a numpy dtype, got dtype={dtype!r}") from None
    check_array(func, "dtype", np.empty(0, dtype))
    compute, result = dtypes_for(func, np.empty(0, dtype))
    shapes = {}
    for name, shape in (("x_shape", x_shape), ("w_shape", w_shape)):
        if isinstance(shape, (str, bytes)) or not hasattr(shape, "__len__") or not all(
                isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))
                for v in shape):
            raise TypeError(f"{func}: {name} must be a tuple of ints, got {name}={shape!r}")
        if any(v < 0 for v in shape):
            raise ValueError(f"{func}: {name} must not have negative sizes, got {name}={shape!r}")
        shapes[name] = tuple(int(v) for v in shape)
    x_shape, w_shape = shapes["x_shape"], shapes["w_shape"]
    geom = check_layer(func, x_shape, w_shape, padding=padding, stride=stride, dilation=dilation,
                       groups=groups, flip_kernel=flip_kernel, real=compute.kind == "f")
    settings = get_settings()
    if max_workspace_bytes is None:
        max_workspace_bytes = settings.max_workspace_bytes
    elif (not isinstance(max_workspace_bytes, (int, np.integer))
          or isinstance(max_workspace_bytes, bool) or max_workspace_bytes < 1):
        raise ValueError(f"{func}: max_workspace_bytes must be None or an int >= 1, "
                         f"got max_workspace_bytes={max_workspace_bytes!r}")
    if measure is None:
        measure = settings.measure
    elif not isinstance(measure, bool):
        raise TypeError(f"{func}: measure must be a bool, got measure={measure!r}")
    if tile is not None:
        if algorithm != "overlap_add":
            raise ValueError(f"{func}: tile is for algorithm='overlap_add', "
                             f"got algorithm={algorithm!r}")
        tile = check_ints(func, "tile", tile, geom.ndim, 1)
    choice = choose_algorithm(func, geom, compute, algorithm, settings, measure)
    return Plan(geom, result, choice.algorithm, settings, max_workspace_bytes=max_workspace_bytes,
                explain=choice.explain, tile=tile or choice.tile)


for _f in (forward, backward, plan):
    _f.__doc__ = _f.__doc__.format(params=_PARAMETERS, sizes=_SIZES.replace("\n", "\n        "))
