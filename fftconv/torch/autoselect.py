"""``algorithm="auto"`` in PyTorch models: fftconv's engines or PyTorch's own convolution.

A swapped layer must never be slower than the layer it replaced, so ``"auto"``
in :func:`fftconv.torch.conv` and the modules has one more candidate than
fftconv's own: ``"native"``, PyTorch's convolution.  It is chosen

* by the cost model: :func:`native_work` priced with :data:`NATIVE_RATES`
  (fitted by ``python -m bench.calibrate``, like ``fftconv.costs.RATES``)
  against the cheapest estimate of fftconv's transform algorithms
  (:data:`ENGINE_CANDIDATES`: PyTorch's own convolution is a direct
  convolution, and a faster one than fftconv's GEMM-based ``"direct"``, so the
  bridge's cost model lets it stand for the direct method); or
* by measurement, when the ``measure`` setting is on (``fftconv.configure(measure=True)``
  or ``FFTCONV_MEASURE=1``): one warm-up and the best of three training steps
  through the bridge, native against fftconv, persisted in
  ``torch_choices.json`` beside the other measured choices, so later
  processes reuse the verdict without timing.

On CUDA the cost model has no rates for cuDNN, so ``"auto"`` always measures
there (the first eager call at a shape): the steps are timed with CUDA events
(:func:`device_best_of`: a warm-up, a synchronisation, then each step between
two events), and the verdict is persisted per GPU model and cuDNN/TF32 settings.

:func:`fftconv.torch.convert` with an example input measures every layer at
the shape it really sees (:func:`measure_choice`).
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import numpy as np
import torch

from .. import autoselect as core_autoselect, registry
from ..autoselect import Choice
from ..timing import WEIGHT_STEP, best_of
from ..api import plan
from ..config import Settings, get_settings, using

#: Seconds per unit of :func:`native_work`.  Fitted by ``python -m bench calibrate``
#: (non-negative least squares on the relative error of PyTorch 2.13's CPU
#: convolution, float32 training steps on the 52 calibration layers it runs, 2
#: threads, on the 2-core Intel Xeon reference VM; estimate/measured median 0.77,
#: range 0.22-1.94: a coarse model, hence :data:`NATIVE_MARGIN` and
#: ``convert(model, example_input)``).  On those layers the rule never took fftconv
#: where PyTorch was faster.  Only float32 is fitted: float64 is assumed to cost
#: twice as much and complex four times the real flops, as in ``fftconv.costs``.
NATIVE_RATES = {
    "native_call": 9.45e-05,
    "native_element": 8.05e-10,
    "native_flop": 2.52e-12,
    "native_patch": 3.74e-11,
}

#: fftconv's algorithms that the cost model weighs against "native".
ENGINE_CANDIDATES = tuple(name for name, entry in registry.REGISTRY.items() if not entry.spatial)



def valid_entry(entry: dict) -> bool:
    """A persisted verdict names native, or fftconv with a registered engine, and why."""
    return (entry.get("algorithm") == "native"
            or (entry.get("algorithm") == "fftconv" and entry.get("engine") in registry.NAMES)
            ) and isinstance(entry.get("explain"), str)


def new_store() -> core_autoselect.ChoiceStore:
    """The store of measured verdicts, ``torch_choices.json`` beside the wisdom."""
    return core_autoselect.ChoiceStore(file_name="torch_choices.json",
                                      candidates=("native", "fftconv"), valid=valid_entry)


STORE = new_store()


#: PyTorch's CPU convolution (oneDNN) computes channels in blocks of this many
#: (one AVX-512 register of float32, as on the reference VM; AVX2 machines use
#: 8): a layer with fewer channels pays for a whole block.  Assumed from
#: oneDNN's blocked layouts, not fitted.
CHANNEL_BLOCK = 16


def _blocked(channels: int) -> int:
    return -(-channels // CHANNEL_BLOCK) * CHANNEL_BLOCK


def native_work(geom, dtype) -> dict:
    """Units of work of one training step of PyTorch's CPU convolution: flops
    over channel blocks (:data:`CHANNEL_BLOCK`), unfolded-patch traffic (its
    im2col paths), operand traffic, calls."""
    p = 2.0 if np.dtype(dtype) in (np.dtype(np.float64), np.dtype(np.complex128)) else 1.0
    taps, out = math.prod(geom.kernel), math.prod(geom.out_size)
    cg, og = geom.in_channels // geom.groups, geom.out_channels // geom.groups
    flops = 6.0 * geom.batch * geom.groups * _blocked(og) * _blocked(cg) * out * taps
    flops *= 4 if np.dtype(dtype).kind == "c" else 1
    patches = 3.0 * geom.batch * geom.in_channels * out * taps
    elements = 3.0 * geom.batch * (geom.in_channels * math.prod(geom.padded_size)
                                   + geom.out_channels * out)
    return {"native_flop": flops * p, "native_patch": patches * p,
            "native_element": elements * p, "native_call": 3.0}


def native_seconds_of(work: dict) -> float:
    """Price native ``work`` with :data:`NATIVE_RATES`."""
    return sum(units * NATIVE_RATES[name] for name, units in work.items())


def native_seconds(geom, dtype) -> float:
    """Estimated seconds of one native training step."""
    return native_seconds_of(native_work(geom, dtype))


#: fftconv runs only where its estimate is this many times below native's: the
#: two models are fitted separately and err by tens of percent, and a module
#: that is slower than the layer it replaced costs more than a missed speed-up.
#: Chosen with ``python -m bench --suite torch`` (see the README's table).
NATIVE_MARGIN = 1.5


def estimate_choice(geom, dtype) -> Choice:
    """The cost model's verdict: native against the cheapest of :data:`ENGINE_CANDIDATES`
    (which must win by :data:`NATIVE_MARGIN`)."""
    priced = {name: seconds for name, (seconds, _) in registry.estimates(geom, dtype).items()
              if name in ENGINE_CANDIDATES}
    best = min(priced, key=lambda name: priced[name])
    native = native_seconds(geom, dtype)
    shown = f"native {1e3 * native:.3g} ms, {best} {1e3 * priced[best]:.3g} ms"
    if native <= NATIVE_MARGIN * priced[best]:
        return Choice("native", None, f"auto chose 'native' by the cost model; estimated {shown}")
    return Choice(best, None, f"auto chose {best!r} by the cost model; estimated {shown}")


def training_step(run, x, w, b):
    """A closure: move the weights, then forward through ``run(x, w, b)`` and backward
    of its sum."""
    def step():
        with torch.no_grad():
            w.add_(WEIGHT_STEP)
        for t in (x, w, b):
            if t is not None:
                t.grad = None
        run(x, w, b).sum().backward()
    return step


def _where(device: str) -> tuple:
    """What a verdict on ``device`` depends on beyond the layer: nothing more on the
    CPU; on a GPU its model and PyTorch's cuDNN and TF32 settings."""
    dev = torch.device(device)
    if dev.type == "cpu":
        return ()
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else dev.type
    return (dev.type, name, torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32,
            torch.backends.cuda.matmul.allow_tf32)


def _key(x_shape, w_shape, dtype, layer: dict, settings: Settings, device: str = "cpu") -> str:
    return repr(("torch", tuple(x_shape), tuple(w_shape), str(dtype),
                 sorted(layer.items()), settings.backend, settings.threads,
                 torch.get_num_threads()) + _where(device))


def device_best_of(step: Callable[[], object], device, repeats: int = 3,
                   warmups: int = 1) -> float:
    """The fastest of ``repeats`` calls of ``step()`` on a CUDA ``device``, in seconds,
    timed with CUDA events after ``warmups`` warm-up calls and a synchronisation.
    Each call is timed between two events on the current stream, so host work that
    leaves the GPU idle inside the step counts, and nothing queued before it does."""
    device = torch.device(device)
    for _ in range(warmups):
        step()
    torch.cuda.synchronize(device)
    taken = []
    for _ in range(repeats):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        end.synchronize()
        taken.append(start.elapsed_time(end) / 1e3)
    return min(taken)


def stored_choice(x_shape, w_shape, dtype, layer: dict, device: str = "cpu") -> Optional[Choice]:
    """The persisted verdict for this layer on ``device``, or ``None`` (nothing is timed)."""
    stored = STORE.get(_key(x_shape, w_shape, dtype, layer, get_settings(), device))
    if stored is None:
        return None
    name = "native" if stored["algorithm"] == "native" else stored["engine"]
    return Choice(name, None, "auto chose " + stored["explain"] + " (stored)")


def measure_choice(x_shape, w_shape, dtype, compute, layer: dict, native, fft,
                   device: str = "cpu") -> Choice:
    """Time a training step natively and through fftconv at these shapes, with
    tensors of torch ``dtype`` on ``device`` (fftconv computes in numpy ``compute``);
    persist the verdict.  ``native(x, w, b)`` and ``fft(x, w, b, algorithm)`` run a
    call; fftconv's own algorithm is chosen by measurement too (its
    ``measure=True``, on the same device).  On CUDA the steps are timed with CUDA
    events (:func:`device_best_of`), and fftconv's engine running out of device
    memory makes the verdict ``"native"``."""
    settings = get_settings()
    key = _key(x_shape, w_shape, dtype, layer, settings, device)
    stored = stored_choice(x_shape, w_shape, dtype, layer, device)
    if stored is not None:
        return stored
    dev = torch.device(device)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(x_shape, generator=gen, dtype=dtype).to(dev).requires_grad_(True)
    w = torch.randn(w_shape, generator=gen, dtype=dtype).to(dev).requires_grad_(True)
    timer = best_of if dev.type == "cpu" else (lambda step: device_best_of(step, dev))
    timed = {"native": timer(training_step(native, x, w, None))}
    like = None if dev.type == "cpu" else x.detach()
    try:
        with using(measure=True):
            engine = plan(x_shape, w_shape, dtype=compute, like=like, **layer).algorithm
        timed[engine] = timer(training_step(lambda *a: fft(*a, algorithm=engine), x, w, None))
    except (MemoryError, torch.cuda.OutOfMemoryError) as exc:
        if dev.type == "cpu":
            raise
        engine = "fft"
        explain = f"'native' by measurement; fftconv's engine ran out of memory ({exc})"
        STORE.put(key, {"algorithm": "native", "engine": engine, "explain": explain,
                        "seconds": timed})
        return Choice("native", None, "auto chose " + explain)
    best = min(timed, key=lambda name: timed[name])
    explain = (f"{best!r} by measurement; measured "
               + ", ".join(f"{name} {1e3 * t:.3g} ms" for name, t in timed.items()))
    STORE.put(key, {"algorithm": "native" if best == "native" else "fftconv",
                    "engine": engine, "explain": explain, "seconds": timed})
    return Choice(best, None, "auto chose " + explain)
