"""``padding="causal"`` (CONVENTIONS §2, Keras's meaning) on every entry point.

The rule: ``(d*(k-1), 0)`` per axis, ``(n - 1) // s + 1 = ceil(n / s)`` outputs,
output ``i`` reading inputs ``<= i*s``.  A causal transposed layer crops
``d*(k-1) + 1 - s`` at the end only (``n * s`` outputs, output ``t`` reading
inputs ``i`` with ``i*s <= t``).  Checked here: the integer rule, a seeded
sweep against the oracle with the explicit padding ``[(d*(k-1), 0)] * nd``
(every algorithm, padding mode, dtype, 1-3 axes, stride, dilation, groups,
transposed), the 1-D ``(lo, hi)`` pair, causality and the absence of
wrap-around at FFT sizes equal to the input, and ``Conv``, ``fftconv.torch``
(against ``F.pad`` + ``F.conv*d``) and ``fftconv.dask``.
"""
import numpy as np
import pytest

import fftconv
import oracle
from conftest import ALGORITHMS, assert_close, random_array
from fftconv.geometry import effective_kernel, make_layer, resolve_padding


def _per_axis(v, nd):
    return (v,) * nd if isinstance(v, int) else tuple(v)


def _explicit(kernel, dilation):
    """The explicit padding ``"causal"`` means: ``[(d*(k-1), 0)]`` per axis."""
    return [(d * (k - 1), 0) for k, d in zip(kernel, dilation)]


# -- the integer rule ----------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 7, 8, 9, 64])
@pytest.mark.parametrize("k", [1, 2, 5])
@pytest.mark.parametrize("s", [1, 2, 3])
@pytest.mark.parametrize("d", [1, 3])
def test_causal_geometry(n, k, s, d):
    pads = resolve_padding("causal", (n,), (k,), (s,), (d,), False)
    assert pads == ((d * (k - 1), 0),)
    for flip in (False, True):
        layer = make_layer((1, 1, n), (1, 1, k), "causal", (s,), (d,), 1, flip, True)
        assert layer.out_size == ((n - 1) // s + 1,) == (-(-n // s),)
        # transposed: n * s outputs, nothing cropped at the start
        t = make_layer((1, 1, n), (1, 1, k), "causal", (s,), (d,), 1, flip, True,
                       transposed=True)
        assert t.out_size == (n * s,)
        assert t.padding[0][0] == 0


# -- the seeded sweep against the oracle -----------------------------------------------------
def _configs(seed=2121, count=36):
    rng = np.random.default_rng(seed)
    modes = ("zeros", "zeros", "circular", "reflect", "replicate")
    out = []
    while len(out) < count:
        nd = int(rng.integers(1, 4))
        groups = int(rng.choice([1, 1, 2, 3]))
        depthwise = rng.random() < 0.3
        c_in = groups * (1 if depthwise else int(rng.integers(1, 3)))
        c_out = groups * int(rng.integers(1, 3))
        spatial = tuple(int(v) for v in rng.integers(3, {1: 20, 2: 9, 3: 6}[nd], size=nd))
        kernel = tuple(int(v) for v in rng.integers(1, 5, size=nd))
        stride = tuple(int(v) for v in rng.choice([1, 1, 2, 3], size=nd))
        dilation = tuple(int(v) for v in rng.choice([1, 1, 2], size=nd))
        mode = str(rng.choice(modes))
        halo = [d * (k - 1) for k, d in zip(kernel, dilation)]
        if mode == "reflect" and any(h >= n for h, n in zip(halo, spatial)):
            continue
        if mode == "circular" and any(h > n for h, n in zip(halo, spatial)):
            continue
        out.append(dict(nd=nd, x_shape=(int(rng.integers(1, 3)), c_in) + spatial,
                        w_shape=(c_out, c_in // groups) + kernel, bias=rng.random() < 0.5,
                        kw=dict(stride=stride, dilation=dilation, groups=groups,
                                flip_kernel=bool(rng.random() < 0.3), padding_mode=mode)))
    return out


CONFIGS = _configs()


def test_causal_sweep_covers():
    assert {c["nd"] for c in CONFIGS} == {1, 2, 3}
    assert {c["kw"]["padding_mode"] for c in CONFIGS} == {"zeros", "circular", "reflect",
                                                            "replicate"}
    assert any(max(c["kw"]["stride"]) > 1 for c in CONFIGS)
    assert any(max(c["kw"]["dilation"]) > 1 for c in CONFIGS)
    assert any(c["kw"]["flip_kernel"] for c in CONFIGS)
    assert any(c["kw"]["groups"] == c["x_shape"][1] > 1 for c in CONFIGS)


@pytest.mark.parametrize("dtype", ["float64", "float32", "complex128"])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("idx", range(len(CONFIGS)))
def test_causal_sweep(idx, algorithm, dtype):
    c = CONFIGS[idx]
    rng = np.random.default_rng(idx)
    x = random_array(rng, c["x_shape"], dtype)
    w = random_array(rng, c["w_shape"], dtype)
    b = random_array(rng, (c["w_shape"][0],), dtype) if c["bias"] else None
    explicit = _explicit(c["w_shape"][2:], c["kw"]["dilation"])
    y_ref = oracle.oracle_forward(x, w, b, padding=explicit, **c["kw"])
    y = fftconv.forward(x, w, b, padding="causal", algorithm=algorithm, **c["kw"])
    assert y.shape[2:] == tuple(-(-n // s) for n, s in zip(c["x_shape"][2:], c["kw"]["stride"]))
    assert_close(y, y_ref, dtype, "y")
    dy = random_array(rng, y_ref.shape, dtype)
    g_ref = oracle.oracle_backward(dy, x, w, padding=explicit, **c["kw"])
    g = fftconv.backward(dy, x, w, padding="causal", algorithm=algorithm, **c["kw"])
    assert_close(g.dx, g_ref.dx, dtype, "dx")
    assert_close(g.dw, g_ref.dw, dtype, "dw")
    y2, pullback = fftconv.vjp(x, w, b, padding="causal", algorithm=algorithm, **c["kw"])
    assert_close(y2, y_ref, dtype, "vjp y")
    assert_close(pullback(dy).dx, g_ref.dx, dtype, "vjp dx")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("nd, n, k, s, d, groups", [
    (1, 9, 3, 2, 1, 1), (1, 8, 5, 3, 2, 2), (1, 10, 2, 4, 1, 1),   # ke < s: output_padding
    (2, 5, 3, 2, 1, 1), (2, 4, 2, (1, 3), (2, 1), 2)])
def test_causal_transposed(algorithm, nd, n, k, s, d, groups):
    """A causal transposed layer is the transposed layer with ``(0, ke - s)`` cropped
    (``output_padding = s - ke`` when ``ke < s``): ``n * s`` outputs, and output ``t``
    hears inputs ``i`` with ``i*s <= t`` only."""
    rng = np.random.default_rng(n * 7 + k)
    s, d = _per_axis(s, nd), _per_axis(d, nd)
    x = rng.standard_normal((2, 2 * groups) + (n,) * nd)
    w = rng.standard_normal((2 * groups, 1) + (k,) * nd)
    kes = [effective_kernel(k, di) for di in d]
    pads = [(0, max(ke - si, 0)) for ke, si in zip(kes, s)]
    ops = tuple(max(si - ke, 0) for ke, si in zip(kes, s))
    kw = dict(stride=s, dilation=d, groups=groups, transposed=True)
    y_ref = oracle.oracle_transposed_forward(x, w, None, padding=pads, stride=s, dilation=d,
                                             groups=groups, output_padding=ops)
    y = fftconv.forward(x, w, padding="causal", algorithm=algorithm, **kw)
    assert y.shape[2:] == tuple(n * si for si in s)
    assert_close(y, y_ref, np.float64, "transposed y")
    dy = rng.standard_normal(y.shape)
    g_ref = oracle.oracle_transposed_backward(dy, x, w, padding=pads, stride=s, dilation=d,
                                              groups=groups, output_padding=ops)
    g = fftconv.backward(dy, x, w, padding="causal", algorithm=algorithm, **kw)
    assert_close(g.dx, g_ref.dx, np.float64, "transposed dx")
    assert_close(g.dw, g_ref.dw, np.float64, "transposed dw")
    if nd == 1:   # causality: input j moves outputs t >= j*s only
        j = n // 2
        x2 = x.copy()
        x2[..., j] += 1.0
        delta = fftconv.forward(x2, w, padding="causal", algorithm=algorithm, **kw) - y
        assert np.abs(delta[..., :j * s[0]]).max() <= 1e-12 * np.abs(delta).max()
        assert np.abs(delta[..., j * s[0]:]).max() > 0.1


def test_causal_transposed_output_padding_error():
    x, w = np.ones((1, 1, 8)), np.ones((1, 1, 3))
    with pytest.raises(ValueError, match=r"fftconv\.forward: output_padding must be 0 with "
                                         r"padding='causal' \(the output is n \* stride long\)"):
        fftconv.forward(x, w, padding="causal", transposed=True, stride=2, output_padding=1)


# -- the 1-D (lo, hi) pair -------------------------------------------------------------------
@pytest.mark.parametrize("algorithm", ["fft", "direct", "overlap_add"])
def test_one_d_pair(algorithm):
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal((2, 3, 40)), rng.standard_normal((3, 1, 40))
    y = fftconv.forward(x, w, padding=(39, 0), groups=3, algorithm=algorithm)
    assert y.shape == (2, 3, 40)
    np.testing.assert_allclose(y, fftconv.forward(x, w, padding=[(39, 0)], groups=3,
                                                  algorithm=algorithm), rtol=0, atol=1e-12)
    np.testing.assert_allclose(y, fftconv.forward(x, w, padding="causal", groups=3,
                                                  algorithm=algorithm), rtol=0, atol=1e-12)
    assert fftconv.plan((2, 3, 40), (3, 1, 40), padding=[2, 1], groups=3,
                        dtype=np.float64).out_shape == (2, 3, 4)
    assert fftconv.Conv1d(3, 3, 40, padding=(39, 0), groups=3)(x.astype(np.float32)).shape == \
        (2, 3, 40)


def test_two_d_pair_is_one_int_per_axis():
    rng = np.random.default_rng(6)
    x, w = rng.standard_normal((1, 1, 9, 9)), rng.standard_normal((1, 1, 3, 3))
    y = fftconv.forward(x, w, padding=(1, 2))
    assert y.shape == (1, 1, 9, 11)
    np.testing.assert_allclose(y, fftconv.forward(x, w, padding=[(1, 1), (2, 2)]), atol=1e-12)


def test_one_d_wrong_count_suggests_pair():
    x, w = np.ones((1, 1, 8)), np.ones((1, 1, 3))
    with pytest.raises(ValueError, match=r"fftconv\.forward: padding must have one entry per "
                                         r"spatial axis \(1\), got 3 in padding=\(1, 2, 3\); "
                                         r"for the one axis's \(lo, hi\) write "
                                         r"padding=\[\(lo, hi\)\]"):
        fftconv.forward(x, w, padding=(1, 2, 3))


# -- no wrap-around, causality ---------------------------------------------------------------
@pytest.mark.parametrize("algorithm", ["fft", "overlap_add", "direct", "auto"])
@pytest.mark.parametrize("n, k", [(64, 64), (64, 63), (128, 1), (256, 256), (60, 64), (63, 64)])
def test_causal_no_wrap_at_fft_size_of_input(algorithm, n, k):
    """Kernels as long as the input, lengths whose FFT size a careless implementation
    would take as ``n`` (a power of two): outputs equal the direct oracle and output
    ``i`` reads inputs ``<= i`` only."""
    rng = np.random.default_rng(n + k)
    x, w = rng.standard_normal((2, 4, n)), rng.standard_normal((4, 1, k))
    kw = dict(padding="causal", groups=4, algorithm=algorithm)
    y = fftconv.forward(x, w, **kw)
    assert y.shape == x.shape
    assert_close(y, oracle.oracle_forward(x, w, padding=[(k - 1, 0)], groups=4), np.float64, "y")
    assert_close(fftconv.forward(x, w, flip_kernel=True, **kw),
                 oracle.oracle_forward(x, w, padding=[(k - 1, 0)], groups=4, flip_kernel=True),
                 np.float64, "y flipped")
    for j in (0, n // 3, n - 1):
        x2 = x.copy()
        x2[:, :, j] += 10.0
        delta = fftconv.forward(x2, w, **kw) - y
        before = np.abs(delta[..., :j])
        if algorithm == "direct":
            assert not before.any(), "direct: an output before the perturbed input changed"
        else:   # the FFT paths: roundoff only, no wrapped copy of the perturbation
            assert before.size == 0 or before.max() <= 1e-12 * np.abs(delta).max()
        assert np.abs(delta[..., j:]).max() > 1e-3


@pytest.mark.parametrize("algorithm", ["fft", "overlap_add"])
def test_causal_fft_length_covers_padded_input(algorithm):
    """The FFT length per axis is at least the padded length ``n + lo + hi`` (no wrap)."""
    layer = make_layer((1, 8, 1024), (8, 1, 1024), "causal", (1,), (1,), 8, False, True)
    assert layer.conv.padded_size == (2047,)
    assert min(layer.conv.fft_shape) >= 2047
    p = fftconv.plan((1, 8, 1024), (8, 1, 1024), padding="causal", groups=8,
                     algorithm=algorithm, dtype=np.float64)
    assert p.out_shape == (1, 8, 1024)
    if algorithm == "fft":
        assert p.fft_shape[-1] >= 2047


def test_causal_circular_mode_wraps_on_request():
    """``padding_mode="circular"`` with causal amounts is the circular convolution (the
    one case where outputs read later inputs), as asked."""
    rng = np.random.default_rng(9)
    x, w = rng.standard_normal((1, 1, 16)), rng.standard_normal((1, 1, 16))
    y = fftconv.forward(x, w, padding="causal", padding_mode="circular")
    want = np.array([sum(w[0, 0, j] * x[0, 0, (i + j - 15) % 16] for j in range(16))
                     for i in range(16)])
    np.testing.assert_allclose(y[0, 0], want, atol=1e-12)


# -- Conv, plan, torch, dask -----------------------------------------------------------------
def test_conv_layer_causal():
    conv = fftconv.Conv1d(4, 4, 33, padding="causal", groups=4, dilation=2, rng=0,
                          dtype=np.float64)
    x = np.random.default_rng(1).standard_normal((2, 4, 50))
    y = conv(x)
    assert y.shape == x.shape
    assert_close(y, oracle.oracle_forward(x, conv.w, conv.b, padding=[(64, 0)], dilation=2,
                                          groups=4), np.float64, "Conv1d")
    assert "padding=causal" in repr(conv)
    p = fftconv.plan((2, 4, 50), (4, 1, 33), padding="causal", dilation=2, groups=4, stride=3,
                     dtype=np.float32)
    assert p.out_shape == (2, 4, 17)


torch = pytest.importorskip("torch")
F = torch.nn.functional


@pytest.mark.parametrize("algorithm", ["fft", "direct", "overlap_add", "native", "auto"])
@pytest.mark.parametrize("nd", [1, 2])
@pytest.mark.parametrize("padding_mode", ["zeros", "replicate", "circular"])
def test_torch_module_causal(algorithm, nd, padding_mode):
    import fftconv.torch as ft
    torch.manual_seed(nd)
    k, d, s = 5, 2, (1 if padding_mode == "circular" else 2)
    cls = {1: ft.FFTConv1d, 2: ft.FFTConv2d}[nd]
    m = cls(6, 6, k, padding="causal", groups=6, dilation=d, stride=s,
            padding_mode=padding_mode, algorithm=algorithm).double()
    x = torch.randn((2, 6) + (11,) * nd, dtype=torch.float64, requires_grad=True)
    y = m(x)
    conv = {1: F.conv1d, 2: F.conv2d}[nd]
    x_ref = x.detach().clone().requires_grad_(True)
    mode = "constant" if padding_mode == "zeros" else padding_mode
    ref = conv(F.pad(x_ref, (d * (k - 1), 0) * nd, mode=mode), m.weight, m.bias, stride=s,
               dilation=d, groups=6)
    assert y.shape == ref.shape == (2, 6) + (-(-11 // s),) * nd
    torch.testing.assert_close(y, ref)
    g = torch.randn_like(ref)
    grads = torch.autograd.grad(y, (x, m.weight, m.bias), g)
    grads_ref = torch.autograd.grad(ref, (x_ref, m.weight, m.bias), g)
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b)
    assert y[0].shape == m(x[0]).shape    # unbatched


@pytest.mark.parametrize("algorithm", ["fft", "native"])
def test_torch_transposed_module_and_conv_causal(algorithm):
    import fftconv.torch as ft
    torch.manual_seed(0)
    m = ft.FFTConvTranspose1d(4, 3, 5, stride=2, padding="causal", algorithm=algorithm).double()
    x = torch.randn(2, 4, 9, dtype=torch.float64)
    full = F.conv_transpose1d(x, m.weight, m.bias, stride=2)
    torch.testing.assert_close(m(x), full[..., :18])
    with pytest.raises(ValueError, match=r"output_size is not taken with padding='causal'"):
        m(x, output_size=[18])
    with pytest.raises(ValueError, match=r"output_padding must be 0 with padding='causal'"):
        ft.FFTConvTranspose1d(4, 3, 5, stride=2, padding="causal", output_padding=1)
    w = torch.randn(4, 1, 9, dtype=torch.float64)
    y = ft.conv(x, w, padding="causal", groups=4, flip_kernel=True, algorithm=algorithm)
    torch.testing.assert_close(y, F.conv1d(F.pad(x, (8, 0)), w.flip(-1), groups=4))
    y = ft.conv(x, w, padding=(8, 0), groups=4, algorithm=algorithm)
    torch.testing.assert_close(y, F.conv1d(F.pad(x, (8, 0)), w, groups=4))


def test_torch_revert_refuses_causal():
    import fftconv.torch as ft
    model = torch.nn.Sequential(ft.FFTConv1d(2, 2, 3, padding="causal"))
    with pytest.raises(ValueError, match=r"fftconv\.torch\.revert: PyTorch's layers have no "
                                         r"padding='causal', got it in 0"):
        ft.revert(model)


def test_dask_causal():
    da = pytest.importorskip("dask.array")
    import fftconv.dask as fd
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 4, 100))
    w = rng.standard_normal((4, 1, 31))
    dx_ = da.from_array(x, chunks=(1, 4, 23))
    for kw in (dict(), dict(stride=3, dilation=2)):
        yd = fd.forward(dx_, w, padding="causal", groups=4, **kw)
        y = yd.compute()
        np.testing.assert_allclose(y, fftconv.forward(x, w, padding="causal", groups=4, **kw),
                                   atol=1e-10)
        dy = rng.standard_normal(y.shape)
        g = fd.backward(da.from_array(dy, chunks=yd.chunks), dx_, w, padding="causal",
                        groups=4, **kw)
        ref = fftconv.backward(dy, x, w, padding="causal", groups=4, **kw)
        np.testing.assert_allclose(np.asarray(g.dx), ref.dx, atol=1e-10)
        np.testing.assert_allclose(np.asarray(g.dw), ref.dw, atol=1e-10)


@pytest.mark.parametrize("algorithm", ["fft", "overlap_add", "direct"])
def test_torch_long_conv_gradients_flip_kernel(algorithm):
    """The long convolution of sequence models through ``ft.conv`` (``flip_kernel=True``,
    whose weight gradient comes back as a flipped view) against the ``torch.fft``
    reference ``irfft(rfft(x, n=2L) * rfft(k, n=2L))[..., :L]``, gradients included."""
    import fftconv.torch as ft
    torch.manual_seed(2)
    x = torch.randn(2, 4, 128, dtype=torch.float64, requires_grad=True)
    k = torch.randn(4, 1, 128, dtype=torch.float64, requires_grad=True)
    y = ft.conv(x, k, padding="causal", groups=4, flip_kernel=True, algorithm=algorithm)
    ref = torch.fft.irfft(torch.fft.rfft(x, n=256) * torch.fft.rfft(k[:, 0], n=256), n=256)
    ref = ref[..., :128]
    torch.testing.assert_close(y, ref)
    dy = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad(y, (x, k), dy), torch.autograd.grad(ref, (x, k), dy)):
        torch.testing.assert_close(a, b)


def test_a_bool_in_a_one_d_pair_is_named_as_such():
    with pytest.raises(TypeError, match=r"fftconv\.forward: padding entries must be ints or "
                                        r"\(lo, hi\) pairs of ints, got padding=\(True, 0\)"):
        fftconv.forward(np.ones((1, 1, 8)), np.ones((1, 1, 3)), padding=(True, 0))
