"""``python -m bench profile CASE``: where one training step of a plan spends its time.

The step (``p.forward(x, w, b)`` then ``p.backward(dy)``, weights changed
before every step) runs with timers wrapped, for the duration of the profile
only, around the functions that do each kind of work in the FFT path:

============  ==============================================================
part          what is timed (exclusive of the parts nested inside)
============  ==============================================================
transforms    the batched FFT executions (``pyfftw.FFTW.execute`` or ``scipy.fft``)
placement     copying operands into the zeroed transform buffers (for the pruned
              weight transform, its stage copies and zeroing)
products      the per-frequency channel products (``contraction.*_product*``, the
              compiled and the elementwise products)
transposes    the frequency-block and kernel-spectrum transposes (the compiled
              products' packing of the kernel spectrum)
crops         cropping, scaling and flipping the inverse transforms' results (for
              the pruned weight-gradient inverse, its cuts between axes)
resampling    spectrum tiling and folding (stride, dilation)
other         the rest of the step: Python, argument checks, the weight cache, bias
============  ==============================================================

Only the calling thread is timed: work that the contraction hands to worker
threads (``threads`` > 1) counts in the wall time of the part that waits for
it, so with two threads ``products`` includes the other thread's share of the
block transposes.  Each part is the median over the profiled steps, beside the uninstrumented
step (min and median of as many steps) and the transform floor (the six bare
batched transforms of ``bench.competitors``, at the plan's FFT size).  The
parts add up to the instrumented step, which the timers make a little slower
than the uninstrumented one.
"""
from __future__ import annotations

import contextlib
import threading
import time
from typing import Callable, Dict, List

import numpy as np

from fftconv import compiled, contraction, resampling, transforms
from fftconv.algorithms import fft as fftpath
from fftconv.backends.numpy_arrays import NumpyArrays

from .cases import Case, make_data
from .competitors import COMPETITORS
from .timing import plan_step, time_step

PARTS = ("transforms", "placement", "products", "transposes", "crops", "resampling", "other")


class PartTimer:
    """Exclusive seconds per part: time spent in a timed call minus its timed callees."""

    def __init__(self):
        self.seconds: Dict[str, float] = dict.fromkeys(PARTS, 0.0)
        self._children: List[float] = []
        self._thread = threading.get_ident()

    def wrap(self, part: str, fn: Callable) -> Callable:
        """``fn`` with its exclusive time added to ``part``."""

        def timed(*args, **kwargs):
            if threading.get_ident() != self._thread:
                return fn(*args, **kwargs)  # a worker's share: inside its caller's wall time
            self._children.append(0.0)
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                nested = self._children.pop()
                self.seconds[part] += elapsed - nested
                if self._children:
                    self._children[-1] += elapsed

        return timed

    def reset(self):
        self.seconds = dict.fromkeys(PARTS, 0.0)


class _TimedPlan:
    """Stands for a ``pyfftw.FFTW`` plan; its ``execute`` is timed as ``transforms``."""

    def __init__(self, plan, timer: PartTimer):
        self._plan = plan
        self.execute = timer.wrap("transforms", plan.execute)

    def __getattr__(self, name):
        return getattr(self._plan, name)


#: ``(owner, attribute, part)`` of every function the profile times.
_TIMED = (
    (transforms.ForwardTransform, "__call__", "placement"),
    (transforms.InverseTransform, "__call__", "crops"),
    (transforms.PrunedForward, "__call__", "placement"),
    (transforms.PrunedInverse, "__call__", "crops"),
    (fftpath.Passes, "weight_grad", "crops"),
    (contraction, "forward_product", "products"),
    (contraction, "backward_products", "products"),
    (contraction, "transposed_products", "products"),
    (contraction, "_frequency_major", "transposes"),
    (contraction, "kernel_spectrum", "transposes"),
    (compiled.CompiledProducts, "forward", "products"),
    (compiled.CompiledProducts, "backward", "products"),
    (compiled.CompiledProducts, "transposed", "products"),
    (compiled.CompiledProducts, "kernel", "transposes"),
    (contraction.ElementwiseProducts, "forward", "products"),
    (contraction.ElementwiseProducts, "backward", "products"),
    (contraction.ElementwiseProducts, "transposed", "products"),
    (resampling, "tile", "resampling"),
    (resampling, "fold", "resampling"),
) + tuple((NumpyArrays, f, "transforms") for f in ("rfftn", "irfftn", "fftn", "ifftn"))


@contextlib.contextmanager
def instrumented(timer: PartTimer):
    """Wrap the timed functions (and the FFT executions) for the duration of the block."""
    saved = [(owner, name, owner.__dict__[name]) for owner, name, _ in _TIMED]
    fftw = transforms._fftw
    try:
        for owner, name, part in _TIMED:
            setattr(owner, name, timer.wrap(part, owner.__dict__[name]))
        transforms._fftw = lambda *a, **k: _TimedPlan(fftw(*a, **k), timer)
        yield timer
    finally:
        for owner, name, fn in saved:
            setattr(owner, name, fn)
        transforms._fftw = fftw


def profile(case: Case, dtype: str, threads: int, steps: int = 10,
            algorithm: str = "fft") -> dict:
    """Profile ``steps`` training steps of ``case``; see the module docstring.

    Returns ``{"parts": {part: median s}, "instrumented": median s,
    "step": (min s, median s), "floor": (min s, median s), "fft_shape": ...,
    "algorithm": ...}``.
    """
    timer = PartTimer()
    per_step: List[Dict[str, float]] = []
    with instrumented(timer):  # the plan is built inside: its FFTW plans get timed proxies
        run, w, p = plan_step(case, dtype, algorithm)

        def parted(w):
            run(w)
            per_step.append(dict(timer.seconds))

        totals = time_step(parted, w, steps, reset=timer.reset)[0]
    per_step = per_step[1:]  # the warm-up's parts
    for parts, total in zip(per_step, totals):
        parts["other"] += total - sum(parts.values())
    plain = np.array(time_step(run, w, steps, warmups=0)[0])
    floor = COMPETITORS["floor"].prepare(case, make_data(case, dtype), threads)
    floor_times = time_step(floor.run, np.zeros(1), steps, reset=floor.reset)[0]
    return {"parts": {k: float(np.median([s[k] for s in per_step])) for k in PARTS},
            "instrumented": float(np.median(totals)),
            "step": (float(plain.min()), float(np.median(plain))),
            "floor": (float(min(floor_times)), float(np.median(floor_times))),
            "fft_shape": getattr(p, "fft_shape", None), "algorithm": p.algorithm}


def profile_text(case: Case, result: dict) -> str:
    """The profile as a small table, ms per step, with each part's share of the step."""
    ms = 1e3
    total = result["instrumented"]
    lines = [f"profile of {case.name} ({result['algorithm']}, FFT shape {result['fft_shape']}), "
             f"ms per training step",
             f"{'part':<12} {'median':>8} {'share':>6}"]
    for part, sec in result["parts"].items():
        lines.append(f"{part:<12} {sec * ms:8.2f} {sec / total:6.0%}")
    lines.append(f"{'(sum)':<12} {total * ms:8.2f}   instrumented step, median")
    step, floor = result["step"], result["floor"]
    lines.append(f"step         {step[0] * ms:8.2f} min, {step[1] * ms:.2f} median (uninstrumented)")
    lines.append(f"floor        {floor[0] * ms:8.2f} min, {floor[1] * ms:.2f} median "
                 f"(six bare batched transforms)")
    lines.append(f"step/floor   {step[0] / floor[0]:8.2f} (min over min)")
    return "\n".join(lines)
