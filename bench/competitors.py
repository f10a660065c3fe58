"""The implementations timed side by side, each as one training step.

A training step is the layer's forward pass ``y = conv(x, w) + b`` followed by
its backward pass ``(dx, dw)`` for a fixed output gradient ``dy``:

``fft``
    fftconv's FFT path through a plan: ``p.forward(x, w, b)`` then
    ``p.backward(dy)`` (three forward and three inverse batched transforms).
``floor``
    The transform floor: only the six batched FFTW transforms such a step
    needs, at the plan's FFT size, each a plain ``pyfftw.FFTW`` over aligned,
    contiguous, batch-first buffers (r2c of ``x``, ``w``, ``dy``; c2r of
    ``y``, ``dx``, ``dw``), with the same threads and planner effort as
    fftconv.  With no pyFFTW, ``scipy.fft`` with ``workers``.
``direct``
    fftconv's spatial-domain path (``algorithm="direct"``).
``overlap_add``
    fftconv's overlap-add path (``algorithm="overlap_add"``, the cost
    model's output tile): small FFTs over output tiles.
``auto``
    A plan with ``algorithm="auto"`` (the library default): whichever of the
    three above the cost model picks (it times them instead when the
    ``measure`` setting is on, ``FFTCONV_MEASURE=1``); the pick is reported
    as :attr:`Prepared.choice`.
``torch``
    PyTorch on the CPU: ``torch.nn.functional.conv{1,2,3}d`` forward and
    ``torch.autograd.grad`` for the gradients.
``torchfft``
    The long-convolution reference of sequence models (H3, Hyena,
    FlashFFTConv's baseline), for depthwise causal 1-D layers with the kernel
    flipped (a true convolution): ``y = irfft(rfft(x, n=2L) * rfft(k, n=2L),
    n=2L)[..., :L] + b`` with ``torch.fft`` and ``torch.autograd.grad`` for the
    gradients.  Not run on other layers.
``scipy``
    A loop over channel pairs calling ``scipy.signal.fftconvolve``, the way
    straightforward code does it: ``y[n,o] += corr(x[n,c], w[o,c])`` ("valid"),
    ``dx[n,c] += conv(dy[n,o], w[o,c])`` ("full") and
    ``dw[o,c] += corr(x[n,c], dy[n,o])`` ("valid").

Each competitor has a ``prepare(case, data, threads)`` returning a
:class:`Prepared` step and an ``estimate(case)`` of its seconds per step, used
only to skip hopeless runs (see :data:`RATES`).  :data:`OWN` names fftconv's
own algorithms and :data:`BEST` the fastest of them in a case.
"""
from __future__ import annotations

import dataclasses
import itertools
from math import log2, prod
from typing import Callable, Dict, NamedTuple, Optional

import numpy as np
import scipy.fft
import scipy.signal

import fftconv
from fftconv.algorithms import overlap_add
from fftconv.registry import candidates

from .timing import torch_available

#: Rough sustained rates on a 2-core machine, for the skip estimates only:
#: GFLOP/s of a direct step (2 flops per multiply-add, 3 passes) and of the
#: FFTs inside ``fftconvolve`` (plus a fixed cost per call).  On the 2-core
#: reference VM fftconv's direct path ran 40-100 GFLOP/s and PyTorch 30-75 on
#: the suites' layers: the estimates err on the long side.
RATES = {"direct": 20.0, "torch": 10.0, "scipy": 5.0, "scipy_call_s": 20e-6}

#: fftconv's own algorithms, the candidates of ``algorithm="auto"``.
OWN = fftconv.registry.NAMES
#: Pseudo-key of ratios and targets: the fastest of :data:`OWN` measured in a case.
BEST = "best"


class Outputs(NamedTuple):
    """What a step computes that is compared across competitors."""

    y: np.ndarray
    dx: np.ndarray
    dw: np.ndarray


class Prepared(NamedTuple):
    """A ready step: ``run(w) -> Outputs or None``, untimed ``reset()``, for an
    ``"auto"`` plan the algorithm it chose, and ``same_as``: the key of another
    competitor whose computation this one runs (a single overlap-add tile runs
    the FFT path's engine), so that the two are not ranked against each other."""

    run: Callable
    reset: Callable[[], None] = lambda: None
    choice: Optional[str] = None
    same_as: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class Competitor:
    """One implementation: a key (table column), a title, and its two functions."""

    key: str
    title: str
    prepare: Callable
    estimate: Callable = lambda case: 0.0
    checked: bool = True  # its outputs are compared with the FFT path's
    first_call_counts: bool = False  # see bench.timing.time_step
    traced: bool = False  # its peak memory is measured (tracemalloc)


def _flip(ndim: int) -> tuple:
    return (slice(None, None, -1),) * ndim


def _bias_grad_axes(ndim: int) -> tuple:
    return (0,) + tuple(range(2, ndim + 2))


# -- fftconv ----------------------------------------------------------------------------------
def _plan_step(algorithm: str):
    """``prepare`` for an fftconv plan of the given algorithm (``"auto"`` reports its pick)."""

    def prepare(case, data, threads) -> Prepared:
        p = fftconv.plan(case.x_shape, case.w_shape, dtype=data.x.dtype, algorithm=algorithm,
                         max_workspace_bytes=case.max_workspace_bytes, **case.layer)

        def run(w):
            y = p.forward(data.x, w, data.b)
            dx, dw, _ = p.backward(data.dy)
            return Outputs(y, dx, dw)

        single = algorithm == "overlap_add" and overlap_add.single_tile(p.geometry, p.tile)
        return Prepared(run, choice=p.algorithm if algorithm == "auto" else None,
                        same_as="fft" if single else None)

    return prepare


def _direct_seconds(case, rate: float) -> float:
    """Three direct passes of ``case.macs`` multiply-adds at ``rate`` GFLOP/s."""
    return 6.0 * case.macs / (rate * 1e9)


def _winograd_seconds(case) -> float:
    """The skip estimate: infinite outside Winograd's scope (its plan refuses such a
    layer: it prices it infinite), else a direct step's."""
    geom = fftconv.plan(case.x_shape, case.w_shape, dtype=np.float32, algorithm="direct",
                        **case.layer).geometry
    in_scope = "winograd" in candidates(geom, np.float32)
    return _direct_seconds(case, RATES["direct"]) if in_scope else float("inf")


# -- PyTorch ----------------------------------------------------------------------------------
def torch_padding(case):
    """``padding=`` for torch's functional convolution of ``case``, or None where
    torch has no equivalent call (non-zero padding modes, strided "same",
    transposed string paddings)."""
    opts = case.opts
    stride, dilation = opts.get("stride", 1), opts.get("dilation", 1)
    if opts.get("padding_mode", "zeros") != "zeros" or case.padding == "causal":
        return None
    if opts.get("transposed", False):
        return case.padding if not isinstance(case.padding, str) else (
            0 if case.padding == "valid" else None)
    if case.padding == "full":
        dil = dilation if isinstance(dilation, tuple) else (dilation,) * case.ndim
        return tuple(d * (k - 1) for d, k in zip(dil, case.kernel))
    if case.padding == "same" and stride not in (1, (1,) * case.ndim):
        return None
    return case.padding


def _torch_seconds(case) -> float:
    """The skip estimate: infinite where :func:`torch_padding` has no torch call."""
    return float("inf") if torch_padding(case) is None else _direct_seconds(case, RATES["torch"])


def _torch_prepare(case, data, threads) -> Prepared:
    import torch
    opts = case.opts
    transposed = opts.get("transposed", False)
    conv = getattr(torch.nn.functional,
                   f"conv_transpose{case.ndim}d" if transposed else f"conv{case.ndim}d")
    last = case.channels_last
    nd = case.ndim

    def first(a):  # channels-last arrays as torch's channels-first
        return np.ascontiguousarray(np.moveaxis(a, -1, 1)) if last else a

    def back(a):
        return np.moveaxis(a, 1, -1) if last else a

    def w_first(w):  # HWIO (*k, Cg, O) -> (O, Cg, *k)
        return np.ascontiguousarray(np.moveaxis(w, (nd + 1, nd), (0, 1))) if last else w

    def w_back(w):
        return np.moveaxis(w, (0, 1), (nd + 1, nd)) if last else w

    x = torch.from_numpy(first(data.x)).requires_grad_(True)
    b = torch.from_numpy(data.b).requires_grad_(True)
    dy = torch.from_numpy(first(data.dy))
    layer = dict(stride=opts.get("stride", 1), dilation=opts.get("dilation", 1),
                 groups=opts.get("groups", 1), padding=torch_padding(case))

    def run(w):
        wt = torch.from_numpy(w_first(w)).requires_grad_(True)
        y = conv(x, wt, b, **layer)
        dx, dw, _ = torch.autograd.grad(y, (x, wt, b), dy)
        return Outputs(back(y.detach().numpy()), back(dx.numpy()), w_back(dw.numpy()))

    return Prepared(run)


# -- the torch.fft long-convolution reference -------------------------------------------------
def long_convolution(case) -> bool:
    """A depthwise causal true convolution along one axis (one kernel per channel,
    stride and dilation 1): what the ``torch.fft`` reference computes."""
    opts = case.opts
    return (case.ndim == 1 and case.padding == "causal" and bool(opts.get("flip_kernel"))
            and opts.get("groups", 1) == case.in_channels == case.out_channels
            and opts.get("stride", 1) in (1, (1,)) and opts.get("dilation", 1) in (1, (1,))
            and not opts.get("transposed") and not case.channels_last
            and opts.get("padding_mode", "zeros") == "zeros")


def _torchfft_seconds(case) -> float:
    return 0.0 if long_convolution(case) else float("inf")


def _torchfft_prepare(case, data, threads) -> Prepared:
    import torch
    length, n = case.size[0], 2 * case.size[0]
    x = torch.from_numpy(data.x).requires_grad_(True)
    b = torch.from_numpy(data.b).requires_grad_(True)
    dy = torch.from_numpy(data.dy)

    def run(w):
        k = torch.from_numpy(w[:, 0]).requires_grad_(True)          # (H, K), K <= L
        y = torch.fft.irfft(torch.fft.rfft(x, n=n) * torch.fft.rfft(k, n=n), n=n)[..., :length]
        y = y + b[:, None]
        dx, dk, _ = torch.autograd.grad(y, (x, k, b), dy)
        return Outputs(y.detach().numpy(), dx.numpy(), dk.numpy()[:, None])

    return Prepared(run)


# -- the scipy.signal loop --------------------------------------------------------------------
def _scipy_prepare(case, data, threads) -> Prepared:
    x, b, dy = data.x, data.b, data.dy
    flip = _flip(case.ndim)
    pairs = list(itertools.product(range(case.batch), range(case.out_channels),
                                   range(case.in_channels)))

    def run(w):
        y = np.zeros(case.y_shape, x.dtype)
        dx, dw = np.zeros_like(x), np.zeros_like(w)
        for n, o, c in pairs:
            y[n, o] += scipy.signal.fftconvolve(x[n, c], w[o, c][flip], mode="valid")
        y += b.reshape((-1,) + (1,) * case.ndim)
        for n, o, c in pairs:
            dx[n, c] += scipy.signal.fftconvolve(dy[n, o], w[o, c], mode="full")
            dw[o, c] += scipy.signal.fftconvolve(x[n, c], dy[n, o][flip], mode="valid")
        dy.sum(axis=_bias_grad_axes(case.ndim))  # db, for a like-for-like step
        return Outputs(y, dx, dw)

    return Prepared(run)


def _scipy_seconds(case) -> float:
    """``3 N O C`` calls, each three real FFTs of the full-convolution size; infinite
    (never run) for padded layers, which the loop does not implement."""
    if not case.plain or case.padding != "valid":
        return float("inf")
    length = prod(scipy.fft.next_fast_len(n + k - 1, real=True)
                  for n, k in zip(case.size, case.kernel))
    per_call = 7.5 * length * log2(max(length, 2)) / (RATES["scipy"] * 1e9)
    calls = 3 * case.batch * case.out_channels * case.in_channels
    return calls * (per_call + RATES["scipy_call_s"])


# -- the transform floor ----------------------------------------------------------------------
def floor_batches(geom) -> Dict[str, tuple]:
    """Batch size and direction (inverse or not) of each of the six transforms of one
    step (``bench.gpu`` times the same six with cuFFT)."""
    n, c, o = geom.batch, geom.in_channels, geom.out_channels
    cw = o * (c // geom.groups)
    return {"x": (n * c, False), "w": (cw, False), "dy": (n * o, False),
            "y": (n * o, True), "dx": (n * c, True), "dw": (cw, True)}


def _pyfftw_transform(batch, fft_shape, dtype, inverse, threads):
    """An FFTW r2c/c2r over ``(batch, *fft_shape)``; returns ``(execute, refill)``."""
    import pyfftw
    settings = fftconv.get_settings()
    spectrum = fft_shape[:-1] + (fft_shape[-1] // 2 + 1,)
    real = pyfftw.empty_aligned((batch,) + tuple(fft_shape), dtype=dtype)
    cplx = pyfftw.empty_aligned((batch,) + spectrum, dtype=np.result_type(dtype, np.complex64))
    src, dst = (cplx, real) if inverse else (real, cplx)
    flags = (settings.planner_effort,) + (("FFTW_DESTROY_INPUT",) if inverse else ())
    plan = pyfftw.FFTW(src, dst, axes=tuple(range(1, len(fft_shape) + 1)), threads=threads,
                       direction="FFTW_BACKWARD" if inverse else "FFTW_FORWARD", flags=flags,
                       planning_timelimit=settings.planning_timelimit)
    data = _random_like(src)
    return plan.execute, lambda: np.copyto(src, data)


def _scipy_transform(batch, fft_shape, dtype, inverse, threads):
    """``scipy.fft`` fallback of :func:`_pyfftw_transform` (allocates its output)."""
    axes = tuple(range(1, len(fft_shape) + 1))
    spectrum = tuple(fft_shape[:-1]) + (fft_shape[-1] // 2 + 1,)
    if inverse:
        src = _random_like(np.empty((batch,) + spectrum, np.result_type(dtype, np.complex64)))
        return (lambda: scipy.fft.irfftn(src, s=fft_shape, axes=axes, workers=threads),
                lambda: None)
    src = _random_like(np.empty((batch,) + tuple(fft_shape), dtype))
    return lambda: scipy.fft.rfftn(src, axes=axes, workers=threads), lambda: None


def _random_like(a: np.ndarray) -> np.ndarray:
    """Fill ``a`` with standard-normal values (real and imaginary parts); return a copy."""
    rng = np.random.default_rng(1)
    a.real = rng.standard_normal(a.shape)
    if np.iscomplexobj(a):
        a.imag = rng.standard_normal(a.shape)
    return a.copy()


def _floor_prepare(case, data, threads) -> Prepared:
    geom = fftconv.plan(case.x_shape, case.w_shape, dtype=data.x.dtype, algorithm="fft",
                        **case.layer).geometry
    make = _pyfftw_transform if fftconv.get_settings().backend == "pyfftw" else _scipy_transform
    pairs = [make(batch, geom.fft_shape, data.x.dtype, inverse, threads)
             for batch, inverse in floor_batches(geom).values()]

    def run(_w):
        for execute, _ in pairs:
            execute()

    def reset():
        for _, refill in pairs:
            refill()

    return Prepared(run, reset)


#: fftconv's own algorithms each need a competitor entry (their titles and timing rules).
COMPETITORS = {c.key: c for c in (
    Competitor("fft", "fftconv FFT plan", _plan_step("fft"), traced=True),
    Competitor("floor", "6 batched FFTs", _floor_prepare, checked=False),
    Competitor("direct", "fftconv direct", _plan_step("direct"),
               lambda case: _direct_seconds(case, RATES["direct"]), first_call_counts=True),
    Competitor("overlap_add", "fftconv overlap-add", _plan_step("overlap_add"), traced=True),
    Competitor("winograd", "fftconv Winograd", _plan_step("winograd"), _winograd_seconds,
               first_call_counts=True),
    Competitor("fft_tiles", "fftconv small FFT tiles", _plan_step("fft_tiles"), traced=True),
    Competitor("auto", "fftconv auto", _plan_step("auto")),
    Competitor("torch", "PyTorch CPU", _torch_prepare, _torch_seconds, first_call_counts=True),
    Competitor("scipy", "fftconvolve loop", _scipy_prepare, _scipy_seconds,
               first_call_counts=True),
    Competitor("torchfft", "torch.fft reference", _torchfft_prepare, _torchfft_seconds,
               first_call_counts=True),
)}
#: Competitors a suite runs only when it names them (``Suite.competitors``).
ON_REQUEST = ("torchfft", "fft_tiles")


assert set(OWN) <= set(COMPETITORS), "every registered algorithm needs a competitor entry"


def available(keys: Optional[list] = None) -> list:
    """The competitors to run, in table order; torch only if it imports."""
    keys = [k for k in COMPETITORS if k not in ON_REQUEST] if keys is None else keys
    return [COMPETITORS[k] for k in keys if k not in ("torch", "torchfft") or torch_available()]
