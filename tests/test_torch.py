"""Forward and autograd gradients against torch.nn.functional.conv{1,2,3}d."""

import numpy as np
import pytest

import fftconv
from conftest import ALGORITHMS, assert_close, random_array

torch = pytest.importorskip("torch")
F = torch.nn.functional

# torch warns that its own "same" with an even kernel copies the input; irrelevant here
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")

TORCH_CONV = {1: "conv1d", 2: "conv2d", 3: "conv3d"}

# (nd, N, C_in, C_out, spatial, kernel, stride, dilation, groups, padding, bias)
CASES = [
    (1, 2, 3, 4, (12,), (3,), 1, 1, 1, "valid", True),
    (1, 3, 4, 6, (11,), (4,), 2, 1, 2, 1, False),
    (1, 1, 2, 2, (10,), (2,), 1, 2, 1, "same", True),
    (1, 2, 3, 6, (9,), (3,), 3, 2, 3, 2, True),  # depthwise, multiplier 2
    (2, 2, 3, 4, (9, 8), (3, 2), (2, 1), (1, 2), 1, (1, 2), True),
    (2, 1, 4, 4, (7, 9), (4, 4), 1, 1, 2, "same", False),
    (2, 3, 2, 2, (8, 8), (3, 3), 1, (2, 1), 2, "same", True),
    (2, 2, 3, 3, (6, 7), (2, 3), 2, 1, 1, 0, True),
    (3, 2, 2, 4, (6, 5, 7), (3, 2, 2), (1, 2, 1), 1, 2, (1, 0, 2), True),
    (3, 1, 3, 3, (5, 6, 5), (2, 3, 2), 1, (2, 1, 1), 3, "same", False),
    (3, 2, 2, 2, (6, 6, 6), (3, 3, 3), 2, 1, 1, "valid", True),
]
IDS = [f"{c[0]}d-s{c[6]}-d{c[7]}-g{c[8]}-p{c[9]}-{'b' if c[10] else 'nob'}".replace(" ", "")
       for c in CASES]


def _run_torch(x, w, b, g, nd, stride, dilation, groups, padding):
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(w, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True) if b is not None else None
    ty = getattr(F, TORCH_CONV[nd])(tx, tw, tb, stride=stride, padding=padding,
                                    dilation=dilation, groups=groups)
    ty.backward(torch.tensor(g))
    return (ty.detach().numpy(), tx.grad.numpy(), tw.grad.numpy(),
            tb.grad.numpy() if tb is not None else np.asarray(g).sum(axis=(0,) + tuple(
                range(2, g.ndim))))


def _torch_out_shape(x, w, nd, stride, dilation, groups, padding):
    with torch.no_grad():
        return tuple(getattr(F, TORCH_CONV[nd])(
            torch.tensor(x), torch.tensor(w), None, stride=stride, padding=padding,
            dilation=dilation, groups=groups).shape)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_against_torch(case, dtype, algorithm):
    nd, n, c_in, c_out, xs, ks, stride, dilation, groups, padding, bias = case
    rng = np.random.default_rng(CASES.index(case))
    x = random_array(rng, (n, c_in) + xs, dtype)
    w = random_array(rng, (c_out, c_in // groups) + ks, dtype)
    b = random_array(rng, (c_out,), dtype) if bias else None
    out_shape = _torch_out_shape(x, w, nd, stride, dilation, groups, padding)
    g = random_array(rng, out_shape, dtype)
    # the reference: torch in float64 on the same (possibly float32-quantised) data
    r64 = lambda a: None if a is None else a.astype(np.float64)  # noqa: E731
    ty, tdx, tdw, tdb = _run_torch(r64(x), r64(w), r64(b), r64(g), nd, stride, dilation, groups,
                                   padding)
    kw = dict(padding=padding, stride=stride, dilation=dilation, groups=groups,
              algorithm=algorithm)
    y = fftconv.forward(x, w, b, **kw)
    assert y.dtype == np.dtype(dtype)
    assert_close(y, ty, dtype, "y")
    dx, dw, db = fftconv.backward(g, x, w, **kw)
    for name, got, ref in (("dx", dx, tdx), ("dw", dw, tdw), ("db", db, tdb)):
        assert got.dtype == np.dtype(dtype), name
        assert_close(got, ref, dtype, name)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_complex_against_torch(algorithm):
    try:
        F.conv1d(torch.zeros(1, 1, 3, dtype=torch.complex128),
                 torch.zeros(1, 1, 2, dtype=torch.complex128))
    except RuntimeError:
        pytest.skip("this torch has no complex convolution")
    rng = np.random.default_rng(5)
    for nd, xs, ks, kw in (
        (1, (2, 4, 11), (6, 2, 3), dict(stride=2, dilation=1, groups=2, padding=1)),
        (2, (2, 3, 7, 8), (3, 3, 2, 3), dict(stride=(1, 2), dilation=(2, 1), groups=1,
                                             padding=(2, 0))),
        (3, (1, 2, 5, 6, 5), (2, 1, 2, 2, 3), dict(stride=1, dilation=1, groups=2,
                                                   padding="same")),
    ):
        x = random_array(rng, xs, np.complex128)
        w = random_array(rng, ks, np.complex128)
        b = random_array(rng, (ks[0],), np.complex128)
        out_shape = _torch_out_shape(x, w, nd, kw["stride"], kw["dilation"], kw["groups"],
                                     kw["padding"])
        g = random_array(rng, out_shape, np.complex128)
        ty, tdx, tdw, tdb = _run_torch(x, w, b, g, nd, **kw)
        y = fftconv.forward(x, w, b, algorithm=algorithm, **kw)
        assert_close(y, ty, np.complex128, f"{nd}d y")
        dx, dw, db = fftconv.backward(g, x, w, algorithm=algorithm, **kw)
        assert_close(dx, tdx, np.complex128, f"{nd}d dx")
        assert_close(dw, tdw, np.complex128, f"{nd}d dw")
        assert_close(db, tdb, np.complex128, f"{nd}d db")
