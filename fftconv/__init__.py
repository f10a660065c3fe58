"""fftconv: N-d convolution layers and their gradients in the frequency domain.

>>> import fftconv
>>> y = fftconv.forward(x, w, b, padding="same")              # doctest: +SKIP
>>> dx, dw, db = fftconv.backward(dy, x, w, padding="same")   # doctest: +SKIP
>>> y, pullback = fftconv.vjp(x, w, b, padding="same")        # doctest: +SKIP
>>> p = fftconv.plan(x.shape, w.shape, dtype=x.dtype)         # doctest: +SKIP
>>> conv = fftconv.Conv2d(3, 8, 5, padding="same")             # doctest: +SKIP

Every entry point (these functions, ``fftconv.Conv``, ``fftconv.torch.conv``,
``fftconv.dask``) takes the same keyword-only layer keywords with the same
defaults (``fftconv.checks.LayerKeywords``).  The settings (``configure``,
``using``) include the engine cache's bounds; ``clear_caches`` empties it.

The package's layers, each importing only from those below it (checked by
``lint-imports`` and ``tests/test_architecture.py``; ``docs/architecture.md``):

1. integrations: ``torch``, ``dask``;
2. the public surface: ``api`` (functions), ``nn`` (``Conv`` layers);
3. ``planner`` (plans, pullbacks, the engine cache);
4. ``autoselect`` (``algorithm="auto"``), ``runner`` (transposed, padding
   modes and layout around an engine);
5. ``registry`` (the algorithm plugins by name);
6. ``algorithms`` (``fft``, ``direct``, ``overlap_add``: engine, cost terms,
   partition search);
7. ``protocol`` (the engine protocol and the plugin spec), ``transforms``
   (the only FFT calls), ``contraction``, ``resampling``;
8. ``budget``, ``costs``, ``runtime``, ``scaling``, ``timing``, ``wisdom``;
9. ``config`` (settings);
10. ``checks`` (argument rules), ``cachefile``;
11. ``geometry`` (integer arithmetic), ``_version``.
"""
from ._version import __version__
from .api import backward, forward, plan, vjp
from .config import configure, get_settings, using
from .nn import Conv, Conv1d, Conv2d, Conv3d
from .planner import Gradients, Plan, Pullback, clear_caches
from .transforms import PlanningNotice

__all__ = ["forward", "backward", "vjp", "plan", "Plan", "Pullback", "Gradients", "Conv",
           "Conv1d", "Conv2d", "Conv3d", "configure", "get_settings", "using", "clear_caches",
           "PlanningNotice", "__version__"]
