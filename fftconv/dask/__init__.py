"""fftconv on Dask arrays: convolution layers and their gradients, block by block.

``pip install "fftconv[dask]"``; this subpackage imports dask, the core never
does.

>>> import fftconv.dask as fd                                   # doctest: +SKIP
>>> y = fd.forward(x, w, b, padding="same")         # x: dask array, any chunking  # doctest: +SKIP
>>> dx, dw, db = fd.backward(dy, x, w, padding="same")  # dx lazy, dw/db computed  # doctest: +SKIP
>>> y, pullback = fd.vjp(x, w, b, padding="same")           # doctest: +SKIP

The keywords, their defaults and their meaning are the numpy functions'
(every layer keyword of ``fftconv.forward``, ``algorithm``,
``max_workspace_bytes`` and ``measure``, applied to each block's call), and so
are the results, to CONVENTIONS §4's bounds.  Two things have no Dask
counterpart: ``transposed=True`` is a ``ValueError`` (use the matching
convolution's input gradient, ``fftconv.dask.backward``, or the numpy
functions), and there is no ``fftconv.dask.plan``: each task plans its own
block shape and keeps the engine in its process's engine cache (the
``engine_cache_bytes`` setting), which is what a plan would hold.  Modules:
``blocks`` (pure integer geometry: output blocks, windows, halo runs),
``tasks`` (what a task runs on a block: the block's own library, CuPy on a
GPU, and the stateless functions),
``graph`` (the explicit Dask graphs), ``inputs`` (arguments and chunks) and
``functions`` (the public functions).
It runs on Dask's threaded scheduler and on ``dask.distributed``, and on
Dask arrays of CuPy chunks, each block on its GPU (results of the same kind;
``w`` and ``b`` numpy or CuPy).
"""
from .functions import backward, forward, vjp
from .inputs import ChunkWarning

__all__ = ["forward", "backward", "vjp", "ChunkWarning"]
