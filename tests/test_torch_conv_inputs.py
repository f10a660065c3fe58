"""Issue 22, item 7: ``fftconv.torch.conv`` against ``torch.nn.functional.conv*d`` and
``conv_transpose*d`` on inputs shaped like PyTorch's own convolution tests (the
``sample_inputs_conv*`` of its OpInfos: batched and unbatched, with and without bias,
strides, padding ints and strings, dilation, groups; float64 and complex128): values
and the gradients of x, w and b.  A real/complex mix is refused up front, and the
messages name ``fftconv.torch.conv``."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional
import fftconv.torch as ft  # noqa: E402

# (x shape, w shape, bias, keywords) as in PyTorch's sample_inputs_conv{1,2,3}d
CONV = [
    ((1, 3, 4), (3, 3, 3), True, {}),
    ((2, 4, 8), (2, 2, 3), True, dict(stride=2, padding=1, groups=2)),
    ((1, 4, 5), (3, 4, 3), False, dict(padding=2, stride=2, dilation=2)),
    ((4, 8), (8, 2, 3), True, dict(groups=2)),                          # unbatched
    ((2, 2, 8), (6, 1, 4), True, dict(padding="same", groups=2)),
    ((4, 7), (4, 4, 3), False, dict(padding="valid")),                  # unbatched
    ((1, 3, 4, 4), (3, 3, 3, 3), True, {}),
    ((2, 4, 8, 8), (4, 2, 3, 3), True, dict(stride=(2, 1), padding=(1, 2), groups=2)),
    ((3, 5, 6), (4, 3, 2, 3), True, dict(dilation=(2, 1), padding=1)),  # unbatched
    ((1, 2, 6, 6), (4, 2, 4, 3), False, dict(padding="same", dilation=(1, 2))),
    ((1, 2, 4, 4, 4), (3, 2, 3, 3, 3), True, dict(padding=1)),
    ((2, 4, 5, 4), (2, 1, 2, 2, 2), True, dict(groups=2, stride=2)),    # unbatched
]
TRANSPOSED = [
    ((1, 3, 4), (3, 3, 3), True, dict(stride=2, padding=2, output_padding=1)),
    ((4, 6), (4, 2, 3), True, dict(groups=2, dilation=2)),             # unbatched
    ((2, 2, 4, 4), (2, 3, 3, 3), True, dict(stride=(2, 3), padding=1, output_padding=(1, 2))),
    ((3, 4, 5), (3, 2, 2, 3), False, dict(stride=2)),                   # unbatched
    ((1, 2, 3, 3, 3), (2, 2, 2, 2, 2), True, dict(stride=2)),
    ((2, 3, 3, 3), (2, 2, 3, 3, 3), True, dict(padding=1)),             # unbatched
]


def torch_conv(x, w, b, transposed, kw):
    nd = w.dim() - 2
    if transposed:
        return getattr(F, f"conv_transpose{nd}d")(x, w, b, **kw)
    return getattr(F, f"conv{nd}d")(x, w, b, **kw)


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
@pytest.mark.parametrize("algorithm", ["fft", "direct", "auto"])
@pytest.mark.parametrize("case", [(c, False) for c in CONV] + [(c, True) for c in TRANSPOSED],
                         ids=lambda c: f"{'T' if c[1] else ''}{c[0][0]}x{c[0][1]}-{c[0][3]}")
def test_values_and_gradients_equal_torch_functional(case, algorithm, dtype):
    (x_shape, w_shape, bias, kw), transposed = case
    g = torch.Generator().manual_seed(len(x_shape) * 7 + len(kw))
    x = torch.randn(x_shape, dtype=dtype, generator=g, requires_grad=True)
    w = torch.randn(w_shape, dtype=dtype, generator=g, requires_grad=True)
    c_out = w_shape[1] * kw.get("groups", 1) if transposed else w_shape[0]
    b = torch.randn(c_out, dtype=dtype, generator=g, requires_grad=True) if bias else None
    ref = torch_conv(x, w, b, transposed, kw)
    y = ft.conv(x, w, b, transposed=transposed, algorithm=algorithm, **kw)
    assert y.shape == ref.shape and y.dtype == ref.dtype
    torch.testing.assert_close(y, ref, rtol=1e-10, atol=1e-10)
    dy = torch.randn(ref.shape, dtype=dtype, generator=g)
    inputs = [t for t in (x, w, b) if t is not None]
    got = torch.autograd.grad(y, inputs, dy)
    want = torch.autograd.grad(ref, inputs, dy)
    for name, a, e in zip("xwb", got, want):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-10, msg=f"d{name}")


def test_unbatched_native_conv_and_channels_last():
    x = torch.randn(3, 10, dtype=torch.float64)
    w = torch.randn(4, 3, 3, dtype=torch.float64)
    y = ft.native_conv(x, w, padding="same")
    torch.testing.assert_close(y, F.conv1d(x, w, padding="same"))
    # channels-last: x (*spatial, C), w (*kernel, C_in, C_out)
    y = ft.conv(x.T.contiguous(), w.permute(2, 1, 0).contiguous(), padding="same",
                layout="channels_last", algorithm="fft")
    torch.testing.assert_close(y, F.conv1d(x, w, padding="same").T)


@pytest.mark.parametrize("complex_one", ["x", "w", "b"])
@pytest.mark.parametrize("algorithm", ["fft", "native", "auto"])
def test_a_real_complex_mix_is_refused_up_front(complex_one, algorithm):
    real = dict(x=torch.randn(2, 3, 8, dtype=torch.float64, requires_grad=True),
                w=torch.randn(4, 3, 3, dtype=torch.float64, requires_grad=True),
                b=torch.randn(4, dtype=torch.float64, requires_grad=True))
    ops = dict(real, **{complex_one: real[complex_one].detach().to(torch.complex128)})
    with pytest.raises(TypeError, match=r"^fftconv\.torch\.conv: x, w, b must be all real or all "
                                        r"complex \(as torch\.nn\.functional\.conv\*d requires\), "
                                        r"got x\.dtype=torch\.\w+, w\.dtype=torch\.\w+, "
                                        r"b\.dtype=torch\.\w+; cast them to one kind"):
        ft.conv(ops["x"], ops["w"], ops["b"], algorithm=algorithm)
    if complex_one != "b":
        with pytest.raises(TypeError, match=r"^fftconv\.torch\.conv: x, w must be all real"):
            ft.conv(ops["x"], ops["w"], algorithm=algorithm)
    # PyTorch refuses the mix too
    with pytest.raises(RuntimeError):
        F.conv1d(ops["x"], ops["w"], ops["b"])


def test_a_module_with_a_complex_bias_on_real_weights_is_refused():
    layer = ft.FFTConv1d(3, 4, 3, algorithm="fft", dtype=torch.float64)
    layer.bias = torch.nn.Parameter(layer.bias.detach().to(torch.complex128))
    with pytest.raises(TypeError, match=r"^fftconv\.torch\.FFTConv1d: x, w, b must be all real "
                                        r"or all complex"):
        layer(torch.randn(2, 3, 8, dtype=torch.float64))


@pytest.mark.parametrize("algorithm", ["fft", "direct", "auto", "native"])
def test_messages_name_fftconv_torch_conv(algorithm):
    x = torch.randn(2, 4, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 2, 3, dtype=torch.float64, requires_grad=True)
    with pytest.raises(ValueError, match=r"^fftconv\.torch\.conv: b must have shape \(C_out,\) = "
                                         r"\(6,\), got b\.shape=\(5,\)"):
        ft.conv(x, w, torch.zeros(5, dtype=torch.float64), groups=2, algorithm=algorithm)
    with pytest.raises(ValueError, match=r"^fftconv\.torch\.conv: w\.shape\[1\] must equal "
                                         r"C_in // groups = 4"):
        ft.conv(x, w, algorithm=algorithm)
    with pytest.raises(ValueError, match=r"^fftconv\.torch\.conv: stride must be >= 1"):
        ft.conv(x, w, groups=2, stride=0, algorithm=algorithm)
    with pytest.raises(ValueError, match=r"^fftconv\.torch\.conv: the dilated kernel"):
        ft.conv(x[..., :2], w, groups=2, algorithm=algorithm)
    with pytest.raises(ValueError, match=r"^fftconv\.torch\.conv: x must have shape \(N, C_in, "
                                         r"\*spatial\) with at least one spatial axis"):
        ft.conv(x[0, 0], w, groups=2, algorithm=algorithm)


def test_bad_algorithm_and_non_tensors_name_fftconv_torch_conv():
    x, w = torch.randn(1, 2, 8), torch.randn(3, 2, 3)
    with pytest.raises(ValueError, match=r"^fftconv\.torch\.conv: algorithm must be one of "
                                         r"\('auto', 'native', .*'fft'.*\), got algorithm='fast'"):
        ft.conv(x, w, algorithm="fast")
    with pytest.raises(TypeError, match=r"^fftconv\.torch\.conv: x must be a torch\.Tensor, got "
                                        r"numpy\.ndarray; fftconv\.forward takes numpy arrays"):
        ft.conv(np.ones((1, 2, 8), np.float32), w)
    with pytest.raises(TypeError, match=r"^fftconv\.torch\.native_conv: w must be a "
                                        r"torch\.Tensor"):
        ft.native_conv(x, [[[1.0, 2.0, 3.0]]] * 3)
