"""``python -m bench --suite gpu``: training steps on a CUDA device, against cuDNN.

A **training step** is the forward pass and every gradient (``dx``, ``dw``,
``db``) for a fixed output gradient ``dy``, float32, the weights moving
before every step (``w += 1e-3`` in place, untimed), as in ``bench.timing``.
Each step is timed between two CUDA events on the current stream after
warm-ups and a synchronisation (:func:`device_samples`): host work that leaves
the GPU idle inside a step counts, work queued before it does not.  The
figure is the best sample.

The columns (``KEYS``), each on the same device and data:

``cudnn``
    ``torch.nn.functional.conv{1,2,3}d`` and ``torch.autograd.grad``, with
    ``torch.backends.cudnn.benchmark=True`` (cuDNN times its algorithms on the
    first call of a shape and keeps the fastest: its best algorithm).
``fft``, ``auto``
    ``fftconv.torch.conv`` on the CUDA tensors with ``algorithm="fft"`` and
    ``"auto"`` (which measures cuDNN against fftconv's engine on its first call
    and runs the faster: the bridge's "never slower than ``nn.Conv``").
``cupy``
    fftconv's core on CuPy arrays (``fftconv.plan(..., like=x, algorithm="fft")``,
    ``p.vjp`` and the pullback), when CuPy with a device is installed.
``floor``
    The six batched cuFFT transforms of the step alone (``torch.fft`` r2c of
    ``x``, ``w``, ``dy`` and c2r of ``y``, ``dx``, ``dw`` at the plan's FFT size).
``torchfft``
    On the long depthwise causal rows only: the plain ``torch.fft`` reference
    ``irfft(rfft(u, n=2L) * rfft(k, n=2L), n=2L)[..., :L] + b`` and autograd.

Every column runs with TF32 off (``torch.backends.cudnn.allow_tf32`` and
``torch.backends.cuda.matmul.allow_tf32`` False); ``cudnn``, ``fft`` and
``auto`` run again with TF32 on (``*_tf32``).  The targets are
``bench.suites.gpu_targets``.  Accuracy: ``fft``, ``auto`` and ``cupy``
against cuDNN without TF32 (the long rows: against the ``torch.fft``
reference), relative to the largest magnitude, at most 1e-4; a larger error is
an ``ACCURACY:`` line and exit status 1.

Without CUDA the suite prints one line and exits 0: CI has no GPU.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import statistics
import tempfile
import time
from math import prod
from typing import Callable, Dict, List, Optional, Tuple

from fftconv.timing import WEIGHT_STEP

from .cases import Case
from .competitors import floor_batches, long_convolution, torch_padding
from .report import fmt, table, targets_table
from .suites import GPU_QUICK_CASES, check_targets
from .timing import enough, torch_available

#: Every column, in table order (``*_tf32``: the same with TF32 on).
KEYS = ("cudnn", "fft", "auto", "cupy", "floor", "torchfft", "cudnn_tf32", "fft_tf32",
        "auto_tf32")
#: The columns run again with TF32 on.
TF32_KEYS = ("cudnn", "fft", "auto")
#: Largest relative error accepted against the reference (float32 against float32).
TOLERANCE = 1e-4
#: Warm-up steps before the timed ones (the first builds cuFFT plans, cuDNN's
#: benchmark choice, fftconv's engines and ``auto``'s measurement).
WARMUPS = 2
#: ``--quick``: samples and warm-ups.
QUICK_REPEAT, QUICK_WARMUPS = 3, 1


def skip_reason() -> Optional[str]:
    """Why the suite cannot run here (no PyTorch, no CUDA device), or ``None``."""
    if not torch_available():
        return "PyTorch is not installed (pip install '.[torch]')"
    import torch
    if not torch.cuda.is_available():
        return "no CUDA device (torch.cuda.is_available() is False)"
    return None


def cupy_available() -> bool:
    """Whether CuPy imports and sees a device."""
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # ImportError, or CuPy without a driver or a device
        return False


def columns(case: Case, cupy: bool) -> Tuple[str, ...]:
    """The columns that run on ``case``: no cuDNN or ``auto`` on the long rows (a
    depthwise step of cuDNN at a kernel of 65536 takes seconds), the reference only
    there, CuPy only where it is installed."""
    long = long_convolution(case)
    keys = ["fft", "floor"] + (["cupy"] if cupy else [])
    if long:
        return tuple(keys + ["torchfft"])
    if torch_padding(case) is not None:
        keys = ["cudnn"] + keys + ["auto"]
        keys += [k + "_tf32" for k in TF32_KEYS]
    return tuple(k for k in KEYS if k in keys)


# -- timing -----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Clock:
    """CUDA events of one library: ``event()`` makes one, ``elapsed(a, b)`` is the
    milliseconds between two recorded ones, ``sync()`` drains the device."""

    event: Callable[[], object]
    elapsed: Callable[[object, object], float]
    sync: Callable[[], None]


def torch_clock() -> Clock:
    import torch
    return Clock(lambda: torch.cuda.Event(enable_timing=True),
                 lambda a, b: a.elapsed_time(b), torch.cuda.synchronize)


def cupy_clock() -> Clock:
    import cupy
    return Clock(cupy.cuda.Event, cupy.cuda.get_elapsed_time,
                 lambda: cupy.cuda.Device().synchronize())


def device_samples(step: Callable[[], object], clock: Clock, repeat: int, warmups: int,
                   prepare: Callable[[], object] = lambda: None,
                   budget: Optional[float] = None) -> Tuple[List[float], object]:
    """Seconds of ``repeat`` timed calls of ``step()`` (fewer once they add up to
    ``budget``, never fewer than ``bench.timing.MIN_SAMPLES``) after ``warmups``
    warm-up calls and a synchronisation; ``prepare()`` runs before every call,
    outside the events.  Returns the samples and the first call's result."""
    first = None
    for i in range(warmups):
        prepare()
        out = step()
        first = out if i == 0 else first
    clock.sync()
    taken: List[float] = []
    while not enough(taken, repeat, budget):
        prepare()
        start, end = clock.event(), clock.event()
        start.record()      # type: ignore[attr-defined]
        out = step()
        end.record()        # type: ignore[attr-defined]
        end.synchronize()   # type: ignore[attr-defined]
        taken.append(clock.elapsed(start, end) / 1e3)
        first = out if first is None else first
    return taken, first


# -- the competitors --------------------------------------------------------------------------
@dataclasses.dataclass
class Data:
    """A case's tensors on the device: ``x``, ``w``, ``b``, ``dy`` (float32)."""

    x: object
    w: object
    b: object
    dy: object


def make_device_data(case: Case, device, seed: int = 0) -> Data:
    """Standard-normal ``x``, ``b``, ``dy`` and ``w`` scaled by ``1/sqrt(fan_in)``, made on
    the device (the long rows' arrays are hundreds of MB)."""
    import torch
    gen = torch.Generator(device=device).manual_seed(seed)

    def normal(shape, scale=1.0):
        return torch.randn(shape, generator=gen, device=device, dtype=torch.float32) * scale

    fan_in = case.in_channels // case.opts.get("groups", 1) * prod(case.kernel)
    return Data(normal(case.x_shape), normal(case.w_shape, fan_in ** -0.5),
                normal((case.out_channels,)), normal(case.y_shape))


Step = Tuple[Callable[[], object], Callable[[], object], Clock]


def _leaves(data: Data):
    """Fresh leaves of ``x``, ``w``, ``b`` (each competitor moves its own weights)."""
    return tuple(t.detach().clone().requires_grad_(True) for t in (data.x, data.w, data.b))


def _autograd_step(call: Callable, data: Data) -> Step:
    import torch
    x, w, b = _leaves(data)
    dy = data.dy

    def step():
        y = call(x, w, b)
        dx, dw, _ = torch.autograd.grad(y, (x, w, b), dy)
        return y.detach(), dx, dw

    def prepare():
        with torch.no_grad():
            w.add_(WEIGHT_STEP)
    return step, prepare, torch_clock()


def cudnn_step(case: Case, data: Data) -> Step:
    """PyTorch's convolution (cuDNN), ``benchmark`` set by the caller."""
    import torch.nn.functional as F
    conv = getattr(F, f"conv{case.ndim}d")
    padding = torch_padding(case)
    return _autograd_step(lambda x, w, b: conv(x, w, b, padding=padding), data)


def bridge_step(algorithm: str) -> Callable[[Case, Data], Step]:
    """``fftconv.torch.conv`` with ``algorithm`` on the CUDA tensors."""
    def prepare(case: Case, data: Data) -> Step:
        import fftconv.torch as ft
        return _autograd_step(lambda x, w, b: ft.conv(x, w, b, algorithm=algorithm,
                                                      **case.layer), data)
    return prepare


def torchfft_step(case: Case, data: Data) -> Step:
    """The ``torch.fft`` long-convolution reference (depthwise, causal, a true convolution)."""
    import torch
    length, n = case.size[0], 2 * case.size[0]

    def call(x, k, b):
        y = torch.fft.irfft(torch.fft.rfft(x, n=n) * torch.fft.rfft(k, n=n), n=n)[..., :length]
        return y + b[:, None]
    x, w, b = _leaves(data)
    k = w.detach()[:, 0].clone().requires_grad_(True)            # (H, K)
    dy = data.dy

    def step():
        y = call(x, k, b)
        dx, dk, _ = torch.autograd.grad(y, (x, k, b), dy)
        return y.detach(), dx, dk[:, None]

    def prepare():
        with torch.no_grad():
            k.add_(WEIGHT_STEP)
    return step, prepare, torch_clock()


def cupy_step(case: Case, data: Data) -> Step:
    """fftconv's core on CuPy arrays: a plan made ``like=`` them, ``vjp`` and its pullback."""
    import cupy
    import fftconv
    x, w, b, dy = (cupy.from_dlpack(t.detach().clone()) for t in (data.x, data.w, data.b,
                                                                 data.dy))
    p = fftconv.plan(case.x_shape, case.w_shape, dtype="float32", like=x, algorithm="fft",
                     **case.layer)

    def step():
        y, pullback = p.vjp(x, w, b)
        dx, dw, _ = pullback(dy)
        return y, dx, dw

    def prepare():
        w[...] += WEIGHT_STEP
    return step, prepare, cupy_clock()


def floor_step(case: Case, data: Data) -> Step:
    """The six batched cuFFT transforms of a step at the FFT plan's size (``torch.fft``,
    into preallocated outputs)."""
    import torch
    import fftconv
    geom = fftconv.plan(case.x_shape, case.w_shape, dtype="float32", like=data.x,
                        algorithm="fft", **case.layer).geometry
    shape = tuple(geom.fft_shape)
    dims = tuple(range(1, len(shape) + 1))
    spectrum = shape[:-1] + (shape[-1] // 2 + 1,)
    gen = torch.Generator(device=data.x.device).manual_seed(1)
    calls = []
    for batch, inverse in floor_batches(geom).values():
        if inverse:
            src = torch.randn((batch,) + spectrum, generator=gen, device=data.x.device,
                              dtype=torch.complex64)
            dst = torch.empty((batch,) + shape, device=data.x.device, dtype=torch.float32)
            calls.append(lambda src=src, dst=dst: torch.fft.irfftn(src, s=shape, dim=dims,
                                                                   out=dst))
        else:
            src = torch.randn((batch,) + shape, generator=gen, device=data.x.device)
            dst = torch.empty((batch,) + spectrum, device=data.x.device, dtype=torch.complex64)
            calls.append(lambda src=src, dst=dst: torch.fft.rfftn(src, dim=dims, out=dst))

    def step():
        for call in calls:
            call()
    return step, lambda: None, torch_clock()


PREPARE: Dict[str, Callable[[Case, Data], Step]] = {
    "cudnn": cudnn_step, "fft": bridge_step("fft"), "auto": bridge_step("auto"),
    "cupy": cupy_step, "floor": floor_step, "torchfft": torchfft_step}


@contextlib.contextmanager
def tf32(on: bool):
    """TF32 on or off for cuDNN's convolutions and the matmuls; restored after."""
    import torch
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = on
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


# -- one row ----------------------------------------------------------------------------------
@dataclasses.dataclass
class GpuResult:
    """One row: samples per column, failures, ``auto``'s picks, accuracy."""

    case: Case
    times: Dict[str, List[float]] = dataclasses.field(default_factory=dict)
    failed: Dict[str, str] = dataclasses.field(default_factory=dict)
    picks: Dict[str, str] = dataclasses.field(default_factory=dict)
    errors: Dict[str, float] = dataclasses.field(default_factory=dict)
    reference: Optional[str] = None

    def best(self, key: str) -> Optional[float]:
        taken = self.times.get(key)
        return min(taken) if taken else None

    def ratio(self, numerator: str, denominator: str) -> Optional[float]:
        """``best(numerator) / best(denominator)`` (``bench.suites.Target``'s figure)."""
        a, b = self.best(numerator), self.best(denominator)
        return None if a is None or b is None or b <= 0 else a / b

    def memory_ratio(self, numerator: str, denominator: str) -> Optional[float]:
        return None     # no memory targets on the GPU


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:160]}"


def relative_error(got, want) -> float:
    """``max|got - want| / max|want|`` on the device, in float64."""
    import torch
    got, want = torch.as_tensor(got).double(), torch.as_tensor(want).double()
    if got.shape != want.shape:
        return float("inf")
    return float((got - want).abs().max() / want.abs().max().clamp_min(1e-300))


def _as_torch(outputs):
    import torch
    return tuple(torch.from_dlpack(a) if not isinstance(a, torch.Tensor) else a for a in outputs)


def run_row(case: Case, keys, repeat: int, warmups: int, budget: Optional[float],
            device=None) -> GpuResult:
    """Time every column of ``keys`` on ``case`` (TF32 off, then the ``*_tf32`` ones
    on) and check ``fft``/``auto``/``cupy`` against the reference; on ``device``
    (default: the current CUDA device)."""
    import torch
    if device is None:
        device = torch.device("cuda", torch.cuda.current_device())
    result = GpuResult(case)
    data = make_device_data(case, device)
    outputs = {}
    for key in keys:
        name, on = key.removesuffix("_tf32"), key.endswith("_tf32")
        try:
            with tf32(on):    # auto's verdict depends on the TF32 settings: pick inside
                step, prepare, clock = PREPARE[name](case, data)
                taken, first = device_samples(step, clock, repeat, warmups, prepare, budget)
                if name == "auto":
                    result.picks[key] = _pick(case, data)
        except Exception as exc:  # a failed column is reported, the row goes on
            result.failed[key] = _one_line(exc)
            torch.cuda.empty_cache()
            continue
        result.times[key] = taken
        if not on and name in ("cudnn", "torchfft", "fft", "auto", "cupy"):
            outputs[key] = _as_torch(first)
        del step, prepare, first
    result.reference = "torchfft" if long_convolution(case) else "cudnn"
    want = outputs.get(result.reference)
    if want is not None:
        for key in ("fft", "auto", "cupy"):
            if key in outputs:
                result.errors[key] = max(relative_error(g, r) for g, r in zip(outputs[key], want))
    del outputs, data
    torch.cuda.empty_cache()
    return result


def _pick(case: Case, data: Data) -> str:
    """What ``auto`` ran on this row (its verdict is held after its first call)."""
    from fftconv.checks import LAYER_DEFAULTS
    from fftconv.torch import bridge
    x, w = data.x, data.w
    if bridge.fallback_reason(x, w, data.b) is not None:
        return "native"
    return bridge.auto_choice(x, w, {**LAYER_DEFAULTS, **case.layer}).algorithm


# -- the run ----------------------------------------------------------------------------------
def device_line() -> str:
    """The GPU and the libraries: what the figures were measured on."""
    import torch
    import fftconv
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    cupy = "not installed"
    if cupy_available():
        import cupy
        cupy = cupy.__version__
    return (f"device: {props.name}, {props.total_memory / 2 ** 30:.0f} GiB, "
            f"{props.multi_processor_count} SMs; torch {torch.__version__} (CUDA "
            f"{torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}), CuPy {cupy}, "
            f"fftconv {fftconv.__version__}")


def _ms(seconds: Optional[float]) -> str:
    return "-" if seconds is None else f"{1e3 * seconds:.3g}"


def _cell(result: GpuResult, key: str) -> str:
    if key in result.failed:
        return "failed"
    cell = _ms(result.best(key))
    pick = result.picks.get(key)
    return f"{cell} ({pick})" if pick and cell != "-" else cell


def progress(result: GpuResult) -> str:
    """One row's figures in one line (printed as it finishes, so that a run cut short
    still shows the rows it timed)."""
    cells = [f"{k} {_cell(result, k)}" for k in KEYS if k in result.times or k in result.failed]
    return ", ".join(cells) + " ms"


def tables(results: List[GpuResult]) -> str:
    """The two tables (TF32 off, on), the accuracy table and the failures."""
    off = ["cudnn", "fft", "auto", "cupy", "floor", "torchfft"]
    rows = [[r.case.name] + [_cell(r, k) for k in off]
            + [fmt(r.ratio("cudnn", "fft"), ".2f"), fmt(r.ratio("auto", "cudnn"), ".2f"),
               fmt(r.ratio("fft", "floor"), ".2f"), fmt(r.ratio("torchfft", "fft"), ".2f")]
            for r in results]
    lines = ["ms per training step (best sample), TF32 off; auto (what it ran)",
             table(["row"] + [f"{k} ms" for k in off]
                   + ["cudnn/fft", "auto/cudnn", "fft/floor", "torchfft/fft"], rows)]
    on = [r for r in results if any(k.endswith("_tf32") for k in r.times)]
    if on:
        rows = [[r.case.name] + [_cell(r, k + "_tf32") for k in TF32_KEYS]
                + [fmt(r.ratio("cudnn_tf32", "fft_tf32"), ".2f"),
                   fmt(r.ratio("auto_tf32", "cudnn_tf32"), ".2f")] for r in on]
        lines += ["", "ms per training step (best sample), TF32 on (cuDNN and matmuls)",
                  table(["row", "cudnn ms", "fft ms", "auto ms", "cudnn/fft", "auto/cudnn"],
                        rows)]
    rows = [[r.case.name, r.reference or "-"] + [fmt(r.errors.get(k), ".1e")
                                                 for k in ("fft", "auto", "cupy")]
            for r in results]
    lines += ["", "largest relative error of y, dx, dw against the reference (TF32 off)",
              table(["row", "reference", "fft", "auto", "cupy"], rows)]
    failures = [f"  {r.case.name}: {k} {why}" for r in results for k, why in r.failed.items()]
    if failures:
        lines += ["", "failed columns:"] + failures
    return "\n".join(lines)


def accuracy_lines(results: List[GpuResult]) -> List[str]:
    return [f"{r.case.name}: {k} relative error {e:.1e} > {TOLERANCE:.0e} against "
            f"{r.reference}" for r in results for k, e in r.errors.items()
            if not e <= TOLERANCE]


def to_json(results: List[GpuResult], checks, header: str) -> dict:
    return {"device": header,
            "rows": [{"case": r.case.name, "times": r.times, "failed": r.failed,
                      "picks": r.picks, "errors": r.errors, "reference": r.reference,
                      "median_ms": {k: 1e3 * statistics.median(v) for k, v in r.times.items()}}
                     for r in results],
            "targets": [{"figure": c.target.figure, "case": c.case_name, "ratio": c.ratio,
                         "requirement": c.target.requirement, "verdict": c.verdict}
                        for c in checks]}


@contextlib.contextmanager
def _fresh_choices():
    """``auto``'s measured verdicts go to a fresh cache directory (every run measures;
    a user's persisted verdicts are neither reused nor changed)."""
    previous = os.environ.get("FFTCONV_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="fftconv-bench-gpu-") as cache:
        os.environ["FFTCONV_CACHE_DIR"] = cache
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop("FFTCONV_CACHE_DIR", None)
            else:
                os.environ["FFTCONV_CACHE_DIR"] = previous


def run(suite, repeat: int, budget: Optional[float], quick: bool = False,
        json_path: Optional[str] = None) -> bool:
    """Time the suite's rows (``--quick``: :data:`~bench.suites.GPU_QUICK_CASES` among
    them, fewer samples), print the tables and the targets; True if every error is
    within :data:`TOLERANCE`."""
    import torch
    cases = [c for c in suite.cases if not quick or c in GPU_QUICK_CASES] or list(suite.cases)
    warmups = QUICK_WARMUPS if quick else WARMUPS
    repeat = min(repeat, QUICK_REPEAT) if quick else repeat
    cupy = cupy_available()
    header = device_line()
    print(header)
    print(f"rows: {len(cases)}, float32, best of {repeat} after {warmups} warm-up(s), "
          f"CUDA events; cudnn.benchmark=True; TF32 off, then on for "
          f"{', '.join(TF32_KEYS)}")
    benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    results = []
    try:
        with _fresh_choices():
            for i, case in enumerate(cases):
                start = time.perf_counter()
                results.append(run_row(case, columns(case, cupy), repeat, warmups, budget))
                print(f"[{i + 1}/{len(cases)}] {case.name} ({time.perf_counter() - start:.1f} s): "
                      f"{progress(results[-1])}", flush=True)
    finally:
        torch.backends.cudnn.benchmark = benchmark
    print()
    print(tables(results))
    checks = check_targets(suite.targets, results)
    if checks:
        print("\ntargets (float32; unmet targets are reported, not fatal)")
        print(targets_table(checks))
        met = sum(c.verdict == "yes" for c in checks)
        print(f"\ntargets met: {met}/{len(checks)}")
    bad = accuracy_lines(results)
    for line in bad:
        print("ACCURACY: " + line)
    if json_path:
        with open(json_path, "w") as f:
            json.dump(to_json(results, checks, header), f, indent=1)
        print(f"rows: {json_path}")
    return not bad
