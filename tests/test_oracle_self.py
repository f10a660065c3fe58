"""The oracle is only useful if it is trusted: check it against scipy.signal and by hand."""

import itertools

import numpy as np
import pytest
import scipy.signal as ss

import oracle
from conftest import rel_err


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("mode", ["valid", "full"])
def test_single_channel_correlate_matches_scipy(nd, mode):
    rng = np.random.default_rng(nd)
    x = rng.standard_normal((7, 6, 5)[:nd])
    w = rng.standard_normal((3, 2, 3)[:nd])
    y = oracle.oracle_forward(x[None, None], w[None, None], padding=mode)[0, 0]
    ref = ss.correlate(x, w, mode=mode, method="direct")
    assert y.shape == ref.shape
    assert rel_err(y, ref) < 1e-13


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("mode", ["valid", "same", "full"])
def test_single_channel_convolve_matches_scipy(nd, mode):
    # flip_kernel=True equals scipy.signal.convolve, also for even kernels in "same"
    rng = np.random.default_rng(10 + nd)
    x = rng.standard_normal((7, 6, 5)[:nd])
    for kshape in [(3, 2, 3), (2, 4, 2), (4, 3, 1)]:
        w = rng.standard_normal(kshape[:nd])
        y = oracle.oracle_forward(x[None, None], w[None, None], padding=mode,
                                  flip_kernel=True)[0, 0]
        ref = ss.convolve(x, w, mode=mode, method="direct")
        assert y.shape == ref.shape
        assert rel_err(y, ref) < 1e-13


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_correlate_same_is_torch_style(k):
    # correlation "same": lo = total // 2 (torch); scipy.correlate(same) takes
    # lo = total - total // 2,
    # so compare with scipy's full correlation cropped at the torch offset.
    rng = np.random.default_rng(k)
    x = rng.standard_normal(9)
    w = rng.standard_normal(k)
    y = oracle.oracle_forward(x[None, None], w[None, None], padding="same")[0, 0]
    full = ss.correlate(x, w, mode="full", method="direct")
    start = (k - 1) - (k - 1) // 2
    assert rel_err(y, full[start:start + 9]) < 1e-13
    if k % 2:  # odd kernels: identical to scipy "same"
        assert rel_err(y, ss.correlate(x, w, mode="same", method="direct")) < 1e-13


def test_complex_single_channel():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 5)) + 1j * rng.standard_normal((6, 5))
    w = rng.standard_normal((3, 2)) + 1j * rng.standard_normal((3, 2))
    # forward does NOT conjugate w; scipy.correlate conjugates in2, so pass conj(w)
    y = oracle.oracle_forward(x[None, None], w[None, None])[0, 0]
    assert rel_err(y, ss.correlate(x, np.conj(w), mode="valid", method="direct")) < 1e-13
    y = oracle.oracle_forward(x[None, None], w[None, None], padding="full", flip_kernel=True)[0, 0]
    assert rel_err(y, ss.convolve(x, w, mode="full", method="direct")) < 1e-13


def test_multichannel_groups_and_bias_by_definition():
    rng = np.random.default_rng(5)
    groups, c_in, c_out = 2, 4, 6
    x = rng.standard_normal((2, c_in, 8))
    w = rng.standard_normal((c_out, c_in // groups, 3))
    b = rng.standard_normal(c_out)
    y = oracle.oracle_forward(x, w, b, groups=groups, padding=[(1, 2)])
    xp = np.pad(x, [(0, 0), (0, 0), (1, 2)])
    ref = np.zeros((2, c_out, 9))
    for n, o in itertools.product(range(2), range(c_out)):
        g = o // (c_out // groups)
        for c in range(c_in // groups):
            ref[n, o] += ss.correlate(xp[n, g * (c_in // groups) + c], w[o, c], mode="valid")
        ref[n, o] += b[o]
    assert rel_err(y, ref) < 1e-13


def test_stride_dilation_by_definition():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((1, 1, 11, 10))
    w = rng.standard_normal((1, 1, 3, 2))
    s, d = (2, 3), (2, 1)
    y = oracle.oracle_forward(x, w, stride=s, dilation=d)[0, 0]
    # dense correlation with the dilated kernel, then subsample
    wd = np.zeros((5, 2))
    wd[::2, :] = w[0, 0]
    dense = ss.correlate(x[0, 0], wd, mode="valid")
    assert rel_err(y, dense[::2, ::3]) < 1e-13
    assert y.shape == ((11 - 5) // 2 + 1, (10 - 2) // 3 + 1)


def test_hand_computed_tiny():
    y = oracle.oracle_forward(np.array([[[1., 2, 3, 4]]]), np.array([[[1., 0, -1]]]))
    np.testing.assert_array_equal(y, [[[-2, -2]]])
    y = oracle.oracle_forward(np.array([[[1., 2, 3, 4]]]), np.array([[[1., 2]]]), padding="same")
    np.testing.assert_array_equal(y, [[[5, 8, 11, 4]]])
    y = oracle.oracle_forward(np.array([[[1., 2, 3, 4]]]), np.array([[[1., 2]]]), padding="same",
                              flip_kernel=True)
    np.testing.assert_array_equal(y, [[[1, 4, 7, 10]]])
    y = oracle.oracle_forward(np.array([[[1., 2, 3, 4, 5]]]), np.array([[[1., 1]]]),
                              padding="same", stride=2)
    np.testing.assert_array_equal(y, [[[3, 7, 5]]])
    y = oracle.oracle_forward(np.array([[[1., 2, 3, 4, 5]]]), np.array([[[1., 1]]]),
                              padding="same", stride=2, flip_kernel=True)
    np.testing.assert_array_equal(y, [[[1, 5, 9]]])
    g = oracle.oracle_backward(np.array([[[1., 1]]]), np.array([[[1., 2, 3, 4]]]),
                               np.array([[[1., 0, -1]]]))
    np.testing.assert_array_equal(g.dx, [[[1, 1, -1, -1]]])
    np.testing.assert_array_equal(g.dw, [[[3, 5, 7]]])
    np.testing.assert_array_equal(g.db, [2])


@pytest.mark.parametrize("cfg", [
    dict(nd=1, padding="same", stride=2, dilation=1, groups=1, flip=False, k=4),
    dict(nd=2, padding="full", stride=(1, 2), dilation=(2, 1), groups=2, flip=True, k=2),
    dict(nd=3, padding=[(0, 1), (2, 0), (1, 1)], stride=2, dilation=1, groups=3, flip=False, k=3),
    dict(nd=2, padding="same", stride=3, dilation=2, groups=1, flip=True, k=2),
    dict(nd=4, padding=1, stride=1, dilation=1, groups=1, flip=False, k=2),
])
@pytest.mark.parametrize("complex_", [False, True])
def test_backward_is_adjoint_of_forward(cfg, complex_):
    # the oracle's explicit adjoint loops must match the Jacobian of its forward, built column by
    # column (that is independent of how backward is written)
    rng = np.random.default_rng(7)
    nd, groups = cfg["nd"], cfg["groups"]
    c_in, c_out = 2 * groups, 2 * groups
    xs = (2, c_in) + (5,) * nd
    ws = (c_out, c_in // groups) + (cfg["k"],) * nd
    kw = dict(padding=cfg["padding"], stride=cfg["stride"], dilation=cfg["dilation"],
              groups=groups, flip_kernel=cfg["flip"])

    def rnd(shape):
        a = rng.standard_normal(shape)
        return a + 1j * rng.standard_normal(shape) if complex_ else a

    x, w = rnd(xs), rnd(ws)
    y = oracle.oracle_forward(x, w, **kw)
    g = rnd(y.shape)
    dx, dw, db = oracle.oracle_backward(g, x, w, **kw)
    ip = np.vdot(g, y)
    assert abs(np.vdot(dx, x) - ip) <= 1e-12 * np.abs(g).sum() * np.abs(y).max()
    assert abs(np.vdot(dw, w) - ip) <= 1e-12 * np.abs(g).sum() * np.abs(y).max()
    np.testing.assert_allclose(db, g.sum(axis=(0,) + tuple(range(2, g.ndim))))
    # explicit Jacobian columns for a few coordinates of x and w: d<g, y>/dz* per torch
    for arr, grad in ((x, dx), (w, dw)):
        for idx in list(np.ndindex(arr.shape))[::max(1, arr.size // 7)]:
            e = np.zeros(arr.shape)
            e[idx] = 1.0
            if arr is x:
                col = oracle.oracle_forward(e, w, **kw)
            else:
                col = oracle.oracle_forward(x, e, **kw)
            # y is linear in arr: grad = A^H g, component idx = vdot(A e_idx, g)
            assert abs(np.vdot(col, g) - grad[idx]) < 1e-12 * (1 + np.abs(g).sum())


def test_matches_torch_complex_convention():
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 4, 7, 6)) + 1j * rng.standard_normal((2, 4, 7, 6))
    w = rng.standard_normal((6, 2, 3, 2)) + 1j * rng.standard_normal((6, 2, 3, 2))
    b = rng.standard_normal(6) + 1j * rng.standard_normal(6)
    kw = dict(stride=(2, 1), dilation=(1, 2), groups=2)
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(w, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True)
    ty = F.conv2d(tx, tw, tb, padding=(1, 2), **kw)
    y = oracle.oracle_forward(x, w, b, padding=[1, 2], **kw)
    assert rel_err(y, ty.detach().numpy()) < 1e-13
    g = rng.standard_normal(y.shape) + 1j * rng.standard_normal(y.shape)
    ty.backward(torch.tensor(g))
    dx, dw, db = oracle.oracle_backward(g, x, w, padding=[1, 2], **kw)
    assert rel_err(dx, tx.grad.numpy()) < 1e-13
    assert rel_err(dw, tw.grad.numpy()) < 1e-13
    assert rel_err(db, tb.grad.numpy()) < 1e-13


def test_geometry():
    # out = ceil(n/s) for "same", whatever the kernel / dilation / flip
    for n, k, s, d, flip in itertools.product(range(1, 9), range(1, 5), range(1, 4), range(1, 3),
                                              (False, True)):
        pads = oracle.resolve_padding("same", (n,), (k,), s, d, flip)
        lo, hi = pads[0]
        total = lo + hi
        assert oracle.output_spatial((n,), (k,), "same", s, d, flip) == (-(-n // s),)
        assert (lo, hi) == ((total - total // 2, total // 2) if flip else
                            (total // 2, total - total // 2))
    assert oracle.output_spatial((5,), (3,), "full", 1, 2) == (9,)
    assert oracle.output_spatial((5, 6), (3, 2), [(1, 0), (0, 3)], (2, 1)) == (2, 8)
    with pytest.raises(ValueError):
        oracle.output_spatial((2,), (3,), "valid")
