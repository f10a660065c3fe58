"""Issue 22, item 5: a newcomer's papercuts, each a clear error (CONVENTIONS §5: the
function, the parameter, the rule and the value) or a documented behaviour."""
import sys
import warnings

import numpy as np
import pytest

import fftconv

X = np.ones((2, 3, 8, 8))
W = np.ones((4, 3, 3, 3))


def layer(**kw):
    return fftconv.Conv(3, 4, (3, 3), padding=1, rng=0, **kw)


def test_rebinding_w_to_another_kernel_size_is_an_error():
    conv = layer()
    with pytest.raises(ValueError, match=r"^fftconv\.Conv: w must have shape \(4, 3, 3, 3\) "
                                         r"\(in_channels=3, out_channels=4, kernel_size=\(3, 3\): "
                                         r"build a new layer for another kernel size\), got "
                                         r"w\.shape=\(4, 3, 5, 5\)"):
        conv.w = np.ones((4, 3, 5, 5), np.float32)
    assert conv.w.shape == (4, 3, 3, 3) and "kernel_size=(3, 3)" in repr(conv)
    with pytest.raises(TypeError, match=r"^fftconv\.Conv: w has dtype=float64 but the layer's "
                                        r"dtype is float32 \(no silent downcast\)"):
        conv.w = np.ones((4, 3, 3, 3))
    with pytest.raises(ValueError, match=r"^fftconv\.Conv: b must have shape \(4,\)"):
        conv.b = np.ones(5, np.float32)
    with pytest.raises(TypeError, match=r"^fftconv\.Conv: b cannot be None on a layer built "
                                        r"with one"):
        conv.b = None
    with pytest.raises(TypeError, match=r"^fftconv\.Conv: the layer has no b \(it was built "
                                        r"with bias=False\)"):
        layer(bias=False).b = np.ones(4, np.float32)
    # the same shape and dtype rebinds, and the layer computes with the new weights
    new = np.full((4, 3, 3, 3), 0.5, np.float32)
    conv.w = new
    assert conv.w is new
    x = np.ones((1, 3, 8, 8), np.float32)
    np.testing.assert_allclose(conv(x, grad=False),
                               fftconv.forward(x, new, conv.b, padding=1), rtol=1e-5)


def test_a_list_is_converted_to_the_layers_dtype():
    conv = fftconv.Conv(1, 1, (3,), rng=0)
    y = conv([[[1.0, 2.0, 3.0, 4.0]]])
    assert y.dtype == np.float32 and y.shape == (1, 1, 2)
    np.testing.assert_allclose(y, conv(np.array([[[1, 2, 3, 4]]], np.float32)), rtol=1e-6)
    with pytest.raises(TypeError, match=r"^fftconv\.Conv: x has dtype=complex128 \(read from a "
                                        r"list\) but the layer's dtype is float32"):
        conv([[[1j, 2.0, 3.0, 4.0]]])
    # an array keeps its dtype: no silent downcast
    with pytest.raises(TypeError, match=r"^fftconv\.Conv: x has dtype=float64 but the layer's "
                                        r"dtype is float32; cast x"):
        conv(np.ones((1, 1, 4)))


def test_channel_counts_are_counts_not_axes():
    with pytest.raises(ValueError, match=r"^fftconv\.Conv: in_channels must be an int >= 1, "
                                         r"got in_channels=0$"):
        fftconv.Conv(0, 1, (3,))
    with pytest.raises(ValueError, match=r"^fftconv\.Conv2d: out_channels must be an int >= 1, "
                                         r"got out_channels=-2$"):
        fftconv.Conv2d(1, -2, 3)


def test_conv_backward_names_itself():
    conv = layer()
    conv(np.ones((2, 3, 8, 8), np.float32))
    with pytest.raises(ValueError, match=r"^fftconv\.Conv\.backward: dy must have shape "
                                         r"\(2, 4, 8, 8\) .*got dy\.shape=\(1, 4, 8, 8\)"):
        conv.backward(np.ones((1, 4, 8, 8), np.float32))
    with pytest.raises(TypeError, match=r"^fftconv\.Conv\.backward: dy has dtype=float64"):
        conv.backward(np.ones((2, 4, 8, 8)))
    with pytest.raises(TypeError, match=r"^fftconv\.Conv\.backward: need_dx must be a bool"):
        conv.backward(np.ones((2, 4, 8, 8), np.float32), need_dx=None)
    assert conv.pending == 1          # a refused dy leaves the call on the tape
    conv.backward(np.ones((2, 4, 8, 8), np.float32))
    assert conv.pending == 0


@pytest.mark.parametrize("call", [
    lambda x, w: fftconv.forward(x, w),
    lambda x, w: fftconv.vjp(x, w),
])
def test_x_without_a_batch_axis_says_so(call):
    with pytest.raises(ValueError, match=r"^fftconv\.(forward|vjp): x lacks the batch axis: x must "
                                         r"have shape \(N, C_in, \*spatial\) with 2 spatial axes "
                                         r"as w has, got x\.shape=\(3, 8, 8\) with "
                                         r"w\.shape=\(4, 3, 3, 3\); for one sample add the axis "
                                         r"\(x\[None\]\)"):
        call(X[0], W)


def test_x_without_a_batch_axis_says_so_for_plans_and_layers():
    with pytest.raises(ValueError, match=r"^fftconv\.plan: x_shape lacks the batch axis: .* "
                                         r"add the axis \(\(1,\) \+ x_shape\)"):
        fftconv.plan((3, 8, 8), (4, 3, 3, 3), dtype=np.float64)
    with pytest.raises(ValueError, match=r"^fftconv\.forward: x lacks the batch axis: x must "
                                         r"have shape \(N, \*spatial, C_in\)"):
        fftconv.forward(np.ones((8, 8, 3)), np.ones((3, 3, 3, 4)), layout="channels_last")
    with pytest.raises(ValueError, match=r"^fftconv\.Conv: x lacks the batch axis: x must have "
                                         r"shape \(N, 3, \*spatial\) with 2 spatial axes, got "
                                         r"x\.shape=\(3, 8, 8\)"):
        layer()(np.ones((3, 8, 8), np.float32))


def test_a_torch_tensor_that_requires_grad_points_to_fftconv_torch():
    torch = pytest.importorskip("torch")
    x = torch.ones(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    with pytest.raises(TypeError, match=r"^fftconv\.forward: x is a torch tensor that requires "
                                        r"grad, .* use fftconv\.torch\.conv .* or pass "
                                        r"x\.detach\(\)"):
        fftconv.forward(x, W)
    with pytest.raises(TypeError, match=r"^fftconv\.backward: w is a torch tensor that requires"):
        fftconv.backward(np.ones((2, 4, 6, 6)), X, torch.ones(4, 3, 3, 3, requires_grad=True))
    # without requires_grad a CPU tensor is an operand like any array: a tensor comes back
    y = fftconv.forward(x.detach(), torch.from_numpy(W))
    assert isinstance(y, torch.Tensor) and y.shape == (2, 4, 6, 6)


def test_a_dask_array_points_to_fftconv_dask_without_computing_it():
    da = pytest.importorskip("dask.array")
    computed = []

    def block(b):
        computed.append(b.shape)
        return b
    x = da.ones((2, 3, 8, 8), chunks=(1, 3, 8, 8)).map_blocks(block)
    computed.clear()       # dask ran it on tiny blocks to learn its output type
    with pytest.raises(TypeError, match=r"^fftconv\.forward: x is a Dask array, which "
                                        r"fftconv\.forward would compute into memory whole; use "
                                        r"fftconv\.dask\.forward \(lazy, block by block\), or "
                                        r"pass x\.compute\(\)"):
        fftconv.forward(x, W)
    with pytest.raises(TypeError, match=r"^fftconv\.backward: dy is a Dask array, .* use "
                                        r"fftconv\.dask\.backward"):
        fftconv.backward(da.ones((2, 4, 6, 6)), X, W)
    with pytest.raises(TypeError, match=r"^Plan\.forward: x is a Dask array, .* use "
                                        r"fftconv\.dask\.forward"):
        fftconv.plan(X.shape, W.shape, dtype=np.float64).forward(x, W)
    assert computed == []
    # fftconv.dask itself still takes a Dask x (and computes a small Dask w, as before)
    import fftconv.dask as fd
    y = fd.forward(da.from_array(X, chunks=(1, 3, 8, 8)), da.from_array(W), padding=1)
    np.testing.assert_allclose(y.compute(), fftconv.forward(X, W, padding=1))


def test_the_core_detects_dask_and_torch_without_importing_them():
    """With neither importable (``sys.modules[name] = None``), the core's checks
    still run: they look for the frameworks in ``sys.modules``, never import them."""
    code = ("import sys; sys.modules['dask'] = sys.modules['torch'] = None\n"
            "import numpy as np, fftconv\n"
            "print(fftconv.forward(np.ones((1, 1, 4)), np.ones((1, 1, 2))).ravel())\n"
            "try:\n"
            "    fftconv.forward(np.ma.masked_array(np.ones((1, 1, 4))), np.ones((1, 1, 2)))\n"
            "except TypeError as e:\n"
            "    print(str(e).split(',')[0])\n")
    import subprocess
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["[2. 2. 2.]",
                                       "fftconv.forward: x is a numpy masked array"]


def test_a_masked_array_is_refused():
    x = np.ma.masked_array(X, mask=X * 0)
    x[0, 0, 2, 2] = np.ma.masked
    with pytest.raises(TypeError, match=r"^fftconv\.forward: x is a numpy masked array, whose "
                                        r"mask a convolution would ignore .* x\.filled\(0\) .* "
                                        r"np\.ma\.getdata\(x\)"):
        fftconv.forward(x, W)
    with pytest.raises(TypeError, match=r"^fftconv\.vjp: w is a numpy masked array"):
        fftconv.vjp(X, np.ma.masked_array(W))
    with pytest.raises(TypeError, match=r"^fftconv\.Conv: x is a numpy masked array"):
        layer(dtype=np.float64)(x)
    assert fftconv.forward(x.filled(0), W).shape == (2, 4, 6, 6)


@pytest.mark.parametrize("algorithm", ["fft", "overlap_add", "direct", "auto"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_raise_no_runtime_warning(algorithm, bad):
    """NaN and Inf behave alike: they spread as documented, with no numpy warning
    (``inf - inf`` in the spectra would say "invalid value encountered in matmul")."""
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 3, 16, 16)), rng.standard_normal((4, 3, 3, 3))
    x[0, 1, 3, 3] = bad
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y, pullback = fftconv.vjp(x, w, padding="same", algorithm=algorithm)
        dy = np.ones_like(y)
        dy[1, 0, 5, 5] = bad
        grads = pullback(dy)
        ww = w.copy()
        ww[0, 0, 1, 1] = bad
        fftconv.forward(rng.standard_normal(x.shape), ww.transpose(1, 0, 2, 3),
                        algorithm=algorithm, transposed=True,
                        padding=1)
    assert not np.isfinite(y[0]).all() and np.isfinite(y[1]).all()
    assert not np.isfinite(grads.dw).all()
