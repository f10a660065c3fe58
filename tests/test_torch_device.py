"""``fftconv.torch``'s device path (issue 19): CUDA tensors reach the engine as tensors.

No GPU is needed for most of this: ``fftconv.torch.ops.HOST_DEVICES`` says which
device types go through numpy, so with it empty CPU tensors take the path CUDA
tensors take (``to_engine`` hands the core the tensors themselves, detached, and
``from_engine`` returns its tensors as they are).  What needs CUDA (CUDA-event
timing, ``auto`` measuring against cuDNN, float16 falling back there) is marked
``gpu`` at the end and skipped without it.
"""
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

import fftconv  # noqa: E402
import fftconv.torch as ft  # noqa: E402
from fftconv import api  # noqa: E402
from fftconv.backends import arrays_of  # noqa: E402
from fftconv.torch import autoselect, bridge, ops  # noqa: E402

HAS_CUDA = torch.cuda.is_available()


@pytest.fixture
def tensor_path(monkeypatch):
    """CPU tensors go to the engine as tensors, as CUDA tensors do; the calls the core
    receives are recorded (the types of their operands)."""
    monkeypatch.setattr(ops, "HOST_DEVICES", ())
    monkeypatch.setattr(ops, "TENSOR_DEVICES", ("cpu", "cuda"))
    seen = []
    for name in ("forward", "vjp", "backward"):
        original = getattr(api, name)

        def spy(*args, _original=original, _name=name, **kwargs):
            seen.append((_name, [type(a) for a in args if a is not None]))
            return _original(*args, **kwargs)
        monkeypatch.setattr(api, name, spy)
    return seen


def _tensors(seed, *shapes, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen, dtype=dtype, requires_grad=True) for s in shapes]


def _close(got, want, dtype=torch.float64):
    tol = 1e-10 if dtype in (torch.float64, torch.complex128) else 1e-5
    scale = max(float(want.abs().max()), 1e-300)
    assert float((got - want).abs().max()) / scale <= tol


LAYERS = [
    dict(padding="same", stride=(1, 2), dilation=(2, 1), groups=2, flip_kernel=True),
    dict(padding="causal"),
    dict(padding=1, padding_mode="reflect"),
    dict(padding=(1, 0), transposed=True, stride=2, output_padding=1),
    dict(padding="same", layout="channels_last"),
]


def _operands(layer, seed=0, dtype=torch.float64):
    nd = 1 if layer.get("padding") == "causal" else 2
    groups = layer.get("groups", 1)
    spatial = (13, 12)[:nd]
    kernel = (3, 4)[:nd]
    if layer.get("layout") == "channels_last":
        return _tensors(seed, (2,) + spatial + (4,), kernel + (4 // groups, 6), (6,),
                        dtype=dtype)
    if layer.get("transposed"):
        return _tensors(seed, (2, 4) + spatial, (4, 6 // groups) + kernel, (6,), dtype=dtype)
    return _tensors(seed, (2, 4) + spatial, (6, 4 // groups) + kernel, (6,), dtype=dtype)


@pytest.mark.parametrize("algorithm", ["fft", "overlap_add", "auto"])
@pytest.mark.parametrize("layer", LAYERS, ids=lambda layer: ",".join(map(str, layer.values())))
def test_the_engine_gets_tensors_and_gradients_equal_pytorch_s(tensor_path, layer, algorithm):
    x, w, b = _operands(layer)
    y = ft.conv(x, w, b, algorithm=algorithm, **layer)
    (y * torch.cos(y)).sum().backward()
    got = [y.detach()] + [t.grad for t in (x, w, b)]
    for t in (x, w, b):
        t.grad = None
    y_ref = ft.native_conv(x, w, b, **layer)
    (y_ref * torch.cos(y_ref)).sum().backward()
    for g, r in zip(got, [y_ref.detach()] + [t.grad for t in (x, w, b)]):
        assert isinstance(g, torch.Tensor) and g.dtype == torch.float64
        _close(g, r)
    engine_calls = [types for name, types in tensor_path if name == "vjp"]
    if algorithm != "auto":
        assert engine_calls, "the engine did not run"
    assert all(t is torch.Tensor for types in engine_calls for t in types), engine_calls


def test_an_expanded_output_gradient_and_no_grad_calls(tensor_path):
    """``y.sum().backward()`` gives a stride-0 ``dy``; a call under ``no_grad`` keeps
    no pullback (``api.forward``); both with tensors."""
    x, w = _tensors(1, (2, 3, 40), (4, 3, 9))
    ft.conv(x, w, padding="same", algorithm="fft").sum().backward()
    want = torch.autograd.grad(F.conv1d(x, w, padding=4).sum(), (x, w))
    _close(x.grad, want[0])
    _close(w.grad, want[1])
    with torch.no_grad():
        y = ft.conv(x, w, padding="same", algorithm="fft")
    assert not y.requires_grad
    _close(y, F.conv1d(x, w, padding=4).detach())
    assert tensor_path[-1] == ("forward", [torch.Tensor, torch.Tensor])


def test_modules_and_convert_run_on_the_tensor_path(tensor_path):
    torch.manual_seed(0)
    native = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 5, padding=2), torch.nn.ReLU(),
                                 torch.nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1,
                                                          output_padding=1)).double()
    import copy
    mine = ft.convert(copy.deepcopy(native), algorithm="fft")
    x = _tensors(2, (2, 3, 11, 10))[0]
    y, y_ref = mine(x), native(x)
    _close(y.detach(), y_ref.detach())
    grads = torch.autograd.grad(y.sum(), list(mine.parameters()))
    want = torch.autograd.grad(y_ref.sum(), list(native.parameters()))
    for g, r in zip(grads, want):
        _close(g, r)
    assert any(name == "vjp" for name, _ in tensor_path)


def test_the_custom_ops_run_on_tensors_and_return_contiguous_results(tensor_path):
    """What ``torch.compile``/``export`` call: the real implementations hand the core
    tensors, and their results have the fake implementations' (contiguous) strides."""
    layer = dict(padding="same", layout="channels_last")
    x, w, b = (t.detach() for t in _operands(layer))
    key = ops.layer_key({**fftconv.checks.LAYER_DEFAULTS, **layer})
    y = ops.conv_op(x, w, b, key, "fft")
    fake = ops._conv_fake(x, w, b, key, "fft")
    assert y.shape == fake.shape and y.is_contiguous()
    _close(y, ft.native_conv(x, w, b, **layer))
    dy = torch.randn(y.shape, dtype=y.dtype)
    dx, dw, db = ops.conv_backward_op(dy, x, w, key, "fft", True, True, True)
    assert all(g.is_contiguous() for g in (dx, dw, db))
    assert (dx.shape, dw.shape, db.shape) == (x.shape, w.shape, b.shape)
    assert [name for name, _ in tensor_path] == ["forward", "backward"]
    assert all(t is torch.Tensor for _, types in tensor_path for t in types)


def test_compile_fullgraph_on_the_tensor_path_equals_eager(tensor_path):
    torch._dynamo.reset()
    try:
        conv = torch.compile(lambda x, w, b: ft.conv(x, w, b, padding="same", algorithm="fft"),
                             backend="aot_eager", fullgraph=True)
        x, w, b = _tensors(3, (2, 3, 20), (4, 3, 5), (4,))
        y = conv(x, w, b)
        grads = torch.autograd.grad(y.sum(), (x, w, b))
        y_ref = F.conv1d(x, w, b, padding=2)
        for g, r in zip((y,) + grads, (y_ref,) + torch.autograd.grad(y_ref.sum(), (x, w, b))):
            _close(g.detach(), r.detach())
    finally:
        torch._dynamo.reset()


# -- fallbacks on a device ---------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_falls_back_on_a_device(tensor_path, dtype):
    """float16 and bfloat16 run PyTorch's own convolution on a device, with the warning."""
    bridge._warned.clear()
    x, w = (t.detach().to(dtype) for t in _tensors(4, (1, 2, 16), (3, 2, 3)))
    reason = bridge.fallback_reason(x, w, algorithm="fft")
    assert reason is not None and str(dtype) in reason
    with pytest.warns(ft.FallbackWarning, match=str(dtype).replace(".", r"\.")):
        y = ft.conv(x, w, padding=1, algorithm="fft")
    assert y.dtype == dtype and torch.equal(y, F.conv1d(x, w, padding=1))
    assert not tensor_path


def test_float16_keeps_the_engine_on_the_cpu():
    x, w = (t.detach().half() for t in _tensors(4, (1, 2, 16), (3, 2, 3)))
    assert bridge.fallback_reason(x, w, algorithm="fft") is None


def test_an_algorithm_the_backend_cannot_run_falls_back(tensor_path, monkeypatch):
    """``direct`` needs strided views: where the device's backend lacks them, the bridge
    runs PyTorch's convolution with the warning instead of the core's error."""
    monkeypatch.setattr(bridge, "_runs_on", {("direct", "cpu"): False})
    bridge._warned.clear()
    x, w = _tensors(5, (1, 2, 16), (3, 2, 3))
    assert "strided views" in bridge.fallback_reason(x, w, algorithm="direct")
    assert bridge.fallback_reason(x, w, algorithm="fft") is None
    with pytest.warns(ft.FallbackWarning, match="algorithm 'direct' does not run"):
        y = ft.conv(x, w, padding=1, algorithm="direct")
    _close(y.detach(), F.conv1d(x, w, padding=1).detach())


def test_the_registry_says_which_algorithms_run_on_a_device():
    expected = fftconv.registry.REGISTRY["direct"].runs_on(arrays_of(torch.empty(0)))
    bridge._runs_on.pop(("direct", "cpu"), None)
    assert bridge.runs_on_device("direct", "cpu") is expected
    assert bridge.runs_on_device("fft", "cpu") is True
    assert bridge.runs_on_device("bogus", "cpu") is True        # left to check_algorithm


def test_tensors_on_different_devices_run_natively():
    x = torch.empty(1, 2, 8)
    w = torch.empty(3, 2, 3, device="meta")
    assert bridge.fallback_reason(x, w) == "tensors on device 'meta'"
    if HAS_CUDA:
        assert bridge.fallback_reason(x, w.to("cpu").cuda()) == "native"


# -- auto on a device --------------------------------------------------------------------------

@pytest.fixture
def fresh_choices(tmp_path, monkeypatch):
    monkeypatch.setenv("FFTCONV_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(bridge, "_choices", {})
    monkeypatch.setattr(autoselect, "STORE", autoselect.new_store())
    return tmp_path


def test_the_verdicts_key_names_the_gpu_and_its_settings(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")
    settings = fftconv.get_settings()
    cpu = autoselect._key((1, 2, 8), (3, 2, 3), torch.float32, {}, settings)
    assert cpu == autoselect._key((1, 2, 8), (3, 2, 3), torch.float32, {}, settings, "cpu")
    gpu = autoselect._key((1, 2, 8), (3, 2, 3), torch.float32, {}, settings, "cuda:0")
    assert gpu != cpu and "Fake GPU" in gpu and gpu.startswith(cpu[:-1])


def test_traced_auto_on_a_device_uses_a_stored_verdict_or_pytorch_s(fresh_choices, monkeypatch):
    """Nothing is timed in a trace: on a GPU, without a measurement, ``"native"``."""
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")
    layer = {**fftconv.checks.LAYER_DEFAULTS}
    args = ((2, 4, 64), (4, 4, 31), torch.float32, torch.float32, layer)
    verdict = bridge._choice(*args, True, "cuda:0")
    assert verdict.algorithm == "native" and "while tracing" in verdict.explain
    key = autoselect._key(args[0], args[1], args[2], layer, fftconv.get_settings(), "cuda:0")
    autoselect.STORE.put(key, {"algorithm": "fftconv", "engine": "fft", "explain": "'fft' x",
                               "seconds": {}})
    verdict = bridge._choice(*args, True, "cuda:0")
    assert verdict.algorithm == "fft" and "(stored)" in verdict.explain
    assert not bridge._choices          # a traced verdict is not remembered for eager calls


def test_device_best_of_times_between_cuda_events(monkeypatch):
    """The event protocol, on fake events: warm-up, synchronise, then each step between
    two recorded events whose elapsed milliseconds become seconds."""
    log = []
    clock = iter(range(100))

    class Event:
        def __init__(self, enable_timing=False):
            assert enable_timing
            self.at = None

        def record(self):
            self.at = next(clock)
            log.append("record")

        def synchronize(self):
            log.append("wait")

        def elapsed_time(self, other):
            return float(other.at - self.at) * 1e3     # milliseconds

    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: log.append("sync"))

    def step():
        log.append("step")
        next(clock)
    best = autoselect.device_best_of(step, "cuda:0", repeats=2)
    assert best == pytest.approx(2.0)           # record, step (1 tick), record: 2 ticks
    assert log == ["step", "sync"] + ["record", "step", "record", "wait"] * 2


# -- on a CUDA device (skipped here) -----------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="torch.cuda is not available")
def test_cuda_half_precision_falls_back_with_the_warning(dtype):
    bridge._warned.clear()
    x = torch.randn(2, 3, 64, device="cuda", dtype=dtype)
    w = torch.randn(4, 3, 9, device="cuda", dtype=dtype)
    with pytest.warns(ft.FallbackWarning, match="on device 'cuda'"):
        y = ft.conv(x, w, padding="same", algorithm="fft")
    assert y.device == x.device and torch.equal(y, F.conv1d(x, w, padding=4))


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="torch.cuda is not available")
def test_cuda_auto_measures_against_cudnn_and_persists(fresh_choices):
    x = torch.randn(2, 8, 4096, device="cuda", requires_grad=True)
    w = torch.randn(8, 8, 255, device="cuda", requires_grad=True)
    verdict = bridge.auto_choice(x, w, {**fftconv.checks.LAYER_DEFAULTS})
    assert "by measurement" in verdict.explain and "native" in verdict.explain
    assert (fresh_choices / "torch_choices.json").exists()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ft.FallbackWarning)
        y = ft.conv(x, w)
    y.sum().backward()
    assert x.grad.device == x.device and w.grad.device == x.device
    want = F.conv1d(x.detach().double(), w.detach().double())
    scale = float(want.abs().max())
    assert float((y.detach().double() - want).abs().max()) / scale <= 1e-4
    assert np.isfinite(x.grad.cpu().numpy()).all()


def test_checked_geometries_are_remembered_and_errors_are_not():
    """The bridge's per-call checks are kept per signature (a small layer's GPU step
    takes about as long as they do); a failed check raises every time, and keywords
    that cannot be hashed (a list) are checked every time."""
    bridge._geometries.clear()
    x, w = torch.randn(1, 2, 16), torch.randn(3, 2, 3)
    for _ in range(2):
        with pytest.raises(ValueError, match=r"fftconv\.torch\.conv: groups"):
            ft.conv(x, w, groups=2)
    assert not bridge._geometries
    y = ft.conv(x, w, padding=1, algorithm="native")
    assert len(bridge._geometries) == 1
    assert torch.equal(ft.conv(x, w, padding=1, algorithm="native"), y)
    assert len(bridge._geometries) == 1
    assert torch.equal(ft.conv(x, w, padding=[1], algorithm="native"), y)
    assert len(bridge._geometries) == 1


def test_a_gpu_verdict_held_in_memory_depends_on_the_tf32_settings(fresh_choices, monkeypatch):
    """``auto`` measured with TF32 off is not reused with it on (cuDNN's speed changes)."""
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")
    layer = {**fftconv.checks.LAYER_DEFAULTS}
    args = ((2, 4, 64), (4, 4, 31), torch.float32, torch.float32, layer, False, "cuda:0")
    measured = []

    def fake_measure(*a, **k):
        measured.append(torch.backends.cudnn.allow_tf32)
        return bridge.Choice("fft", None, "auto chose 'fft' by measurement (fake)")
    monkeypatch.setattr(autoselect, "measure_choice", fake_measure)
    before = torch.backends.cudnn.allow_tf32
    try:
        for flag in (False, False, True, True):
            torch.backends.cudnn.allow_tf32 = flag
            assert bridge._choice(*args).algorithm == "fft"
    finally:
        torch.backends.cudnn.allow_tf32 = before
    assert measured == [False, True]
