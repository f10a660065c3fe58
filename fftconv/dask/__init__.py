"""fftconv on Dask arrays: convolution layers and their gradients, block by block.

``pip install "fftconv[dask]"``; this subpackage imports dask, the core never
does.

>>> import fftconv.dask as fd                                   # doctest: +SKIP
>>> y = fd.forward(x, w, b, padding="same")         # x: dask array, any chunking  # doctest: +SKIP
>>> dx, dw, db = fd.backward(dy, x, w, padding="same")  # dx lazy, dw/db numpy  # doctest: +SKIP
>>> y, pullback = fd.vjp(x, w, b, padding="same")           # doctest: +SKIP

The keywords are the numpy functions' (``padding`` in every form, ``stride``,
``dilation``, ``groups``, ``flip_kernel``, ``padding_mode``, ``layout``,
``algorithm``), and so are the results, to CONVENTIONS §4's bounds;
``transposed=True`` is not supported here.  Modules: ``blocks`` (pure integer
geometry: output blocks, windows, halo runs), ``tasks`` (what a task runs on a
block: numpy and the stateless functions), ``graph`` (the explicit Dask
graphs), ``checks`` (arguments and chunks) and ``api`` (the public functions).
It runs on Dask's threaded scheduler and on ``dask.distributed``.
"""
from .functions import backward, forward, vjp
from .inputs import ChunkWarning

__all__ = ["forward", "backward", "vjp", "ChunkWarning"]
