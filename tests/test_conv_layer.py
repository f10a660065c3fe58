"""``fftconv.Conv``: the numpy layer (weights, accumulated gradients, a LIFO tape)."""
import numpy as np
import pytest

import fftconv
from conftest import ALGORITHMS, assert_close

LAYERS = [
    ((2, 3, 17), dict(in_channels=3, out_channels=4, kernel_size=(5,), padding=2, stride=2)),
    ((2, 4, 9, 8), dict(in_channels=4, out_channels=6, kernel_size=(3, 2), padding="same",
                        groups=2, dilation=(1, 2))),
    ((1, 2, 5, 6, 4), dict(in_channels=2, out_channels=3, kernel_size=(3, 3, 2),
                           padding=1, padding_mode="replicate")),
    ((2, 4, 7, 6), dict(in_channels=4, out_channels=2, kernel_size=(3, 3), stride=2,
                        padding=1, output_padding=1, transposed=True)),
]


def _layer_kw(kw):
    return {k: kw[k] for k in ("stride", "padding", "dilation", "groups", "padding_mode",
                               "transposed", "output_padding") if k in kw}


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("x_shape, kw", LAYERS)
def test_layer_equals_forward_backward_and_accumulates(x_shape, kw, algorithm):
    rng = np.random.default_rng(0)
    conv = fftconv.Conv(**kw, dtype=np.float64, rng=1, algorithm=algorithm)
    x1, x2 = rng.standard_normal(x_shape), rng.standard_normal(x_shape)
    y1 = conv(x1)
    assert_close(y1, fftconv.forward(x1, conv.w, conv.b, **_layer_kw(kw)), np.float64, "y")
    dy1 = rng.standard_normal(y1.shape)
    dx1 = conv.backward(dy1)
    ref1 = fftconv.backward(dy1, x1, conv.w, **_layer_kw(kw))
    assert_close(dx1, ref1.dx, np.float64, "dx")
    assert_close(conv.dw, ref1.dw, np.float64, "dw")
    assert_close(conv.db, ref1.db, np.float64, "db")
    y2 = conv(x2)
    dy2 = rng.standard_normal(y2.shape)
    conv.backward(dy2)
    ref2 = fftconv.backward(dy2, x2, conv.w, **_layer_kw(kw))
    assert_close(conv.dw, ref1.dw + ref2.dw, np.float64, "accumulated dw")
    assert_close(conv.db, ref1.db + ref2.db, np.float64, "accumulated db")
    conv.zero_grad()
    assert not conv.dw.any() and not conv.db.any()


def test_calls_before_backward_form_a_lifo_tape():
    """A layer used three times (weights updated in place in between) is
    differentiated last in, first out, each call with its own x and w."""
    rng = np.random.default_rng(2)
    conv = fftconv.Conv(3, 4, (3, 3), padding=1, dtype=np.float64, rng=0)
    xs = [rng.standard_normal((2, 3, 8, 8)) for _ in range(3)]
    ws, ys = [], []
    for x in xs:
        ws.append(conv.w.copy())
        ys.append(conv(x))
        conv.w *= 0.9
    assert conv.pending == 3
    dys = [rng.standard_normal(y.shape) for y in ys]
    for i in (2, 1, 0):
        dx = conv.backward(dys[i])
        ref = fftconv.backward(dys[i], xs[i], ws[i], padding=1)
        assert_close(dx, ref.dx, np.float64, f"dx of call {i}")
    total = sum(fftconv.backward(dy, x, w, padding=1).dw for dy, x, w in zip(dys, xs, ws))
    assert_close(conv.dw, total, np.float64, "dw summed over the three calls")
    with pytest.raises(RuntimeError, match=r"fftconv\.Conv\.backward: no call of the layer is "
                                           r"waiting for its backward pass"):
        conv.backward(dys[0])


def test_a_short_batch_gets_its_own_plan_and_keeps_the_full_one():
    conv = fftconv.Conv(3, 4, (5, 5), padding="same", rng=0, algorithm="fft")
    full, short = np.ones((8, 3, 16, 16), np.float32), np.ones((3, 3, 16, 16), np.float32)
    conv.backward(np.ones_like(conv(full)))
    plan = conv.plan_for(full.shape)
    conv.backward(np.ones_like(conv(short)))
    conv.backward(np.ones_like(conv(full)))
    assert conv.plan_for(full.shape) is plan and len(conv._plans) == 2
    # unchanged weights between the two full-batch steps: w transformed once by that plan
    assert plan.transform_counts == {"forward": 5, "inverse": 6}


@pytest.mark.parametrize("kernel, groups, transposed", [((3, 3), 1, False), ((7,), 2, False),
                                                        ((2, 3, 2), 1, False), ((4, 4), 2, True)])
def test_initialisation_matches_pytorch_bounds(kernel, groups, transposed):
    c_in, c_out = 8, 16
    conv = fftconv.Conv(c_in, c_out, kernel, groups=groups, transposed=transposed, rng=0)
    fan_in = conv.w.shape[1] * int(np.prod(kernel))
    bound = 1 / np.sqrt(fan_in)
    assert conv.w.dtype == np.float32 and conv.w.shape == (
        (c_in, c_out // groups) if transposed else (c_out, c_in // groups)) + kernel
    assert np.abs(conv.w).max() <= bound and np.abs(conv.b).max() <= bound
    # uniform in +-bound: mean 0 and variance bound^2/3, loosely
    assert abs(conv.w.mean()) < 0.1 * bound
    assert 0.8 < conv.w.var() / (bound ** 2 / 3) < 1.2
    assert np.abs(conv.w).max() > 0.8 * bound
    same = fftconv.Conv(c_in, c_out, kernel, groups=groups, transposed=transposed, rng=0)
    np.testing.assert_array_equal(same.w, conv.w)   # seedable
    torch = pytest.importorskip("torch")
    cls = {1: torch.nn.Conv1d, 2: torch.nn.Conv2d, 3: torch.nn.Conv3d}[len(kernel)]
    if transposed:
        cls = {1: torch.nn.ConvTranspose1d, 2: torch.nn.ConvTranspose2d}[len(kernel)]
    torch.manual_seed(0)
    reference = cls(c_in, c_out, kernel, groups=groups)
    assert reference.weight.abs().max().item() <= bound + 1e-7
    assert reference.weight.abs().max().item() > 0.8 * bound


@pytest.mark.parametrize("x_shape, kw", LAYERS)
def test_layer_equals_torch_modules(x_shape, kw):
    torch = pytest.importorskip("torch")
    nd = len(kw["kernel_size"])
    conv = fftconv.Conv(**kw, dtype=np.float64, rng=3)
    names = ("ConvTranspose" if kw.get("transposed") else "Conv") + f"{nd}d"
    options = {k: v for k, v in _layer_kw(kw).items() if k != "transposed"}
    module = getattr(torch.nn, names)(kw["in_channels"], kw["out_channels"], kw["kernel_size"],
                                      **options).double()
    with torch.no_grad():
        module.weight.copy_(torch.from_numpy(conv.w))
        module.bias.copy_(torch.from_numpy(conv.b))
    x = np.random.default_rng(4).standard_normal(x_shape)
    xt = torch.from_numpy(x).requires_grad_()
    yt = module(xt)
    y = conv(x)
    dy = np.random.default_rng(5).standard_normal(y.shape)
    yt.backward(torch.from_numpy(dy))
    dx = conv.backward(dy)
    assert_close(y, yt.detach().numpy(), np.float64, "y")
    assert_close(dx, xt.grad.numpy(), np.float64, "dx")
    assert_close(conv.dw, module.weight.grad.numpy(), np.float64, "dw")
    assert_close(conv.db, module.bias.grad.numpy(), np.float64, "db")


def test_repr_is_pytorch_like_with_the_algorithm():
    conv = fftconv.Conv(3, 8, (3, 3), padding=1, bias=False, algorithm="fft")
    assert repr(conv) == ("Conv2d(3, 8, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), "
                          "bias=False, dtype=float32, algorithm='fft')")
    auto = fftconv.Conv(2, 2, (5,), transposed=True, stride=2)
    auto(np.ones((1, 2, 9), np.float32))
    assert repr(auto).startswith("ConvTranspose1d(2, 2, kernel_size=(5,), stride=(2,)")
    assert "algorithm='auto: " in repr(auto)


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match=r"fftconv\.Conv: groups must be an int >= 1 that divides "
                                         r"C_in=3, got groups=2"):
        fftconv.Conv(3, 4, (3,), groups=2)
    with pytest.raises(ValueError, match=r"fftconv\.Conv: padding_mode must be one of"):
        fftconv.Conv(3, 4, (3,), padding_mode="mirror")
    with pytest.raises(ValueError, match=r"fftconv\.Conv: algorithm must be one of"):
        fftconv.Conv(3, 4, (3,), algorithm="fast")
    conv = fftconv.Conv(3, 4, (3, 3))
    with pytest.raises(ValueError, match=r"fftconv\.Conv: x must have shape \(N, 3, \*spatial\) "
                                         r"with 2 spatial axes, got x\.shape=\(2, 3, 8\)"):
        conv(np.ones((2, 3, 8), np.float32))
    with pytest.raises(TypeError, match=r"fftconv\.Conv: x has dtype=float64 but the layer's "
                                        r"dtype is float32; cast x, or build the layer with "
                                        r"dtype=float64"):
        conv(np.ones((2, 3, 8, 8)))


def test_evaluation_keeps_nothing_and_settings_get_their_own_plan():
    conv = fftconv.Conv(2, 3, (3,), padding=1, dtype=np.float64, rng=0, algorithm="fft")
    x = np.random.default_rng(0).standard_normal((4, 2, 10))
    y = conv(x, grad=False)
    assert conv.pending == 0
    assert_close(y, fftconv.forward(x, conv.w, conv.b, padding=1), np.float64, "y")
    plan = conv.plan_for(x.shape)
    threads = 1 if fftconv.get_settings().threads != 1 else 2   # another value than now
    with fftconv.using(threads=threads):
        other = conv.plan_for(x.shape)
        assert other is not plan and other.settings.threads == threads
    assert conv.plan_for(x.shape) is plan
    conv(x)
    assert conv.backward(np.ones((4, 3, 10)), need_dx=False) is None
    assert conv.dw.any() and conv.pending == 0
