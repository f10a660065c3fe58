"""fftconv: N-d convolution layers and their gradients in the frequency domain.

>>> import fftconv
>>> y = fftconv.forward(x, w, b, padding="same")              # doctest: +SKIP
>>> dx, dw, db = fftconv.backward(dy, x, w, padding="same")   # doctest: +SKIP
>>> y, pullback = fftconv.vjp(x, w, b, padding="same")        # doctest: +SKIP
>>> p = fftconv.plan(x.shape, w.shape, dtype=x.dtype)         # doctest: +SKIP

Modules, one per kind of work: ``checks`` (arguments), ``geometry`` (integer
padding/size/crop arithmetic), ``transforms`` (the only FFT calls),
``contraction`` (channel sums per frequency), ``resampling`` (stride and
dilation on spectra), ``fftpath`` (the FFT algorithm), ``overlap_add``
(tiling), ``direct`` (the spatial-domain algorithm), ``protocol`` (what
every engine provides), ``engines`` (the one registry of algorithms),
``layer`` (transposed, padding modes and layout around an engine), ``layers``
(``Conv``, a numpy layer with weights, gradients and a tape), ``costs``
(the cost model), ``selection`` (``algorithm="auto"``), ``planner`` (plans,
pullbacks and caches),
``wisdom`` (FFTW wisdom), ``cachefile`` (the cache directory's files),
``config`` (settings) and ``api`` (the public functions).
"""
from . import direct
from .api import backward, forward, plan, vjp
from .config import configure, get_settings, using
from .engines import REGISTRY
from .layers import Conv
from .planner import ENGINE_CACHE, Gradients, Plan, Pullback

__all__ = ["forward", "backward", "vjp", "plan", "Plan", "Pullback", "Gradients", "Conv", "configure",
           "get_settings", "using", "direct", "ENGINE_CACHE", "REGISTRY"]
__version__ = "0.1.0"
