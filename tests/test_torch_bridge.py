"""``fftconv.torch``: the autograd function, the modules, convert/revert, fallbacks."""
import copy
import pickle
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

import fftconv.torch as ft  # noqa: E402
from conftest import ALGORITHMS, assert_close  # noqa: E402

ENGINES = [a for a in ALGORITHMS] + ["native"]


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


@pytest.mark.parametrize("mode", ["circular", "reflect", "replicate"])
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_modules_equal_torch_modules_with_padding_modes(mode, nd):
    torch.manual_seed(nd)
    base = getattr(torch.nn, f"Conv{nd}d")(4, 6, 3, stride=2 if nd == 1 else 1, padding=1,
                                           groups=2, padding_mode=mode).double()
    mine = ft.convert(copy.deepcopy(base))
    assert type(mine).__name__ == f"FFTConv{nd}d" and "algorithm='auto'" in repr(mine)
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
def test_gradcheck(kw):
    rng = np.random.default_rng(1)
    x, w, b = _t(rng, 2, 2, 7), _t(rng, 2, 2, 3), _t(rng, 2)
    assert torch.autograd.gradcheck(lambda x, w, b: ft.conv(x, w, b, **kw), (x, w, b))


def test_a_layer_used_twice_in_one_graph_and_only_needed_gradients():
    rng = np.random.default_rng(2)
    x1, x2 = _t(rng, 2, 3, 12), _t(rng, 2, 3, 12, grad=False)
    w = _t(rng, 4, 3, 5)
    loss = (ft.conv(x1, w, padding=2) * ft.conv(x2, w, padding=2)).sum()
    loss.backward()
    xr, wr = x1.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    (F.conv1d(xr, wr, padding=2) * F.conv1d(x2, wr, padding=2)).sum().backward()
    assert_close(w.grad.numpy(), wr.grad.numpy(), np.float64, "dw")
    assert_close(x1.grad.numpy(), xr.grad.numpy(), np.float64, "dx1")
    assert x2.grad is None


def test_no_grad_and_constant_inputs_keep_nothing():
    x, w = torch.randn(2, 3, 10), torch.randn(4, 3, 3)
    assert ft.conv(x, w).grad_fn is None                      # nothing requires grad
    with torch.no_grad():
        assert ft.conv(x, w.requires_grad_()).grad_fn is None
    assert ft.conv(x, w).grad_fn is not None


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
        assert torch.autograd.gradgradcheck(lambda x, w: ft.conv(x, w, padding=1), (x, w))


def test_convert_round_trip_pickle_and_training():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv1d(2, 4, 31, padding=15), torch.nn.ReLU(),
                                torch.nn.ConvTranspose1d(4, 2, 4, stride=2, padding=1)).double()
    twin = copy.deepcopy(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    ft.convert(model)
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
