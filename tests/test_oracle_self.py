"""The oracle is only useful if it is trusted: check it against scipy.signal and by hand."""

import itertools

import numpy as np
import pytest
import scipy.signal as ss

import oracle
from conftest import rel_err


def _random(rng, complex_):
    """``rnd(shape)``: standard normal, complex with independent parts if ``complex_``."""
    def rnd(shape):
        a = rng.standard_normal(shape)
        return a + 1j * rng.standard_normal(shape) if complex_ else a
    return rnd


def _assert_adjoint(forward, x, w, y, g, grads, which, every):
    """``(dx, dw, db) = grads`` of ``y = forward(x, w)`` for output gradient ``g``:
    ``<g, y> == <x, dx> == <w, dw>``, ``db`` sums ``g``, and every ``size // every``-th
    Jacobian column of the operands in ``which`` ("x", "w"), built from ``forward``
    alone, matches the gradient (y is linear in each: grad = A^H g)."""
    dx, dw, db = grads
    ip = np.vdot(g, y)
    tol = 1e-12 * np.abs(g).sum() * np.abs(y).max()
    assert abs(np.vdot(dx, x) - ip) <= tol
    assert abs(np.vdot(dw, w) - ip) <= tol
    np.testing.assert_allclose(db, g.sum(axis=(0,) + tuple(range(2, g.ndim))))
    for name in which:
        arr, grad = (x, dx) if name == "x" else (w, dw)
        for idx in list(np.ndindex(arr.shape))[::max(1, arr.size // every)]:
            e = np.zeros(arr.shape)
            e[idx] = 1.0
            col = forward(e, w) if name == "x" else forward(x, e)
            assert abs(np.vdot(col, g) - grad[idx]) < 1e-12 * (1 + np.abs(g).sum())


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

    rnd = _random(rng, complex_)

    x, w = rnd(xs), rnd(ws)
    y = oracle.oracle_forward(x, w, **kw)
    g = rnd(y.shape)
    # explicit Jacobian columns for a few coordinates of x and w: d<g, y>/dz* per torch
    _assert_adjoint(lambda a, b: oracle.oracle_forward(a, b, **kw), x, w, y, g,
                    oracle.oracle_backward(g, x, w, **kw), "xw", 7)


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


# ----------------------------------------------------------------------------------------------
# padding modes
# ----------------------------------------------------------------------------------------------

PADDING_MODES = ["zeros", "circular", "reflect", "replicate"]


@pytest.mark.parametrize("mode, y_ref, dx_ref, dw_ref", [
    # xpad: [0 0 1 2 3 4 0 0], [3 4 1 2 3 4 1 2], [3 2 1 2 3 4 3 2], [1 1 1 2 3 4 4 4]
    ("zeros", [1, 3, 6, 9, 7, 4], [3, 3, 3, 3], [10, 10, 10]),
    ("circular", [8, 7, 6, 9, 8, 7], [5, 4, 4, 5], [17, 15, 13]),
    ("reflect", [6, 5, 6, 9, 10, 9], [3, 6, 6, 3], [15, 15, 15]),
    ("replicate", [3, 4, 6, 9, 11, 12], [6, 3, 3, 6], [12, 15, 18]),
])
def test_padding_modes_hand_computed(mode, y_ref, dx_ref, dw_ref):
    # x = [1, 2, 3, 4], k = 3 ones, padding 2; dy = ones: dxpad = [1 2 3 3 3 3 2 1] folded back
    x = np.array([[[1., 2, 3, 4]]])
    w = np.ones((1, 1, 3))
    y = oracle.oracle_forward(x, w, padding=2, padding_mode=mode)
    np.testing.assert_array_equal(y, [[y_ref]])
    g = oracle.oracle_backward(np.ones((1, 1, 6)), x, w, padding=2, padding_mode=mode)
    np.testing.assert_array_equal(g.dx, [[dx_ref]])
    np.testing.assert_array_equal(g.dw, [[dw_ref]])
    np.testing.assert_array_equal(g.db, [6])


def test_padding_mode_index_map_and_fold():
    for mode, ref in [("zeros", [-1, -1, 0, 1, 2, 3, -1, -1]),
                      ("circular", [2, 3, 0, 1, 2, 3, 0, 1]),
                      ("reflect", [2, 1, 0, 1, 2, 3, 2, 1]),
                      ("replicate", [0, 0, 0, 1, 2, 3, 3, 3])]:
        np.testing.assert_array_equal(oracle.pad_index_map(4, 2, 2, mode), ref)
    # <pad(x), z> == <x, unpad_adjoint(z)> on a 3-D asymmetric example
    rng = np.random.default_rng(30)
    pads = [(1, 2), (0, 3), (2, 1)]
    x = rng.standard_normal((2, 3, 4, 5, 3))
    for mode in PADDING_MODES:
        xp = oracle.pad_input(x, pads, mode)
        z = rng.standard_normal(xp.shape)
        assert abs(np.vdot(xp, z) - np.vdot(x, oracle.unpad_adjoint(z, x.shape[2:], pads, mode))) \
            < 1e-12 * np.abs(z).sum()
    with pytest.raises(ValueError, match="padding_mode"):
        oracle.oracle_forward(x, np.ones((3, 3, 1, 1, 1)), padding_mode="mirror")


@pytest.mark.parametrize("mode", PADDING_MODES)
@pytest.mark.parametrize("cfg", [
    dict(nd=1, padding=2, stride=1, dilation=1, groups=1, flip=False, k=3),
    dict(nd=2, padding=[(1, 2), (2, 0)], stride=(2, 1), dilation=(1, 2), groups=2, flip=True, k=2),
    dict(nd=3, padding="same", stride=1, dilation=1, groups=1, flip=False, k=2),
    dict(nd=2, padding="same", stride=2, dilation=2, groups=1, flip=True, k=3),
])
@pytest.mark.parametrize("complex_", [False, True])
def test_padding_mode_backward_is_adjoint(mode, cfg, complex_):
    rng = np.random.default_rng(31)
    nd, groups = cfg["nd"], cfg["groups"]
    c_in, c_out = 2 * groups, 3 * groups
    kw = dict(padding=cfg["padding"], stride=cfg["stride"], dilation=cfg["dilation"],
              groups=groups, flip_kernel=cfg["flip"], padding_mode=mode)

    rnd = _random(rng, complex_)

    x = rnd((2, c_in) + (5, 4, 3)[:nd])
    w = rnd((c_out, c_in // groups) + (cfg["k"],) * nd)
    y = oracle.oracle_forward(x, w, **kw)
    g = rnd(y.shape)
    # y is linear in x (w fixed) and in w (x fixed): both pairings give <g, y>; and a few
    # Jacobian columns of x, built from the forward alone
    _assert_adjoint(lambda a, b: oracle.oracle_forward(a, b, **kw), x, w, y, g,
                    oracle.oracle_backward(g, x, w, **kw), "x", 6)


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("mode", ["circular", "reflect", "replicate"])
def test_padding_modes_match_torch_module(nd, mode):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(40 + nd)
    groups, c_in, c_out = 2, 4, 6
    k = (3, 2, 3)[:nd]
    pad = (2, 1, 1)[:nd]
    stride = (2, 1, 2)[:nd]
    dilation = (1, 2, 1)[:nd]
    x = rng.standard_normal((2, c_in) + (7, 6, 5)[:nd])
    w = rng.standard_normal((c_out, c_in // groups) + k)
    b = rng.standard_normal(c_out)
    conv = getattr(torch.nn, f"Conv{nd}d")(c_in, c_out, k, stride=stride, padding=pad,
                                           dilation=dilation, groups=groups, bias=True,
                                           padding_mode=mode).double()
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(w))
        conv.bias.copy_(torch.tensor(b))
    tx = torch.tensor(x, requires_grad=True)
    ty = conv(tx)
    kw = dict(padding=list(pad), stride=stride, dilation=dilation, groups=groups,
              padding_mode=mode)
    y = oracle.oracle_forward(x, w, b, **kw)
    assert rel_err(y, ty.detach().numpy()) < 1e-13
    g = rng.standard_normal(y.shape)
    ty.backward(torch.tensor(g))
    dx, dw, db = oracle.oracle_backward(g, x, w, **kw)
    assert rel_err(dx, tx.grad.numpy()) < 1e-13
    assert rel_err(dw, conv.weight.grad.numpy()) < 1e-13
    assert rel_err(db, conv.bias.grad.numpy()) < 1e-13


@pytest.mark.parametrize("mode", ["circular", "reflect", "replicate"])
def test_padding_modes_same_and_asymmetric_match_torch(mode):
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F
    rng = np.random.default_rng(50)
    x = rng.standard_normal((2, 3, 6, 5))
    w = rng.standard_normal((4, 3, 4, 3))
    # padding="same" (stride 1, even kernel: lo = total // 2) through the module
    conv = torch.nn.Conv2d(3, 4, (4, 3), padding="same", bias=False, padding_mode=mode).double()
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(w))
    tx = torch.tensor(x, requires_grad=True)
    ty = conv(tx)
    y = oracle.oracle_forward(x, w, padding="same", padding_mode=mode)
    assert rel_err(y, ty.detach().numpy()) < 1e-13
    g = rng.standard_normal(y.shape)
    ty.backward(torch.tensor(g))
    dx, dw, _ = oracle.oracle_backward(g, x, w, padding="same", padding_mode=mode)
    assert rel_err(dx, tx.grad.numpy()) < 1e-13
    assert rel_err(dw, conv.weight.grad.numpy()) < 1e-13
    # asymmetric (lo, hi) pairs: F.pad (last axis first) then an unpadded conv
    pads = [(2, 1), (0, 2)]
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(w, requires_grad=True)
    ty = F.conv2d(F.pad(tx, (0, 2, 2, 1), mode=mode), tw, stride=(1, 2))
    y = oracle.oracle_forward(x, w, padding=pads, stride=(1, 2), padding_mode=mode)
    assert rel_err(y, ty.detach().numpy()) < 1e-13
    g = rng.standard_normal(y.shape)
    ty.backward(torch.tensor(g))
    dx, dw, _ = oracle.oracle_backward(g, x, w, padding=pads, stride=(1, 2), padding_mode=mode)
    assert rel_err(dx, tx.grad.numpy()) < 1e-13
    assert rel_err(dw, tw.grad.numpy()) < 1e-13


# ----------------------------------------------------------------------------------------------
# transposed convolution
# ----------------------------------------------------------------------------------------------

def test_transposed_hand_computed_1d_stride2():
    # x = [1, 2, 3] scattered with stride 2 through w = [1, 10, 100]: y[2p + j - lo] += w[j] x[p]
    x = np.array([[[1., 2, 3]]])
    w = np.array([[[1., 10, 100]]])
    t = oracle.oracle_transposed_forward
    np.testing.assert_array_equal(t(x, w, stride=2), [[[1, 10, 102, 20, 203, 30, 300]]])
    np.testing.assert_array_equal(t(x, w, stride=2, padding=1), [[[10, 102, 20, 203, 30]]])
    np.testing.assert_array_equal(t(x, w, stride=2, padding=1, output_padding=1),
                                  [[[10, 102, 20, 203, 30, 300]]])
    np.testing.assert_array_equal(t(x, w, np.array([5.]), stride=2, padding=[(0, 3)]),
                                  [[[6, 15, 107, 25]]])
    # "same": n*s = 6 outputs; correlation lo = 0, flip_kernel lo = 1 with w reversed
    np.testing.assert_array_equal(t(x, w, stride=2, padding="same"),
                                  [[[1, 10, 102, 20, 203, 30]]])
    np.testing.assert_array_equal(t(x, w, stride=2, padding="same", flip_kernel=True),
                                  [[[10, 201, 20, 302, 30, 3]]])
    # "same" with ke < s: the last s - ke outputs are not reached
    np.testing.assert_array_equal(t(x, np.array([[[1., 10]]]), stride=3, padding="same"),
                                  [[[1, 10, 0, 2, 20, 0, 3, 30, 0]]])
    g = oracle.oracle_transposed_backward(np.arange(1., 8)[None, None], x, w, stride=2)
    np.testing.assert_array_equal(g.dx, [[[321, 543, 765]]])
    np.testing.assert_array_equal(g.dw, [[[22, 28, 34]]])
    np.testing.assert_array_equal(g.db, [28])


def test_transposed_geometry():
    tos = oracle.transposed_output_spatial
    assert tos((3,), (3,), 0, 2) == (7,)
    assert tos((3,), (3,), 1, 2, 1, 1) == (6,)
    assert tos((5, 4), (3, 2), [(1, 0), (0, 2)], (2, 3), (1, 2), (1, 0)) == (11, 10)
    assert tos((5,), (3,), "valid", 2, 3) == (15,)
    assert tos((5,), (3,), "full", 1, 1) == (3,)
    for n, k, s, d, flip in itertools.product(range(1, 6), range(1, 5), range(1, 4), range(1, 3),
                                              (False, True)):
        assert tos((n,), (k,), "same", s, d, 0, flip) == (n * s,)
        assert tos((n,), (k,), "same", s, d, 1, flip) == (n * s + 1,)
        assert oracle.resolve_transposed_padding("same", (n,), (k,), s, d, flip) == \
            oracle.resolve_padding("same", (n * s,), (k,), s, d, flip)
    with pytest.raises(ValueError):
        tos((2,), (3,), "full", 1, 1)


@pytest.mark.parametrize("cfg", [
    dict(nd=1, padding=1, stride=2, dilation=1, groups=1, op=1, flip=False, k=3),
    dict(nd=1, padding="same", stride=3, dilation=1, groups=2, op=0, flip=True, k=2),
    dict(nd=2, padding=[(1, 2), (0, 1)], stride=(2, 1), dilation=(1, 3), groups=2, op=(1, 2),
         flip=False, k=3),
    dict(nd=2, padding="valid", stride=2, dilation=2, groups=1, op=0, flip=True, k=2),
    dict(nd=3, padding="same", stride=(1, 2, 2), dilation=1, groups=3, op=0, flip=False, k=2),
    dict(nd=3, padding=[1, 0, 2], stride=2, dilation=(2, 1, 3), groups=1, op=(1, 0, 2),
         flip=False, k=2),
])
@pytest.mark.parametrize("complex_", [False, True])
def test_transposed_backward_is_adjoint(cfg, complex_):
    rng = np.random.default_rng(60)
    nd, groups = cfg["nd"], cfg["groups"]
    c_in, c_out = 2 * groups, 3 * groups
    kw = dict(padding=cfg["padding"], stride=cfg["stride"], dilation=cfg["dilation"],
              groups=groups, output_padding=cfg["op"], flip_kernel=cfg["flip"])

    rnd = _random(rng, complex_)

    x = rnd((2, c_in) + (4, 3, 3)[:nd])
    w = rnd((c_in, c_out // groups) + (cfg["k"],) * nd)
    y = oracle.oracle_transposed_forward(x, w, **kw)
    assert y.shape[2:] == oracle.transposed_output_spatial(
        x.shape[2:], w.shape[2:], cfg["padding"], cfg["stride"], cfg["dilation"], cfg["op"],
        cfg["flip"])
    g = rnd(y.shape)
    _assert_adjoint(lambda a, b: oracle.oracle_transposed_forward(a, b, **kw), x, w, y, g,
                    oracle.oracle_transposed_backward(g, x, w, **kw), "xw", 6)


@pytest.mark.parametrize("padding", [0, 1, [(2, 0)], "valid", "same"])
@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("s, d", [(1, 1), (2, 1), (3, 2), (2, 3)])
def test_transposed_is_input_gradient_of_forward(padding, flip, s, d):
    # transposed(x, w) == dx of the forward convolution over the transposed output length,
    # with dy = x and weights conj(w) (here real: w), also for "same" (n*s outputs)
    rng = np.random.default_rng(70)
    groups = 2
    x = rng.standard_normal((2, 4, 5))
    w = rng.standard_normal((4, 3, 3))
    kw = dict(padding=padding, stride=s, dilation=d, groups=groups, flip_kernel=flip)
    y = oracle.oracle_transposed_forward(x, w, **kw)
    length = y.shape[2]
    fwd_pad = oracle.resolve_transposed_padding(padding, (5,), (3,), s, d, flip)
    assert oracle.output_spatial((length,), (3,), fwd_pad, s, d) == (5,)
    if padding == "same":
        assert length == 5 * s
        assert fwd_pad == oracle.resolve_padding("same", (length,), (3,), s, d, flip)
    dx = oracle.oracle_backward(x, np.zeros((2, 6, length)), w, padding=fwd_pad, stride=s,
                                dilation=d, groups=groups, flip_kernel=flip).dx
    assert rel_err(y, dx) < 1e-13


def _check_transposed(torch, conv_transpose, x, w, b, tkw, okw, draw, skip_unsupported=False):
    """The oracle's transposed forward and gradients (keywords ``okw``) against
    ``conv_transpose`` (torch keywords ``tkw``) and autograd, for ``g = draw(y.shape)``."""
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    try:
        ty = conv_transpose(tx, tw, tb, **tkw)
    except (RuntimeError, NotImplementedError) as exc:
        if not skip_unsupported:
            raise
        pytest.skip(f"torch has no complex {conv_transpose.__name__} here: {exc}")
    y = oracle.oracle_transposed_forward(x, w, b, **okw)
    assert rel_err(y, ty.detach().numpy()) < 1e-13
    g = draw(y.shape)
    ty.backward(torch.tensor(g))
    dx, dw, db = oracle.oracle_transposed_backward(g, x, w, **okw)
    assert rel_err(dx, tx.grad.numpy()) < 1e-13
    assert rel_err(dw, tw.grad.numpy()) < 1e-13
    assert rel_err(db, tb.grad.numpy()) < 1e-13


@pytest.mark.parametrize("cfg", [
    dict(nd=1, stride=2, padding=1, dilation=1, groups=1, op=1, k=3),
    dict(nd=1, stride=1, padding=0, dilation=3, groups=2, op=2, k=2),   # op >= s, allowed: d > s
    dict(nd=2, stride=(2, 3), padding=(1, 0), dilation=(1, 2), groups=2, op=(1, 2), k=3),
    dict(nd=2, stride=1, padding=2, dilation=(4, 1), groups=1, op=(3, 0), k=2),  # op >= s
    dict(nd=3, stride=(2, 1, 2), padding=(0, 1, 1), dilation=(1, 2, 3), groups=3,
         op=(1, 1, 2), k=2),
])
def test_transposed_matches_torch(cfg):
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F
    rng = np.random.default_rng(80)
    nd, groups = cfg["nd"], cfg["groups"]
    c_in, c_out = 2 * groups, 3 * groups
    x = rng.standard_normal((2, c_in) + (5, 4, 3)[:nd])
    w = rng.standard_normal((c_in, c_out // groups) + (cfg["k"],) * nd)
    b = rng.standard_normal(c_out)
    padding = cfg["padding"]
    tkw = dict(stride=cfg["stride"], padding=padding, output_padding=cfg["op"],
               groups=groups, dilation=cfg["dilation"])
    okw = dict(stride=cfg["stride"], padding=padding if isinstance(padding, int) else list(padding),
               output_padding=cfg["op"], groups=groups, dilation=cfg["dilation"])
    _check_transposed(torch, getattr(F, f"conv_transpose{nd}d"), x, w, b, tkw, okw,
                      rng.standard_normal)


def test_transposed_complex_matches_torch():
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F
    rng = np.random.default_rng(90)

    def crnd(shape):
        return rng.standard_normal(shape) + 1j * rng.standard_normal(shape)

    x, w, b = crnd((2, 4, 6)), crnd((4, 3, 3)), crnd(6)
    tkw = dict(stride=2, padding=1, output_padding=1, groups=2, dilation=2)
    _check_transposed(torch, F.conv_transpose1d, x, w, b, tkw, tkw, crnd, skip_unsupported=True)


# ----------------------------------------------------------------------------------------------
# channels-last helpers
# ----------------------------------------------------------------------------------------------

def test_channels_last_helpers():
    rng = np.random.default_rng(100)
    a = rng.standard_normal((2, 3, 4, 5, 6))
    acl = oracle.to_channels_last(a)
    assert acl.shape == (2, 4, 5, 6, 3)
    assert acl[1, 2, 3, 4, 0] == a[1, 0, 2, 3, 4]
    np.testing.assert_array_equal(oracle.from_channels_last(acl), a)
    w = rng.standard_normal((6, 2, 3, 4))
    wcl = oracle.weights_to_channels_last(w)
    assert wcl.shape == (3, 4, 2, 6)
    assert wcl[2, 1, 0, 5] == w[5, 0, 2, 1]
    np.testing.assert_array_equal(oracle.weights_from_channels_last(wcl), w)
    w1 = rng.standard_normal((5, 3, 7))
    assert oracle.weights_to_channels_last(w1).shape == (7, 3, 5)
    np.testing.assert_array_equal(
        oracle.weights_from_channels_last(oracle.weights_to_channels_last(w1)), w1)
    # an NHWC / HWIO convolution by its own definition equals the adapted oracle
    x = rng.standard_normal((2, 5, 4, 3))          # (N, H, W, C_in)
    k = rng.standard_normal((2, 3, 3, 4))          # (kh, kw, C_in, C_out)
    ref = np.zeros((2, 4, 2, 4))
    for n, i, jx, o in np.ndindex(*ref.shape):
        ref[n, i, jx, o] = np.sum(x[n, i:i + 2, jx:jx + 3, :] * k[..., o])
    y = oracle.oracle_forward(oracle.from_channels_last(x), oracle.weights_from_channels_last(k))
    assert rel_err(oracle.to_channels_last(y), ref) < 1e-13
