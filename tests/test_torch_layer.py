"""The whole-layer options against PyTorch, in float64 (and complex128):

* ``transposed=True`` / ``output_padding`` against ``F.conv_transpose{1,2,3}d``;
* ``padding_mode`` against ``torch.nn.Conv{1,2,3}d(padding_mode=...)``;
* ``layout="channels_last"`` against the same, with the axes moved;

forward, autograd gradients (``dx``, ``dw``, ``db``) through ``fftconv.vjp``'s
pullback and ``fftconv.backward``, for every algorithm.
"""

import numpy as np
import pytest

import fftconv
from conftest import ALGORITHMS, assert_close, random_array

torch = pytest.importorskip("torch")
F = torch.nn.functional

# torch warns that its own "same" with an even kernel copies the input; irrelevant here
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")

F64 = np.float64
CONV_TRANSPOSE = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
CONV_MODULE = {1: torch.nn.Conv1d, 2: torch.nn.Conv2d, 3: torch.nn.Conv3d}


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """These tensors are tiny: torch's intra-op pool only adds wake-up latency (tens of ms
    per call on a busy machine), so run the references on one thread, then restore."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _grads(ty, g, tensors):
    """Backpropagate ``g`` through ``ty``; the gradients of ``tensors`` as numpy."""
    ty.backward(torch.from_numpy(g))
    return [None if t is None else t.grad.numpy() for t in tensors]


def _check_layer(y, grads_vjp, grads_bwd, ref_y, ref_grads, dtype, what):
    """``y`` and both routes' ``(dx, dw, db)`` against torch's."""
    assert_close(y, ref_y, dtype, f"{what} y")
    for route, grads in (("vjp", grads_vjp), ("backward", grads_bwd)):
        assert len(grads) == 3
        for name, got, ref in zip(("dx", "dw", "db"), grads, ref_grads):
            assert got.dtype == np.dtype(dtype), f"{what} {route} {name} dtype"
            assert_close(got, ref, dtype, f"{what} {route} {name}")


def _run_fftconv(x, w, b, g, **kw):
    """``y`` from forward and vjp (must agree), the pullback's and backward's gradients."""
    y, pullback = fftconv.vjp(x, w, b, **kw)
    assert_close(fftconv.forward(x, w, b, **kw), y, y.dtype, "forward vs vjp")
    return y, pullback(g), fftconv.backward(g, x, w, **kw)


def _bias_grad(g):
    return g.sum(axis=(0,) + tuple(range(2, g.ndim)))


# -- (a) transposed convolution ------------------------------------------------------------
# (nd, N, C_in, C_out, spatial, kernel, stride, dilation, groups, padding, output_padding, bias)
# ``padding`` is what fftconv gets; ints / per-axis ints go to torch as they are, while
# (lo, hi) pairs and "same"/"valid" are checked against torch's padding-0 output, cropped.
TRANSPOSED = [
    (1, 2, 3, 4, (7,), (3,), 2, 1, 1, 1, 1, True),
    (1, 2, 4, 6, (6,), (4,), 3, 1, 2, 2, 2, False),            # groups, op = stride - 1
    (1, 1, 2, 3, (5,), (3,), 1, 3, 1, 0, 2, True),             # op >= stride, op < dilation
    (2, 2, 4, 4, (5, 4), (3, 2), (2, 1), (1, 2), 2, (1, 0), (1, 0), True),
    (2, 1, 3, 2, (4, 5), (2, 3), (1, 2), (3, 1), 1, (2, 1), (2, 1), False),  # op 2 >= s 1, d 3
    (3, 2, 2, 4, (3, 4, 3), (2, 3, 2), (2, 1, 2), (1, 1, 2), 2, (0, 1, 1), (1, 0, 1), True),
    (2, 2, 3, 4, (5, 4), (3, 4), (2, 3), 1, 1, ((2, 0), (1, 3)), (1, 2), True),  # (lo, hi) pairs
    (2, 1, 2, 2, (4, 5), (3, 2), (2, 3), (1, 2), 2, "same", 0, True),
    (1, 2, 2, 2, (5,), (2,), 3, 1, 1, "same", 0, False),      # ke < stride: "same" zero-extends
    (1, 2, 3, 3, (6,), (3,), 2, 2, 3, "valid", 1, True),      # depthwise
]
TRANSPOSED_IDS = [f"{c[0]}d-s{c[6]}-d{c[7]}-g{c[8]}-p{c[9]}-op{c[10]}-{'b' if c[11] else 'nob'}"
                  .replace(" ", "") for c in TRANSPOSED]


def _transposed_pairs(padding, n, k, s, d):
    """``(lo, hi)`` per axis as CONVENTIONS §1/§2 define it for a transposed layer."""
    nd = len(n)
    if padding == "valid":
        return [(0, 0)] * nd
    if padding == "same":  # the "same" padding of the forward conv over n*s samples
        pairs = []
        for ni, ki, si, di in zip(n, k, s, d):
            length, ke = ni * si, di * (ki - 1) + 1
            total = max((-(-length // si) - 1) * si + ke - length, 0)
            pairs.append((total // 2, total - total // 2))
        return pairs
    if isinstance(padding, int):
        return [(padding, padding)] * nd
    return [(p, p) if isinstance(p, int) else tuple(p) for p in padding]


def _torch_transposed(x, w, b, nd, stride, dilation, groups, padding, ops):
    """``(y, [tx, tw, tb])`` from torch; cropping/zero-extending a padding-0 output
    (``F.pad`` with negative amounts) for what torch's ``padding`` cannot say."""
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(w, requires_grad=True)
    tb = None if b is None else torch.tensor(b, requires_grad=True)
    conv = CONV_TRANSPOSE[nd]
    symmetric = isinstance(padding, int) or (
        not isinstance(padding, str) and all(isinstance(p, int) for p in padding))
    if symmetric:
        ty = conv(tx, tw, tb, stride=stride, padding=padding, output_padding=ops,
                  groups=groups, dilation=dilation)
        return ty, [tx, tw, tb]
    s, d, op = (tuple(v) if not isinstance(v, int) else (v,) * nd for v in (stride, dilation, ops))
    pairs = _transposed_pairs(padding, x.shape[2:], w.shape[2:], s, d)
    full = conv(tx, tw, None, stride=stride, padding=0, groups=groups, dilation=dilation)
    if padding == "same":  # n*s outputs starting at lo
        n = x.shape[2:]
        amounts = [(-lo, n_i * s_i - (full.shape[2 + i] - lo))
                   for i, ((lo, _), n_i, s_i) in enumerate(zip(pairs, n, s))]
    else:
        amounts = [(-lo, o - hi) for (lo, hi), o in zip(pairs, op)]
    flat = [a for pair in reversed(amounts) for a in pair]  # F.pad: last axis first
    ty = F.pad(full, flat)
    if tb is not None:
        ty = ty + tb.reshape((1, -1) + (1,) * nd)
    return ty, [tx, tw, tb]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("case", TRANSPOSED, ids=TRANSPOSED_IDS)
def test_transposed_against_torch(case, algorithm):
    nd, n, c_in, c_out, xs, ks, stride, dilation, groups, padding, ops, bias = case
    rng = np.random.default_rng(TRANSPOSED.index(case))
    x = random_array(rng, (n, c_in) + xs, F64)
    w = random_array(rng, (c_in, c_out // groups) + ks, F64)
    b = random_array(rng, (c_out,), F64) if bias else None
    ty, tensors = _torch_transposed(x, w, b, nd, stride, dilation, groups, padding, ops)
    g = random_array(rng, tuple(ty.shape), F64)
    tdx, tdw, tdb = _grads(ty, g, tensors)
    if tdb is None:
        tdb = _bias_grad(g)
    kw = dict(transposed=True, output_padding=ops, padding=padding, stride=stride,
              dilation=dilation, groups=groups, algorithm=algorithm)
    y, grads_vjp, grads_bwd = _run_fftconv(x, w, b, g, **kw)
    _check_layer(y, grads_vjp, grads_bwd, ty.detach().numpy(), (tdx, tdw, tdb), F64,
                 "transposed")


def test_transposed_same_is_n_times_stride():
    x, w = np.ones((1, 2, 5, 3)), np.ones((2, 3, 4, 1))
    y = fftconv.forward(x, w, transposed=True, padding="same", stride=(3, 2))
    assert y.shape == (1, 3, 15, 6)


# -- (b) padding modes -----------------------------------------------------------------------
# (nd, N, C_in, C_out, spatial, kernel, stride, dilation, groups, padding)
MODE_CASES = [
    (1, 2, 3, 4, (9,), (3,), 2, 1, 1, 2),
    (1, 1, 4, 2, (8,), (2,), 1, 3, 2, 3),
    (2, 2, 2, 4, (7, 6), (3, 2), (1, 2), (2, 1), 2, (2, 1)),
    (2, 1, 3, 3, (6, 8), (3, 3), 2, 1, 3, 1),
    (3, 1, 2, 2, (5, 4, 6), (2, 3, 2), (2, 1, 1), 1, 1, (1, 2, 1)),
    (3, 2, 2, 4, (4, 5, 5), (3, 2, 3), 1, (1, 2, 1), 2, (2, 1, 3)),
    # padding="same" (torch: stride 1); odd kernels, and an even one (asymmetric halo)
    (1, 2, 2, 3, (7,), (5,), 1, 1, 1, "same"),
    (2, 1, 2, 2, (6, 5), (3, 3), 1, (2, 1), 2, "same"),
    (2, 2, 3, 3, (6, 7), (4, 3), 1, 1, 1, "same"),
]
MODES = ("circular", "reflect", "replicate")
MODE_IDS = [f"{c[0]}d-s{c[6]}-d{c[7]}-g{c[8]}-p{c[9]}".replace(" ", "") for c in MODE_CASES]


def _torch_module(nd, c_in, c_out, ks, stride, dilation, groups, padding, mode, w, b):
    m = CONV_MODULE[nd](c_in, c_out, ks, stride=stride, padding=padding, dilation=dilation,
                        groups=groups, bias=b is not None, padding_mode=mode,
                        dtype=torch.float64)
    with torch.no_grad():
        m.weight.copy_(torch.from_numpy(w))
        if b is not None:
            m.bias.copy_(torch.from_numpy(b))
    return m


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", MODE_CASES, ids=MODE_IDS)
def test_padding_mode_against_torch(case, mode, algorithm):
    nd, n, c_in, c_out, xs, ks, stride, dilation, groups, padding = case
    rng = np.random.default_rng(100 + MODE_CASES.index(case))
    x = random_array(rng, (n, c_in) + xs, F64)
    w = random_array(rng, (c_out, c_in // groups) + ks, F64)
    b = random_array(rng, (c_out,), F64) if MODE_CASES.index(case) % 2 == 0 else None
    m = _torch_module(nd, c_in, c_out, ks, stride, dilation, groups, padding, mode, w, b)
    tx = torch.tensor(x, requires_grad=True)
    ty = m(tx)
    g = random_array(rng, tuple(ty.shape), F64)
    tdx, tdw, tdb = _grads(ty, g, [tx, m.weight, m.bias])
    if tdb is None:
        tdb = _bias_grad(g)
    kw = dict(padding_mode=mode, padding=padding, stride=stride, dilation=dilation,
              groups=groups, algorithm=algorithm)
    y, grads_vjp, grads_bwd = _run_fftconv(x, w, b, g, **kw)
    _check_layer(y, grads_vjp, grads_bwd, ty.detach().numpy(), (tdx, tdw, tdb), F64, mode)


def _last(a, weights=False):
    """Channels-first -> channels-last: x ``(N, C, *sp)`` -> ``(N, *sp, C)``;
    weights ``(A, B, *k)`` -> ``(*k, B, A)``."""
    nd = a.ndim - 2
    if weights:
        return np.ascontiguousarray(a.transpose(tuple(range(2, 2 + nd)) + (1, 0)))
    return np.ascontiguousarray(np.moveaxis(a, 1, -1))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_channels_last_layers_against_torch(algorithm):
    """``layout="channels_last"`` with a padding mode and with a transposed layer."""
    rng = np.random.default_rng(7)
    # a reflect-padded 2-d convolution with groups
    x = random_array(rng, (2, 4, 6, 7), F64)
    w = random_array(rng, (6, 2, 3, 2), F64)
    b = random_array(rng, (6,), F64)
    m = _torch_module(2, 4, 6, (3, 2), (2, 1), (1, 2), 2, (2, 1), "reflect", w, b)
    tx = torch.tensor(x, requires_grad=True)
    ty = m(tx)
    g = random_array(rng, tuple(ty.shape), F64)
    tdx, tdw, tdb = _grads(ty, g, [tx, m.weight, m.bias])
    kw = dict(layout="channels_last", padding_mode="reflect", padding=(2, 1), stride=(2, 1),
              dilation=(1, 2), groups=2, algorithm=algorithm)
    y, grads_vjp, grads_bwd = _run_fftconv(_last(x), _last(w, True), b, _last(g), **kw)
    _check_layer(y, grads_vjp, grads_bwd, _last(ty.detach().numpy()),
                 (_last(tdx), _last(tdw, True), tdb), F64, "channels_last reflect")
    # a transposed 1-d convolution with groups and output_padding
    x = random_array(rng, (2, 4, 5), F64)
    w = random_array(rng, (4, 3, 3), F64)   # (C_in, C_out // groups, k), C_out = 6
    b = random_array(rng, (6,), F64)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ty = F.conv_transpose1d(tx, tw, tb, stride=2, padding=1, output_padding=1, groups=2)
    g = random_array(rng, tuple(ty.shape), F64)
    tdx, tdw, tdb = _grads(ty, g, [tx, tw, tb])
    kw = dict(layout="channels_last", transposed=True, padding=1, stride=2, output_padding=1,
              groups=2, algorithm=algorithm)
    y, grads_vjp, grads_bwd = _run_fftconv(_last(x), _last(w, True), b, _last(g), **kw)
    _check_layer(y, grads_vjp, grads_bwd, _last(ty.detach().numpy()),
                 (_last(tdx), _last(tdw, True), tdb), F64, "channels_last transposed")


# -- (c) complex transposed convolution ------------------------------------------------------
COMPLEX_TRANSPOSED = [
    (1, (2, 4, 6), (4, 3, 3), dict(stride=2, dilation=1, groups=2, padding=1, output_padding=1)),
    (1, (1, 2, 5), (2, 2, 2), dict(stride=1, dilation=3, groups=1, padding=0, output_padding=2)),
    (2, (2, 2, 4, 5), (2, 3, 2, 3), dict(stride=(2, 1), dilation=(1, 2), groups=1,
                                         padding=(1, 2), output_padding=(1, 0))),
]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("case", COMPLEX_TRANSPOSED, ids=["1d-s2-g2", "1d-d3-op2", "2d"])
def test_complex_transposed_against_torch(case, algorithm):
    """PyTorch's convention: ``y.backward(dy)`` gives the gradient w.r.t. the conjugate."""
    nd, xs, ws, kw = case
    try:
        CONV_TRANSPOSE[nd](torch.zeros((1, 1) + (3,) * nd, dtype=torch.complex128),
                           torch.zeros((1, 1) + (2,) * nd, dtype=torch.complex128))
    except RuntimeError:
        pytest.skip("this torch has no complex transposed convolution")
    rng = np.random.default_rng(300 + COMPLEX_TRANSPOSED.index(case))
    x = random_array(rng, xs, np.complex128)
    w = random_array(rng, ws, np.complex128)
    b = random_array(rng, (ws[1] * kw["groups"],), np.complex128)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ty = CONV_TRANSPOSE[nd](tx, tw, tb, **kw)
    g = random_array(rng, tuple(ty.shape), np.complex128)
    ref_grads = _grads(ty, g, [tx, tw, tb])
    y, grads_vjp, grads_bwd = _run_fftconv(x, w, b, g, transposed=True, algorithm=algorithm,
                                           **kw)
    assert y.dtype == np.complex128
    _check_layer(y, grads_vjp, grads_bwd, ty.detach().numpy(), ref_grads, np.complex128,
                 f"complex {nd}d transposed")
