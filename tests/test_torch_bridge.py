"""``fftconv.torch``: the autograd function, the modules, convert/revert, fallbacks."""
import copy
import pickle
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

import fftconv  # noqa: E402
import fftconv.torch as ft  # noqa: E402
from conftest import ALGORITHMS, assert_close  # noqa: E402

ENGINES = [a for a in ALGORITHMS if a != "auto"] + ["native"]   # auto: tested below
#: fftconv's own engines: tests of what the bridge does around them name one, since
#: "auto" may choose PyTorch's convolution ("native") for these small layers.
FFT_ENGINES = [a for a in ALGORITHMS if a != "auto"]


def _t(rng, *shape, grad=True):
    return torch.tensor(rng.standard_normal(shape), dtype=torch.float64, requires_grad=grad)


def _reference(kind, x, w, b, **kw):
    nd = x.dim() - 2
    if kind == "transposed":
        return getattr(F, f"conv_transpose{nd}d")(x, w, b, **kw)
    return getattr(F, f"conv{nd}d")(x, w, b, **kw)


CASES = [  # (kind, x shape, w shape, torch keywords)
    ("conv", (2, 4, 17), (6, 2, 5), dict(stride=2, padding=2, dilation=1, groups=2)),
    ("conv", (2, 3, 9, 8), (4, 3, 3, 2), dict(stride=(1, 2), padding=1, dilation=(2, 1))),
    ("conv", (1, 2, 6, 5, 7), (2, 2, 3, 3, 2), dict(stride=1, padding=(1, 0, 1))),
    ("conv", (2, 3, 12, 10), (4, 3, 4, 3), dict(padding="same")),
    ("transposed", (2, 4, 7), (4, 3, 3), dict(stride=2, padding=1, output_padding=1)),
    ("transposed", (2, 4, 5, 6), (4, 1, 3, 2), dict(stride=(2, 1), padding=(1, 0),
                                                    output_padding=(1, 0), groups=2,
                                                    dilation=(1, 2))),
    ("transposed", (1, 2, 4, 3, 5), (2, 2, 2, 3, 2), dict(stride=(1, 2, 2), dilation=(3, 1, 1),
                                                          output_padding=(2, 1, 0))),
]


@pytest.mark.parametrize("algorithm", ENGINES)
@pytest.mark.parametrize("kind, xs, ws, kw", CASES)
def test_conv_equals_torch_functional(kind, xs, ws, kw, algorithm):
    rng = np.random.default_rng(0)
    c_out = ws[1] * kw.get("groups", 1) if kind == "transposed" else ws[0]
    x, w, b = _t(rng, *xs), _t(rng, *ws), _t(rng, c_out)
    y = ft.conv(x, w, b, transposed=kind == "transposed", algorithm=algorithm, **kw)
    xr, wr, br = (t.detach().clone().requires_grad_() for t in (x, w, b))
    yr = _reference(kind, xr, wr, br, **kw)
    dy = torch.tensor(rng.standard_normal(yr.shape))
    y.backward(dy)
    yr.backward(dy)
    for got, want, name in ((y, yr, "y"), (x.grad, xr.grad, "dx"), (w.grad, wr.grad, "dw"),
                            (b.grad, br.grad, "db")):
        assert_close(got.detach().numpy(), want.detach().numpy(), np.float64, name)


@pytest.mark.parametrize("algorithm", FFT_ENGINES)
@pytest.mark.parametrize("mode", ["circular", "reflect", "replicate"])
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_modules_equal_torch_modules_with_padding_modes(mode, nd, algorithm):
    torch.manual_seed(nd)
    base = getattr(torch.nn, f"Conv{nd}d")(4, 6, 3, stride=2 if nd == 1 else 1, padding=1,
                                           groups=2, padding_mode=mode).double()
    mine = ft.convert(copy.deepcopy(base), algorithm=algorithm)
    assert type(mine).__name__ == f"FFTConv{nd}d" and f"algorithm='{algorithm}'" in repr(mine)
    x = torch.randn((2, 4) + (7,) * nd, dtype=torch.float64, requires_grad=True)
    xr = x.detach().clone().requires_grad_()
    y, yr = mine(x), base(xr)
    y.sum().backward()
    yr.sum().backward()
    assert_close(y.detach().numpy(), yr.detach().numpy(), np.float64, "y")
    assert_close(x.grad.numpy(), xr.grad.numpy(), np.float64, "dx")
    assert_close(mine.weight.grad.numpy(), base.weight.grad.numpy(), np.float64, "dw")


@pytest.mark.parametrize("kw", [dict(padding=1, stride=2), dict(padding="same", dilation=2),
                                dict(padding=1, padding_mode="circular"),
                                dict(padding=2, padding_mode="reflect", stride=2),
                                dict(transposed=True, stride=2, padding=1, output_padding=1)])
@pytest.mark.parametrize("algorithm", FFT_ENGINES)
def test_gradcheck(kw, algorithm):
    rng = np.random.default_rng(1)
    x, w, b = _t(rng, 2, 2, 7), _t(rng, 2, 2, 3), _t(rng, 2)
    assert torch.autograd.gradcheck(lambda x, w, b: ft.conv(x, w, b, algorithm=algorithm, **kw),
                                    (x, w, b))


@pytest.mark.parametrize("algorithm", FFT_ENGINES)
def test_a_layer_used_twice_in_one_graph_and_only_needed_gradients(algorithm):
    rng = np.random.default_rng(2)
    x1, x2 = _t(rng, 2, 3, 12), _t(rng, 2, 3, 12, grad=False)
    w = _t(rng, 4, 3, 5)
    loss = (ft.conv(x1, w, padding=2, algorithm=algorithm)
            * ft.conv(x2, w, padding=2, algorithm=algorithm)).sum()
    loss.backward()
    xr, wr = x1.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    (F.conv1d(xr, wr, padding=2) * F.conv1d(x2, wr, padding=2)).sum().backward()
    assert_close(w.grad.numpy(), wr.grad.numpy(), np.float64, "dw")
    assert_close(x1.grad.numpy(), xr.grad.numpy(), np.float64, "dx1")
    assert x2.grad is None


def test_no_grad_and_constant_inputs_keep_nothing(monkeypatch):
    x, w = torch.randn(2, 3, 10), torch.randn(4, 3, 3)
    kept = []
    monkeypatch.setattr(ft.bridge._FFTConv, "apply",
                        lambda *a, real=ft.bridge._FFTConv.apply: kept.append(a) or real(*a))
    assert ft.conv(x, w, algorithm="fft").grad_fn is None     # nothing requires grad
    with torch.no_grad():
        assert ft.conv(x, w.requires_grad_(), algorithm="fft").grad_fn is None
    assert not kept                                           # no pullback was made
    assert ft.conv(x, w, algorithm="fft").grad_fn is not None and len(kept) == 1


def test_tensors_reach_numpy_without_copies():
    t = torch.randn(3, 4, 5)
    assert np.shares_memory(ft.to_numpy(t), t.numpy())
    assert np.shares_memory(ft.to_numpy(t.transpose(1, 2)), t.numpy())   # strided views too


def test_fallbacks_run_pytorch_with_a_warning_once():
    ft.bridge._warned.clear()
    x, w = torch.randn(2, 3, 10, dtype=torch.bfloat16), torch.randn(4, 3, 3, dtype=torch.bfloat16)
    with pytest.warns(ft.FallbackWarning, match=r"fftconv\.torch: dtype torch\.bfloat16 is not "
                                                r"one the engine computes"):
        y = ft.conv(x, w, padding=1)
    assert y.dtype == torch.bfloat16 and torch.equal(y, F.conv1d(x, w, padding=1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")                          # once per process
        ft.conv(x, w, padding=1)
    meta = torch.empty(2, 3, 10, device="meta"), torch.empty(4, 3, 3, device="meta")
    assert ft.bridge.fallback_reason(*meta) == "tensors on device 'meta'"
    with pytest.warns(ft.FallbackWarning, match="device 'meta'"):
        assert ft.conv(*meta, padding="same").shape == (2, 4, 10)


def test_double_backward_falls_back_to_pytorch():
    rng = np.random.default_rng(3)
    x, w = _t(rng, 1, 2, 8), _t(rng, 3, 2, 3)
    ft.bridge._warned.clear()
    with pytest.warns(ft.FallbackWarning, match="double backward"):
        assert torch.autograd.gradgradcheck(lambda x, w: ft.conv(x, w, padding=1,
                                                                   algorithm="fft"), (x, w))


def test_convert_round_trip_pickle_and_training():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv1d(2, 4, 31, padding=15), torch.nn.ReLU(),
                                torch.nn.ConvTranspose1d(4, 2, 4, stride=2, padding=1)).double()
    twin = copy.deepcopy(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    ft.convert(model, algorithm="fft")   # "auto" might run these natively: test the engine
    assert [type(m).__name__ for m in model] == ["FFTConv1d", "ReLU", "FFTConvTranspose1d"]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    x, target = torch.randn(4, 2, 64, dtype=torch.float64), torch.randn(4, 2, 128, dtype=torch.float64)
    losses = []
    for m in (model, twin):
        opt = torch.optim.SGD(m.parameters(), lr=1e-2)
        curve = []
        for _ in range(4):
            opt.zero_grad()
            loss = ((m(x) - target) ** 2).mean()
            loss.backward()
            opt.step()
            curve.append(loss.item())
        losses.append(curve)
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-10)
    clone = pickle.loads(pickle.dumps(model))
    assert torch.allclose(clone(x), model(x)) and type(clone[0]).__name__ == "FFTConv1d"
    assert torch.allclose(copy.deepcopy(model)(x), model(x))
    back = ft.revert(model)
    assert [type(m) for m in back] == [torch.nn.Conv1d, torch.nn.ReLU, torch.nn.ConvTranspose1d]
    assert torch.allclose(back(x), twin(x))


# -- "auto" with PyTorch's own convolution among the candidates -------------------------------

@pytest.fixture
def fresh_choices(tmp_path, monkeypatch):
    """An empty choices cache (on disk and in memory) for this test."""
    monkeypatch.setenv("FFTCONV_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(ft.bridge, "_choices", {})
    monkeypatch.setattr(ft.autoselect, "STORE", ft.autoselect.new_store())
    return tmp_path


def test_auto_runs_pytorch_for_small_kernels_and_fftconv_for_long_ones(fresh_choices):
    torch.manual_seed(0)
    small = torch.nn.Conv2d(64, 64, 3, padding=1)
    long = torch.nn.Conv1d(16, 16, 1023, padding="same")
    cases = ((small, torch.randn(8, 64, 32, 32)), (long, torch.randn(4, 16, 16384)))
    picks = []
    for base, x in cases:
        mine = ft.convert(copy.deepcopy(base))
        picks.append(mine.choice(x))
        assert "by the cost model" in ft.bridge.auto_choice(x, mine.weight,
                                                            mine.layer(x)).explain
        with torch.no_grad():
            y, ref = mine(x), base(x)
        if picks[-1] == "native":    # PyTorch's own forward: the very same numbers
            assert torch.equal(y, ref)
        else:
            assert_close(y.numpy(), ref.numpy(), np.float32, "y")
    assert picks[0] == "native" and picks[1] in FFT_ENGINES


def test_native_work_counts_channel_blocks():
    layer = ft.bridge._layer(torch.empty(8, 64, 32, 32), torch.empty(64, 64, 3, 3),
                             dict(padding=1)).conv
    assert ft.autoselect.native_work(layer, np.float32)["native_flop"] == 6 * 8 * 64 * 64 * 32 * 32 * 9
    narrow = ft.bridge._layer(torch.empty(1, 3, 10), torch.empty(4, 3, 3), {}).conv
    assert ft.autoselect.native_work(narrow, np.float32)["native_flop"] == 6 * 16 * 16 * 8 * 3


def test_measured_choice_is_persisted_and_reused(fresh_choices):
    x, w = torch.randn(2, 3, 40, requires_grad=True), torch.randn(4, 3, 5, requires_grad=True)
    with fftconv.using(measure=True):
        first = ft.bridge.auto_choice(x, w, dict(padding=2))
        assert "by measurement" in first.explain and "(stored)" not in first.explain
        assert (fresh_choices / "torch_choices.json").exists()
        ft.bridge._choices.clear()
        ft.autoselect.STORE = ft.autoselect.new_store()
        again = ft.bridge.auto_choice(x, w, dict(padding=2))
        y = ft.conv(x, w, padding=2)
    assert again.algorithm == first.algorithm and "(stored)" in again.explain
    assert first.algorithm in ["native"] + FFT_ENGINES
    assert_close(y.detach().numpy(), F.conv1d(x, w, padding=2).detach().numpy(), np.float32, "y")


def test_convert_with_an_example_input_measures_each_layer(fresh_choices):
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Conv1d(2, 4, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv1d(4, 4, 63, padding="same"),
                                torch.nn.ConvTranspose1d(4, 2, 4, stride=2, padding=1))
    twin = copy.deepcopy(model)
    x = torch.randn(2, 2, 256)
    ft.convert(model, x)
    algorithms = [m.algorithm for m in model if hasattr(m, "algorithm")]
    assert len(algorithms) == 3 and all(a in ["native"] + FFT_ENGINES for a in algorithms)
    stored = __import__("json").loads((fresh_choices / "torch_choices.json").read_text())
    assert len(stored["choices"]) == 3
    assert all(set(e["seconds"]) >= {"native"} for e in stored["choices"].values())
    with torch.no_grad():
        assert_close(model(x).numpy(), twin(x).numpy(), np.float32, "converted model")


def test_module_forward_rejects_output_size_on_a_convolution():
    m = ft.FFTConv1d(2, 2, 3)
    with pytest.raises(TypeError, match="output_size"):
        m(torch.randn(1, 2, 8), output_size=[8])


def _random_module(rng, nd):
    """A seeded random ``nn.Conv{nd}d`` or ``nn.ConvTranspose{nd}d`` (float64) and an input."""
    groups = int(rng.choice([1, 2]))
    c_in, c_out = groups * int(rng.integers(1, 3)), groups * int(rng.integers(1, 3))
    kernel = tuple(int(k) for k in rng.integers(1, 4, nd))
    stride = tuple(int(s) for s in rng.integers(1, 3, nd))
    dilation = tuple(int(d) for d in rng.integers(1, 3, nd))
    size = tuple(int(n) for n in rng.integers(5, 9, nd))
    if rng.random() < 0.3:   # transposed, with an output_padding below stride or dilation
        output_padding = tuple(int(rng.integers(0, max(s, d))) for s, d in zip(stride, dilation))
        padding = tuple(int(rng.integers(0, (d * (k - 1)) // 2 + 1))
                        for k, d in zip(kernel, dilation))
        module = getattr(torch.nn, f"ConvTranspose{nd}d")(
            c_in, c_out, kernel, stride=stride, padding=padding, output_padding=output_padding,
            groups=groups, dilation=dilation)
    else:
        mode = str(rng.choice(["zeros", "circular", "reflect", "replicate"]))
        form = rng.choice(["int", "tuple", "same", "valid"])
        if form == "same":
            stride = (1,) * nd
        padding = {"int": int(rng.integers(0, 3)), "same": "same", "valid": "valid",
                   "tuple": tuple(int(p) for p in rng.integers(0, 3, nd))}[form]
        module = getattr(torch.nn, f"Conv{nd}d")(c_in, c_out, kernel, stride=stride,
                                                 padding=padding, dilation=dilation,
                                                 groups=groups, padding_mode=mode)
    x = torch.tensor(rng.standard_normal((2, c_in) + size), requires_grad=True)
    return module.double(), x


@pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")
@pytest.mark.parametrize("seed", range(24))
def test_seeded_sweep_of_modules_against_pytorch(seed):
    """Forward, dx, dw and db of a converted module equal PyTorch's module (float64)."""
    rng = np.random.default_rng(seed)
    base, x = _random_module(rng, nd=1 + seed % 3)
    try:
        with torch.no_grad():
            base(x)
    except RuntimeError:        # a combination PyTorch itself refuses: draw again
        base, x = _random_module(np.random.default_rng(1000 + seed), nd=1 + seed % 3)
    algorithm = FFT_ENGINES[seed % len(FFT_ENGINES)]
    mine = ft.convert(copy.deepcopy(base), algorithm=algorithm)
    xr = x.detach().clone().requires_grad_()
    y, yr = mine(x), base(xr)
    dy = torch.tensor(rng.standard_normal(tuple(yr.shape)))
    y.backward(dy)
    yr.backward(dy)
    what = f"{base} ({algorithm})"
    assert_close(y.detach().numpy(), yr.detach().numpy(), np.float64, f"{what} y")
    assert_close(x.grad.numpy(), xr.grad.numpy(), np.float64, f"{what} dx")
    assert_close(mine.weight.grad.numpy(), base.weight.grad.numpy(), np.float64, f"{what} dw")
    assert_close(mine.bias.grad.numpy(), base.bias.grad.numpy(), np.float64, f"{what} db")


# -- modules: PyTorch's call conventions, fallbacks, convert's measurement ----------------------

@pytest.mark.parametrize("algorithm", FFT_ENGINES)
def test_unbatched_input_bias_free_and_output_size_like_pytorch(algorithm):
    torch.manual_seed(3)
    conv = torch.nn.Conv1d(2, 3, 5, bias=False).double()
    up = torch.nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1).double()
    x1, x2 = torch.randn(2, 20, dtype=torch.float64), torch.randn(1, 2, 6, 5, dtype=torch.float64)
    mine, mine_up = (ft.convert(copy.deepcopy(m), algorithm=algorithm) for m in (conv, up))
    assert_close(mine(x1).detach().numpy(), conv(x1).detach().numpy(), np.float64, "unbatched")
    assert mine(x1).shape == (3, 16)
    for size in ([12, 10], [11, 9]):
        got, want = mine_up(x2, output_size=size), up(x2, output_size=size)
        assert got.shape == want.shape
        assert_close(got.detach().numpy(), want.detach().numpy(), np.float64, f"output_size {size}")
    with torch.no_grad():
        assert mine(x1.requires_grad_()).grad_fn is None


def test_modules_fall_back_with_one_warning(monkeypatch):
    monkeypatch.setattr(ft.bridge, "_warned", set())
    m = ft.FFTConv1d(3, 4, 3, padding=1).to(torch.bfloat16)
    x = torch.randn(2, 3, 10, dtype=torch.bfloat16)
    with pytest.warns(ft.FallbackWarning, match="bfloat16"):
        y = m(x)
    assert torch.equal(y, torch.nn.Conv1d.forward(m, x)) and m.choice(x) == "native"
    meta = ft.FFTConv2d(3, 4, 3).to("meta")
    with pytest.warns(ft.FallbackWarning, match="device 'meta'"):
        assert meta(torch.empty(2, 3, 8, 8, device="meta")).shape == (2, 4, 6, 6)
    with pytest.raises(RuntimeError):          # PyTorch's own error for mixed dtypes
        ft.FFTConv1d(3, 4, 3)(torch.randn(2, 3, 10, dtype=torch.float64))


def test_convert_with_example_input_leaves_no_trace(fresh_choices):
    torch.manual_seed(4)
    model = torch.nn.Sequential(torch.nn.Conv1d(2, 4, 9), torch.nn.BatchNorm1d(4),
                                torch.nn.Dropout(0.5))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    example = (torch.randn(3, 2, 64),)               # a tuple of positional arguments
    rng_state = torch.random.get_rng_state()
    ft.convert(model, example)
    assert model.training and all(m.training for m in model)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    assert torch.equal(torch.random.get_rng_state(), rng_state)
    assert model[0].algorithm in ["native"] + FFT_ENGINES
    relu = torch.nn.ReLU()
    assert ft.convert(relu, torch.randn(2, 3)) is relu              # nothing to convert
    with pytest.raises(TypeError, match=r"fftconv\.torch\.convert: example_input must be"):
        ft.convert(torch.nn.Conv1d(1, 1, 3), [torch.randn(1, 1, 8)])


@pytest.mark.parametrize("entry", [{"algorithm": "fftconv"},                   # no engine
                                   {"algorithm": "fftconv", "engine": "bogus", "explain": "x"},
                                   {"algorithm": "native"}])                   # no explain
def test_a_bad_stored_verdict_is_ignored_and_measured_again(fresh_choices, entry):
    x, w = torch.randn(1, 2, 32), torch.randn(2, 2, 3)
    key = ft.autoselect._key(tuple(x.shape), tuple(w.shape), x.dtype,
                            {**fftconv.checks.LAYER_DEFAULTS}, fftconv.get_settings())
    (fresh_choices / "torch_choices.json").write_text(__import__("json").dumps(
        {"format": 1, "fftconv": fftconv.__version__, "choices": {key: entry}}))
    with fftconv.using(measure=True), pytest.warns(UserWarning, match="torch_choices.json"):
        verdict = ft.bridge.auto_choice(x, w, {**fftconv.checks.LAYER_DEFAULTS})
    assert "(stored)" not in verdict.explain and verdict.algorithm in ["native"] + FFT_ENGINES


@pytest.mark.parametrize("algorithm", ["native", "fft", "auto"])
def test_mixed_real_dtypes_are_promoted_on_every_path(algorithm):
    """float32 x with float64 w: PyTorch's own convolution refuses the mix; the
    bridge promotes it on every path, as fftconv's engines do."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 16, generator=g, requires_grad=True)
    w = torch.randn(4, 3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    y = ft.conv(x, w, padding="same", algorithm=algorithm)
    want = F.conv1d(x.detach().double(), w.detach(), padding="same")
    assert y.dtype == torch.float64
    torch.testing.assert_close(y.detach(), want, rtol=1e-6, atol=1e-6)
    y.sum().backward()
    assert x.grad.dtype == torch.float32 and w.grad.dtype == torch.float64
