"""``fftconv.torch`` under ``torch.compile``, ``torch.export`` and ``torch.jit``:
the convolution is the custom operator ``fftconv::conv`` there (``fftconv.torch.ops``)."""
import warnings

import pytest

torch = pytest.importorskip("torch")
import torch.nn as nn  # noqa: E402

import fftconv.torch as ft  # noqa: E402
from fftconv.torch import bridge, ops  # noqa: E402


class _Model(nn.Module):
    """Conv1d (causal after conversion), Conv2d and ConvTranspose2d, as a user's model."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv1d(2, 3, 4)
        self.c2 = nn.Conv2d(3, 4, 5, padding=2)
        self.t2 = nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1)

    def forward(self, x):                               # x: (N, 2, 16)
        h = torch.tanh(self.c1(x))                      # (N, 3, 16): causal
        h = h.unsqueeze(-1) * h.unsqueeze(-2)           # (N, 3, 16, 16)
        return self.t2(torch.relu(self.c2(h)))          # (N, 2, 32, 32)


def _model(dtype=torch.float64, algorithm="fft"):
    torch.manual_seed(0)
    model = ft.convert(_Model(), algorithm=algorithm).to(dtype)
    model.c1.padding = "causal"
    return model


def _input(dtype=torch.float64):
    return torch.randn(2, 2, 16, generator=torch.Generator().manual_seed(1), dtype=dtype)


def _tolerance(dtype):
    return dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-9, atol=1e-9)


def _step(model, x):
    """Output and the gradients of every parameter and of ``x``."""
    x = x.clone().requires_grad_(True)
    y = model(x)
    params = list(model.parameters())
    grads = torch.autograd.grad((y * torch.cos(y)).sum(), params + [x])
    return y.detach(), grads


def _assert_step_equal(got, want, dtype):
    torch.testing.assert_close(got[0], want[0], **_tolerance(dtype))
    assert len(got[1]) == len(want[1])
    for g, r in zip(got[1], want[1]):
        torch.testing.assert_close(g, r, **_tolerance(dtype))


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("backend,dtype", [("eager", torch.float64),
                                           ("aot_eager", torch.float32),
                                           ("aot_eager", torch.float64)])
def test_compile_fullgraph_equals_eager(backend, dtype):
    model, x = _model(dtype), _input(dtype)
    want = _step(model, x)
    compiled = torch.compile(model, backend=backend, fullgraph=True)
    _assert_step_equal(_step(compiled, x), want, dtype)


def test_compile_inductor():
    """Inductor compiles around the op (which it calls as an extern kernel)."""
    model, x = _model(torch.float32), _input(torch.float32)
    want = _step(model, x)
    try:
        compiled = torch.compile(model, backend="inductor", fullgraph=True)
        got = _step(compiled, x)
    except Exception as error:  # a machine without a working C++ compiler
        if "compiler" in str(error).lower() or "InvalidCxxCompiler" in type(error).__name__:
            pytest.skip(f"inductor has no C++ compiler here: {error}")
        raise
    _assert_step_equal(got, want, torch.float32)


def test_compiled_graph_holds_the_op():
    """The trace is one graph whose convolutions are ``fftconv::conv`` nodes."""
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    model, x = _model(), _input()
    with torch.no_grad():
        torch.compile(model, backend=backend, fullgraph=True)(x)
    assert len(graphs) == 1
    targets = [str(n.target) for n in graphs[0].graph.nodes if n.op == "call_function"]
    assert sum("fftconv.conv" in t for t in targets) == 3, targets


def test_compile_auto_chooses_at_trace_time():
    """``"auto"`` is decided while tracing, from the shapes; the compiled model
    equals the eager one whichever path each layer took."""
    model, x = _model(algorithm="auto"), _input()
    want = _step(model, x)
    _assert_step_equal(_step(torch.compile(model, backend="aot_eager", fullgraph=True), x),
                       want, torch.float64)


def test_compile_recompiles_auto_per_shape():
    """A second input shape recompiles (Dynamo's automatic dynamic shapes are
    specialised again for ``"auto"`` layers, whose choice depends on them)."""
    model = _model(algorithm="auto")
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    with torch.no_grad():
        for n, length in ((2, 16), (3, 16), (3, 20)):
            x = torch.randn(n, 2, length, dtype=torch.float64)
            torch.testing.assert_close(compiled(x), model(x), rtol=1e-10, atol=1e-10)


def test_compile_dynamic_batch():
    model = _model()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True, dynamic=True)
    for n in (2, 3):
        x = torch.randn(n, 2, 16, dtype=torch.float64)
        _assert_step_equal(_step(compiled, x), _step(model, x), torch.float64)


def test_compile_fallback_dtype_is_native():
    """bfloat16 (no engine for it) traces as PyTorch's convolution; the once-per-process
    warning is issued at trace time."""
    model, x = _model(torch.bfloat16), _input(torch.bfloat16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ft.FallbackWarning)
        want = model(x)
        got = torch.compile(model, backend="eager", fullgraph=True)(x)
    torch.testing.assert_close(got, want)


def test_conv_function_compiles():
    """``ft.conv`` itself, keywords and all (a channels-last flipped layer)."""
    def f(x, w, b):
        return ft.conv(x, w, b, padding="same", flip_kernel=True, layout="channels_last",
                       algorithm="fft")
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 9, 3, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, generator=g, dtype=torch.float64, requires_grad=True)
    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    for fn in (f, compiled):
        y = fn(x, w, b)
        grads = torch.autograd.grad(y.square().sum(), (x, w, b))
        if fn is f:
            want = (y.detach(), grads)
    _assert_step_equal((y.detach(), grads), want, torch.float64)


def test_export_equals_eager():
    model, x = _model(), _input()
    exported = torch.export.export(model, (x,))
    targets = [str(n.target) for n in exported.graph.nodes if n.op == "call_function"]
    assert sum("fftconv.conv" in t for t in targets) == 3, targets
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x), model(x), rtol=1e-10, atol=1e-10)
        x2 = _input() * 3
        torch.testing.assert_close(exported.module()(x2), model(x2), rtol=1e-10, atol=1e-10)


def test_export_auto_holds_the_eager_choice():
    """``"auto"`` is decided at export time from the shapes: the graph holds
    PyTorch's convolution exactly for the layers whose eager choice is native."""
    model, x = _model(algorithm="auto"), _input()
    with torch.no_grad():
        h = torch.tanh(model.c1(x))
        h = h.unsqueeze(-1) * h.unsqueeze(-2)
        inputs = {model.c1: x, model.c2: h, model.t2: torch.relu(model.c2(h))}
    native = sum(layer.choice(inp) == "native" for layer, inp in inputs.items())
    exported = torch.export.export(model, (x,))
    targets = [str(n.target) for n in exported.graph.nodes if n.op == "call_function"]
    assert sum("fftconv.conv" in t for t in targets) == 3 - native, targets
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x), model(x), rtol=1e-10, atol=1e-10)


def test_export_dynamic_batch():
    """A symbolic batch size: the fake implementation keeps it symbolic; an
    ``"auto"`` layer becomes the operator with fftconv's own run-time ``"auto"``."""
    model, x = _model(algorithm="auto"), _input()
    batch = torch.export.Dim("batch")
    exported = torch.export.export(model, (x,), dynamic_shapes=({0: batch},))
    targets = [str(n.target) for n in exported.graph.nodes if n.op == "call_function"]
    assert sum("fftconv.conv" in t for t in targets) == 3, targets
    with torch.no_grad():
        x5 = torch.randn(5, 2, 16, dtype=torch.float64)
        torch.testing.assert_close(exported.module()(x5), model(x5), rtol=1e-10, atol=1e-10)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_jit_trace_records_the_op():
    model, x = _model(), _input()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(model, (x,))
    assert str(traced.inlined_graph).count("fftconv::conv") == 3
    with torch.no_grad():
        torch.testing.assert_close(traced(x), model(x), rtol=1e-10, atol=1e-10)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_jit_script_names_the_alternatives():
    with pytest.raises(TypeError, match=r"FFTConv1d: torch.jit.script cannot compile .*"
                                        r"torch.compile\(model\) or torch.export"):
        torch.jit.script(_model())


def test_layer_key_round_trips():
    layer = dict(padding=((1, 2), (0, 3)), stride=(2, 1), groups=2, flip_kernel=True,
                 padding_mode="reflect", output_padding=0)
    key = ops.layer_key(layer)
    assert " " not in key and key == ops.layer_key(dict(reversed(list(layer.items()))))
    assert ops.layer_of(key) == layer


def test_opcheck():
    """PyTorch's own checks of the ops: schema, fake implementation, autograd
    registration and AOT dispatch."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 8, 7, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, 3, 2, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, generator=g, dtype=torch.float64, requires_grad=True)
    key = ops.layer_key(dict(padding="same", stride=(1, 2)))
    torch.library.opcheck(ops.conv_op, (x, w, b, key, "fft"))
    torch.library.opcheck(ops.conv_op, (x, w, None, key, "direct"))
    dy = ops.conv_op(x, w, b, key, "fft").detach()
    torch.library.opcheck(ops.conv_backward_op,
                          (dy, x.detach(), w.detach(), key, "fft", True, False, True))


def test_op_gradients_respect_needs_input_grad():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 3, 10, generator=g, dtype=torch.float64)
    w = torch.randn(4, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    key = ops.layer_key(dict(padding="causal"))
    y = ops.conv_op(x, w, None, key, "fft")
    (dw,) = torch.autograd.grad(y.sum(), (w,))
    want = torch.autograd.grad(ft.native_conv(x, w, padding="causal").sum(), (w,))[0]
    torch.testing.assert_close(dw, want, rtol=1e-10, atol=1e-10)


def test_tracing_flag_is_off_in_eager():
    assert not bridge.tracing()
