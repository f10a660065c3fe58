"""``fftconv.dask.forward``, ``backward`` and ``vjp``: the numpy functions on Dask arrays.

Each output block runs the ordinary stateless function on its window of the
input (``blocks``: a halo from the neighbouring chunks, padding at the true
array edges, ``padding="valid"`` on the window), so results equal
``fftconv.forward``/``backward`` to the accuracy bounds of CONVENTIONS §4, for
any chunking of the batch and spatial axes.  The blocks run on their chunks'
library and device (``fftconv.backends``): a Dask array of CuPy chunks is
convolved block by block on the GPU, and every result is of that kind.
"""
from __future__ import annotations

import dask
import dask.array as da

from typing import Callable, Optional, Tuple

from numpy.typing import ArrayLike

from .. import api as core
from ..checks import (ALGORITHM, DEFAULTS, Ints, Layout, Padding, PaddingMode, keywords_checked,
                      layer_keywords)
from ..docstrings import EXECUTION, PARAMETERS, SIZES
from ..backends import arrays_of
from ..runner import weights_first, weights_last
from ..planner import Gradients
from . import graph
from .blocks import layer_blocks
from .inputs import (channel_axis, check_call, check_dask, check_kinds, matching_chunks,
                     whole_channels)

_SIZES = SIZES.replace("\n", "\n        ")

_DASK = """
        Each block's call runs with them: ``max_workspace_bytes`` bounds each
        task's buffers, ``measure`` times auto's candidates per block shape."""


_CHUNKS = """Notes
    -----
    Choosing chunks: each task holds one block's window (its input chunk plus a
    halo of about the effective kernel ``d*(k-1)+1`` per spatial axis), its
    output block and the engine's workspace
    (``fftconv.plan(window shape, w.shape, ...).workspace_bytes``).  The
    workspace is often the largest: it holds the ``C_out * C_in / groups`` weight
    spectra at the window's FFT size (154 MB for a 4-to-4-channel 5^3 kernel
    on 64^3 chunks, against a 5 MB window), and it stays in the per-process
    engine cache after the task (the ``engine_cache_bytes`` setting bounds it),
    where Dask counts it as unmanaged memory.  Pick spatial chunks several times
    the kernel (the halo is then a small overhead; smaller chunks work, but a
    window then reads many blocks) and small enough that ``threads per worker *
    (window + output + workspace)`` fits well inside a worker's memory.  Keep the
    channel axes whole (a chunked channel axis is rechunked, with a
    :class:`ChunkWarning`); the batch axis may be chunked freely.  Equal chunks
    give equal windows, so a worker plans each block shape once and reuses it
    (the stateless functions' per-process engine cache); regular chunks give a
    few shapes (an axis's first, interior and last blocks).
"""


def _prepare(func, x, w, others, algorithm, options, max_workspace_bytes, measure):
    """Checked and converted operands: ``(layer, compute dtype, result dtype, x
    channels-first, w channels-first, settings, block-call keywords, axes)``.
    ``w`` stays in its own library (numpy, or the chunks'): each task moves it to
    its block's."""
    layer, compute, result, w, settings = check_call(func, x, w, others, algorithm, options,
                                                     max_workspace_bytes, measure)
    x = whole_channels(func, "x", x, channel_axis(layer.layout, x.ndim))
    x_cf = da.moveaxis(x, -1, 1) if layer.layout == "channels_last" else x
    x_cf = x_cf.astype(compute, copy=False)
    # a copy: the graph is lazy, and the caller may change w in place before computing it
    arrays = arrays_of(w)
    w_cf = arrays.copy(arrays.astype(weights_first(arrays, w, layer.layout), compute))
    conv = layer.conv
    keywords = dict(stride=conv.stride, dilation=conv.dilation, groups=conv.groups,
                    flip_kernel=conv.flip_kernel, algorithm=algorithm)
    return (layer, compute, result, x_cf, w_cf, settings, keywords,
            layer_blocks(layer, x_cf.chunks[2:]))


def _shown(a, layer, result):
    """A channels-first dask array in the caller's layout and dtype."""
    a = a.astype(result, copy=False)
    return da.moveaxis(a, 1, -1) if layer.layout == "channels_last" else a


@keywords_checked("fftconv.dask.forward")
def forward(x, w: ArrayLike, b: Optional[ArrayLike] = None, *,
            padding: Padding = DEFAULTS.padding, stride: Ints = DEFAULTS.stride,
            dilation: Ints = DEFAULTS.dilation, groups: int = DEFAULTS.groups,
            flip_kernel: bool = DEFAULTS.flip_kernel, transposed: bool = DEFAULTS.transposed,
            output_padding: Ints = DEFAULTS.output_padding,
            padding_mode: PaddingMode = DEFAULTS.padding_mode,
            layout: Layout = DEFAULTS.layout, algorithm: str = ALGORITHM,
            max_workspace_bytes: Optional[int] = None, measure: Optional[bool] = None):
    """Forward pass of an N-d convolution layer on a Dask array: ``y = conv(x, w) + b``.

    Parameters
    ----------
    x : dask.array.Array, shape ``(N, C_in, *spatial)``
        Input, any chunking of the batch and spatial axes.
    w : array_like, shape ``(C_out, C_in // groups, *kernel)``
        Weights, a numpy array or an array of ``x``'s chunks' kind (a CuPy array
        for CuPy chunks), placed in the graph once, shipped once per worker, and
        moved to each block's library and device by its task.
    b : array_like, shape ``(C_out,)``, optional
        Bias, as ``w``.{params}{dask}

    Returns
    -------
    y : dask.array.Array, shape ``(N, C_out, *out)``
        Lazy, with chunks (and ``_meta``) of ``x``'s chunks' kind.  Its batch chunks
        are ``x``'s; along each spatial axis output ``i`` is in the block of input
        sample ``i * stride`` (a "same" layer with stride 1 keeps ``x``'s chunks).
        Output length per axis:

        {sizes}
    {chunks}
    Examples
    --------
    >>> import numpy as np, dask.array as da, fftconv, fftconv.dask as fd
    >>> x = da.from_array(np.arange(16.0).reshape(1, 1, 16), chunks=(1, 1, 5))
    >>> w = np.array([[[1.0, 0.0, -1.0]]])
    >>> y = fd.forward(x, w, padding="same")
    >>> y.chunks
    ((1,), (1,), (5, 5, 5, 1))
    >>> bool(np.allclose(y.compute(), fftconv.forward(x.compute(), w, padding="same")))
    True
    """
    func = "fftconv.dask.forward"
    return _forward(func, x, w, b, algorithm, max_workspace_bytes, measure,
                    layer_keywords(locals()))[0]


def _forward(func, x, w, b, algorithm, max_workspace_bytes, measure, options):
    b_checked = None if b is None else core.check_array(func, "b", b)
    lay, compute, result, x_cf, w_cf, settings, keywords, axes = _prepare(
        func, x, w, [b_checked], algorithm, options, max_workspace_bytes, measure)
    check_kinds(func, x, b=b_checked)
    bias = core.check_bias(func, b_checked, lay.out_channels)
    if bias is not None:    # a copy, as w's
        arrays = arrays_of(bias)
        bias = arrays.copy(arrays.astype(bias, compute))
    y = graph.forward(x_cf, axes, w_cf, bias, keywords, settings)
    return _shown(y, lay, result), x


@keywords_checked("fftconv.dask.backward")
def backward(dy, x, w: ArrayLike, *,
             padding: Padding = DEFAULTS.padding, stride: Ints = DEFAULTS.stride,
             dilation: Ints = DEFAULTS.dilation, groups: int = DEFAULTS.groups,
             flip_kernel: bool = DEFAULTS.flip_kernel, transposed: bool = DEFAULTS.transposed,
             output_padding: Ints = DEFAULTS.output_padding,
             padding_mode: PaddingMode = DEFAULTS.padding_mode,
             layout: Layout = DEFAULTS.layout, algorithm: str = ALGORITHM,
             max_workspace_bytes: Optional[int] = None, measure: Optional[bool] = None) -> Gradients:
    """Gradients of the layer on Dask arrays: ``dx, dw, db`` for output gradient ``dy``.

    Parameters
    ----------
    dy : dask.array.Array, shape ``(N, C_out, *out)``
        Gradient of the loss with respect to ``y``, chunked as :func:`forward`
        chunks ``y`` (other chunks are rechunked, with a :class:`ChunkWarning`).
    x : dask.array.Array
        The forward pass's input.
    w : array_like
        The forward pass's weights.{params}{dask}

    Returns
    -------
    Gradients
        ``(dx, dw, db)``: ``dx`` a lazy dask array chunked as ``x``, computed block by
        block from ``dy`` with its own halo (a transposed convolution, the padding
        halo folded back at the array's edges); ``dw`` and ``db`` arrays of ``x``'s
        chunks' kind (numpy for numpy chunks, CuPy for CuPy chunks), the
        tree-reduced sums of one partial gradient per output block, computed now
        (one pass over ``x`` and ``dy``; summed in double precision).  Computing ``dx``
        later reads ``dy`` again: persist ``dy`` first if it is expensive.

    {chunks}
    Examples
    --------
    >>> import numpy as np, dask.array as da, fftconv, fftconv.dask as fd
    >>> x = da.from_array(np.arange(16.0).reshape(1, 1, 16), chunks=(1, 1, 5))
    >>> w = np.array([[[1.0, 0.0, -1.0]]])
    >>> y = fd.forward(x, w)                 # "valid": the last input chunk has no output
    >>> y.chunks
    ((1,), (1,), (5, 5, 4, 0))
    >>> dx, dw, db = fd.backward(da.ones_like(y), x, w)
    >>> dx.chunks, dw.round(12).tolist(), db
    (((1,), (1,), (5, 5, 5, 1)), [[[91.0, 105.0, 119.0]]], array([14.]))
    """
    func = "fftconv.dask.backward"
    options = layer_keywords(locals())
    check_dask(func, "dy", dy)
    check_kinds(func, check_dask(func, "x", x), dy=dy)
    lay, compute, result, x_cf, w_cf, settings, keywords, axes = _prepare(
        func, x, w, [dy], algorithm, options, max_workspace_bytes, measure)
    core.check_shape(func, "dy", dy, lay.y_shape, "the shape of forward's output")
    dy = whole_channels(func, "dy", dy, channel_axis(lay.layout, dy.ndim))
    y_chunks = (x_cf.chunks[0], (lay.out_channels,)) + tuple(a.out_chunks for a in axes)
    dy_first = da.moveaxis(dy, -1, 1) if lay.layout == "channels_last" else dy
    dy_cf = matching_chunks(func, dy_first, y_chunks)
    dy_cf = dy_cf.astype(compute, copy=False)
    dw, db = dask.compute(*graph.weight_grads(dy_cf, x_cf, axes, w_cf, keywords, settings))
    dx = graph.input_grad(dy_cf, x_cf.chunks, axes, w_cf, keywords, settings)
    arrays = arrays_of(dw)     # the chunks' library: the partial sums were made there
    return Gradients(_shown(dx, lay, result),
                     weights_last(arrays, arrays.astype(dw, result), lay.layout),
                     arrays.astype(db, result))


@keywords_checked("fftconv.dask.vjp")
def vjp(x, w: ArrayLike, b: Optional[ArrayLike] = None, *,
        padding: Padding = DEFAULTS.padding, stride: Ints = DEFAULTS.stride,
        dilation: Ints = DEFAULTS.dilation, groups: int = DEFAULTS.groups,
        flip_kernel: bool = DEFAULTS.flip_kernel, transposed: bool = DEFAULTS.transposed,
        output_padding: Ints = DEFAULTS.output_padding,
        padding_mode: PaddingMode = DEFAULTS.padding_mode,
        layout: Layout = DEFAULTS.layout, algorithm: str = ALGORITHM,
        max_workspace_bytes: Optional[int] = None, measure: Optional[bool] = None) -> Tuple[object, Callable[..., Gradients]]:
    """Forward pass and its pullback on Dask arrays: ``y, pullback = vjp(x, w, b, padding=...)``.

    ``y`` is :func:`forward`'s; ``pullback(dy)`` is :func:`backward` of ``dy``
    for this call's ``x`` (the same lazy array) and ``w`` (a copy taken now, so
    later in-place changes do not matter).  Nothing is kept between the two:
    a Dask array's spectra would be the size of the volume, so the pullback
    reads ``x`` again.

    Parameters
    ----------
    x, w, b
        As for :func:`forward`.{params}{dask}

    Returns
    -------
    y : dask.array.Array
        As :func:`forward` returns it.  Output length per axis:

        {sizes}
    pullback : callable
        ``pullback(dy)`` -> ``Gradients(dx, dw, db)``, as :func:`backward`.

    {chunks}
    Examples
    --------
    >>> import numpy as np, dask.array as da, fftconv.dask as fd
    >>> x = da.from_array(np.arange(16.0).reshape(1, 1, 16), chunks=(1, 1, 5))
    >>> y, pullback = fd.vjp(x, np.array([[[1.0, 0.0, -1.0]]]), padding="same")
    >>> dx, dw, db = pullback(da.ones_like(y))
    >>> db
    array([16.])
    """
    func = "fftconv.dask.vjp"
    options = layer_keywords(locals())
    y, x_used = _forward(func, x, w, b, algorithm, max_workspace_bytes, measure, options)
    kept = arrays_of(w)
    w_kept = kept.copy(w)  # the weights of this call (in their library), whatever happens to w

    def pullback(dy) -> Gradients:
        return backward(dy, x_used, w_kept, algorithm=algorithm,
                        max_workspace_bytes=max_workspace_bytes, measure=measure, **options)
    return y, pullback


for _f in (forward, backward, vjp):
    if _f.__doc__:  # None under python -OO
        _f.__doc__ = _f.__doc__.format(params=PARAMETERS, sizes=_SIZES,
                                       dask=EXECUTION + _DASK, chunks=_CHUNKS)
