"""fftconv on the GPU: CuPy arrays and PyTorch CUDA tensors (issue 19).

Marked ``gpu`` and skipped, module and all, on a machine without CUDA (no CuPy
with a device and no ``torch.cuda``); the CuPy tests skip without CuPy, the
torch tests without ``torch.cuda``.  Covered:

* the oracle sweep of ``tests/test_namespaces.py`` (a subset of its real
  configurations, float32 and float64): operands made on the host, moved to the
  device, results brought back (``.get()``, ``.cpu()``) for the oracle and the
  numpy call; ``forward``, ``backward``, pullbacks and plans made with
  ``like=``, every result of the input's kind on the input's device;
* no host round trip inside a call where PyTorch (``set_sync_debug_mode``) or
  CuPy (``cupyx.allow_synchronize``) can tell: a pullback synchronises never,
  a plan's forward with unchanged weights at most once (the one boolean of the
  weight comparison, ``Arrays.equal``: weights are compared on the device and
  the answer decides whether to transform them again);
* ``fftconv.torch.conv`` and ``FFTConv2d`` on CUDA tensors, on fftconv's engine
  (no fallback), eager, under ``torch.compile(fullgraph=True)`` and through
  ``torch.export``, outputs and gradients equal to eager and to the oracle;
* ``fftconv.dask`` on CuPy-backed Dask arrays, equal to the whole-array call.
"""
import contextlib
import functools
import warnings

import numpy as np
import pytest

import oracle
from conftest import random_array

pytestmark = pytest.mark.gpu


def _torch_cuda():
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def _cupy_device():
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # ImportError, or CuPy without a driver / a device
        return False


HAS_TORCH_CUDA = _torch_cuda()
HAS_CUPY = _cupy_device()
if not (HAS_TORCH_CUDA or HAS_CUPY):
    pytest.skip("no CUDA device: neither torch.cuda nor CuPy with a GPU is available",
                allow_module_level=True)

import fftconv  # noqa: E402
import test_namespaces as tn  # noqa: E402
from test_namespaces import NAMES, assert_close  # noqa: E402

needs_torch = pytest.mark.skipif(not HAS_TORCH_CUDA, reason="torch.cuda is not available")
needs_cupy = pytest.mark.skipif(not HAS_CUPY, reason="CuPy with a CUDA device is not available")


class TorchCudaNamespace(tn.TorchNamespace):
    name = "torch-cuda"

    def __init__(self):
        super().__init__()
        self.device = self.torch.device("cuda", self.torch.cuda.current_device())

    def asarray(self, a):
        return super().asarray(a).to(self.device)


class CupyNamespace(tn.Namespace):
    name = "cupy"

    def __init__(self):
        import cupy
        self.cp = cupy

    def asarray(self, a):
        return self.cp.asarray(np.array(a, copy=True, order="C"))

    def to_numpy(self, a):
        return self.cp.asnumpy(a)

    def is_kind(self, a) -> bool:
        return type(a) is self.cp.ndarray

    def device_of(self, a):
        return a.device.id


@functools.lru_cache(maxsize=None)
def _namespace_cached(name):
    return {"torch-cuda": TorchCudaNamespace, "cupy": CupyNamespace}[name]()


def namespace(name):
    if name == "cupy" and not HAS_CUPY:
        pytest.skip("CuPy with a CUDA device is not available")
    if name == "torch-cuda" and not HAS_TORCH_CUDA:
        pytest.skip("torch.cuda is not available")
    return _namespace_cached(name)


NAMESPACES = ["cupy", "torch-cuda"]

# ---------------------------------------------------------------------------------------------
# the oracle sweep, float32 and float64
# ---------------------------------------------------------------------------------------------

def _subset():
    """Every third real configuration, plus the first one of each padding mode, family,
    number of axes and layout that those miss."""
    real = [c for c in tn.CONFIGS if c["dtype"] in ("float32", "float64")]
    chosen = real[::3]
    for key in ("mode", "family", "nd", "layout", "pad_kind"):
        for c in real:
            if c[key] not in {d[key] for d in chosen}:
                chosen.append(c)
    return sorted(chosen, key=lambda c: c["idx"])


SUBSET = _subset()


def _sweep_params():
    params = []
    for name in NAMESPACES:
        for c in SUBSET:
            for dtype in ("float32", "float64"):
                for algorithm in ("fft", "overlap_add"):
                    params.append(pytest.param(name, c, dtype, algorithm,
                                               id=f"{name}-{tn._config_id(c)}-as-{dtype}-"
                                                  f"{algorithm}"))
        for c in SUBSET[::2]:
            params.append(pytest.param(name, c, "float64", "direct",
                                       id=f"{name}-{tn._config_id(c)}-as-float64-direct"))
    return params


def test_gpu_subset_covers_the_layer_keywords():
    """The subset still crosses every family, padding mode, layout and 1-5 axes."""
    assert {c["family"] for c in SUBSET} == {"conv", "mode", "transposed"}
    assert {c["mode"] for c in SUBSET} == {"zeros", "reflect", "replicate", "circular"}
    assert {c["layout"] for c in SUBSET} == {"channels_first", "channels_last"}
    assert {c["nd"] for c in SUBSET} == {1, 2, 3, 4, 5}
    assert any(c["kw"]["groups"] > 1 for c in SUBSET)
    assert any(c["kw"]["flip_kernel"] for c in SUBSET)


@pytest.mark.parametrize("ns_name, c, dtype, algorithm", _sweep_params())
def test_gpu_sweep(ns_name, c, dtype, algorithm):
    tn._run_case(namespace(ns_name), c, algorithm, dtype)


@pytest.mark.parametrize("ns_name", NAMESPACES)
def test_gpu_auto_and_mixed_kinds(ns_name):
    """``"auto"`` on the device, and a host operand with a device one is a TypeError
    naming both kinds."""
    ns = namespace(ns_name)
    rng = np.random.default_rng(3)
    x_np, w_np = rng.standard_normal((2, 3, 20, 20)), rng.standard_normal((4, 3, 5, 5))
    x, w = ns.asarray(x_np), ns.asarray(w_np)
    y = fftconv.forward(x, w, padding="same")
    ns.check(y, x, np.float64, "auto y")
    assert_close(ns.to_numpy(y), oracle.oracle_forward(x_np, w_np, padding="same"),
                 np.float64, "auto y")
    kind = "CuPy" if ns_name == "cupy" else "torch"
    with pytest.raises(TypeError, match=rf"(?i)(?=.*numpy)(?=.*{kind})"):
        fftconv.forward(x_np, w, padding="same")
    with pytest.raises(TypeError, match=rf"(?i)(?=.*numpy)(?=.*{kind})"):
        fftconv.plan(x.shape, w.shape, dtype=np.float64, like=x).forward(x_np, w_np)


# ---------------------------------------------------------------------------------------------
# nothing crosses to the host inside a call
# ---------------------------------------------------------------------------------------------

SYNC = "called a synchronizing CUDA operation"


@contextlib.contextmanager
def _torch_syncs():
    """Collects PyTorch's warnings about synchronising operations inside the block."""
    import torch
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        syncs = []
        try:
            yield syncs
        finally:
            torch.cuda.set_sync_debug_mode("default")
            syncs.extend(str(w.message) for w in caught if SYNC in str(w.message))


#: layers for the synchronisation checks: zero padding; and a reflect-padded, strided,
#: dilated one, whose gathers use index arrays made once per geometry (``Arrays.constant``)
SYNC_LAYERS = {"zeros": dict(padding="same"),
               "reflect-strided": dict(padding="same", padding_mode="reflect", stride=(2, 1),
                                       dilation=(1, 2))}


def _device_layer(ns, algorithm, layer):
    rng = np.random.default_rng(21)
    x_np = rng.standard_normal((4, 8, 48, 40)).astype(np.float32)
    w_np = rng.standard_normal((8, 8, 5, 5)).astype(np.float32)
    b_np = rng.standard_normal(8).astype(np.float32)
    x, w, b = ns.asarray(x_np), ns.asarray(w_np), ns.asarray(b_np)
    p = fftconv.plan(x.shape, w.shape, dtype=np.float32, like=x, algorithm=algorithm,
                     **SYNC_LAYERS[layer])
    y, pullback = p.vjp(x, w, b)                       # warm-up: buffers, FFT plans, spectra
    dy = ns.asarray(rng.standard_normal(y.shape).astype(np.float32))
    pullback(dy)
    p.forward(x, w, b)
    return p, x, w, b, dy, pullback


@needs_torch
@pytest.mark.parametrize("layer", list(SYNC_LAYERS))
@pytest.mark.parametrize("algorithm", ["fft", "overlap_add"])
def test_torch_cuda_calls_do_not_synchronise(algorithm, layer):
    """A pullback reads nothing back and uploads nothing (PyTorch's sync debug mode sees
    no synchronising operation: a host-to-device copy from pageable memory is one); a
    plan's forward with the weights unchanged reads back at most the one boolean of the
    on-device weight comparison (docs/design-notes.md, "The one read-back left")."""
    torch = namespace("torch-cuda").torch
    p, x, w, b, dy, pullback = _device_layer(namespace("torch-cuda"), algorithm, layer)
    torch.cuda.synchronize()
    with _torch_syncs() as syncs:
        grads = pullback(dy)
    assert syncs == [], f"the pullback synchronised {len(syncs)} times"
    with _torch_syncs() as syncs:
        y = p.forward(x, w, b)
    assert len(syncs) <= 1, f"a forward with unchanged weights synchronised {len(syncs)} times"
    torch.cuda.synchronize()
    assert y.device == x.device and all(g.device == x.device for g in grads)


@needs_cupy
@pytest.mark.parametrize("layer", list(SYNC_LAYERS))
@pytest.mark.parametrize("algorithm", ["fft", "overlap_add"])
def test_cupy_pullback_does_not_synchronise(algorithm, layer):
    """CuPy's (deprecated, still present in CuPy 13) ``cupyx.allow_synchronize(False)``
    raises on a device synchronisation CuPy performs, ``.get()`` included."""
    import cupyx
    allow = getattr(cupyx, "allow_synchronize", None)
    if allow is None:
        pytest.skip("this CuPy has no cupyx.allow_synchronize")
    ns = namespace("cupy")
    p, x, w, b, dy, pullback = _device_layer(ns, algorithm, layer)
    ns.cp.cuda.Device().synchronize()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with allow(False):
            grads = pullback(dy)
    ns.cp.cuda.Device().synchronize()
    assert all(type(g) is ns.cp.ndarray and g.device.id == x.device.id for g in grads)


@pytest.mark.parametrize("ns_name", NAMESPACES)
def test_device_plan_reuses_weights_and_sees_changes(ns_name):
    """The weight spectrum is reused on the device while the weights' values stay, and
    transformed again when they change in place."""
    ns = namespace(ns_name)
    rng = np.random.default_rng(4)
    x_np, w_np = rng.standard_normal((2, 3, 30)), rng.standard_normal((4, 3, 7))
    x, w = ns.asarray(x_np), ns.asarray(w_np)
    p = fftconv.plan(x.shape, w.shape, dtype=np.float64, like=x, padding="same",
                     algorithm="fft")
    for _ in range(2):
        assert_close(ns.to_numpy(p.forward(x, w)),
                     oracle.oracle_forward(x_np, w_np, padding="same"), np.float64, "y")
    w[...] = 0.5
    assert_close(ns.to_numpy(p.forward(x, w)),
                 oracle.oracle_forward(x_np, np.full_like(w_np, 0.5), padding="same"),
                 np.float64, "y after w changed in place")


# ---------------------------------------------------------------------------------------------
# fftconv.torch on CUDA: eager, torch.compile, torch.export
# ---------------------------------------------------------------------------------------------

def _tol(dtype):
    import torch
    return 1e-5 if dtype == torch.float32 else 1e-10


def _assert_tensors_close(got, want, dtype, what):
    """Relative to the largest magnitude (CONVENTIONS §4), on the host."""
    assert got.device == want.device, f"{what}: {got.device} != {want.device}"
    got = got.detach().cpu().double().numpy()
    want = want.detach().cpu().double().numpy()
    assert got.shape == want.shape, what
    scale = max(np.abs(want).max(), 1e-300)
    err = np.abs(got - want).max() / scale
    assert err <= _tol(dtype), f"{what}: relative error {err:.3e}"


@pytest.fixture
def cuda():
    if not HAS_TORCH_CUDA:
        pytest.skip("torch.cuda is not available")
    import torch
    torch._dynamo.reset()
    yield torch.device("cuda", torch.cuda.current_device())
    torch._dynamo.reset()


@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
@pytest.mark.parametrize("algorithm", ["fft", "overlap_add", "direct"])
def test_bridge_conv_runs_the_engine_on_cuda(cuda, dtype_name, algorithm):
    import torch
    import fftconv.torch as ft
    from fftconv.torch import bridge
    dtype = getattr(torch, dtype_name)
    rng = np.random.default_rng(6)
    kw = dict(padding="same", stride=(1, 2), dilation=(2, 1), groups=2, flip_kernel=True)
    x_np = random_array(rng, (2, 4, 13, 12), dtype_name)
    w_np = random_array(rng, (6, 2, 3, 4), dtype_name)
    b_np = random_array(rng, (6,), dtype_name)
    x, w, b = (torch.from_numpy(a).to(cuda).requires_grad_(True) for a in (x_np, w_np, b_np))
    assert bridge.fallback_reason(x, w, b, algorithm=algorithm) is None
    y = ft.conv(x, w, b, algorithm=algorithm, **kw)
    assert y.device == cuda and y.dtype == dtype and y.requires_grad
    y_ref = oracle.oracle_forward(x_np, w_np, b_np, **kw)
    assert_close(y.detach().cpu().numpy(), y_ref, dtype_name, "y")
    g_np = random_array(rng, y_ref.shape, dtype_name)
    grads = torch.autograd.grad(y, (x, w, b), torch.from_numpy(g_np).to(cuda))
    for got, ref, name in zip(grads, oracle.oracle_backward(g_np, x_np, w_np, **kw), NAMES):
        assert got.device == cuda and got.dtype == dtype, name
        assert_close(got.cpu().numpy(), ref, dtype_name, name)


def _cuda_model(device, dtype, algorithm="fft"):
    import torch
    import torch.nn as nn
    import fftconv.torch as ft

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv1d(2, 3, 4)
            self.c2 = nn.Conv2d(3, 4, 5, padding=2)
            self.t2 = nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1)

        def forward(self, x):                               # x: (N, 2, 16)
            h = torch.tanh(self.c1(x))                      # (N, 3, 16): causal
            h = h.unsqueeze(-1) * h.unsqueeze(-2)           # (N, 3, 16, 16)
            return self.t2(torch.relu(self.c2(h)))          # (N, 2, 32, 32)

    torch.manual_seed(0)
    model = ft.convert(Model(), algorithm=algorithm).to(device=device, dtype=dtype)
    model.c1.padding = "causal"
    x = torch.randn(2, 2, 16, generator=torch.Generator().manual_seed(1), dtype=dtype)
    return model, x.to(device)


def _step(model, x):
    import torch
    x = x.clone().requires_grad_(True)
    y = model(x)
    params = list(model.parameters())
    grads = torch.autograd.grad((y * torch.cos(y)).sum(), params + [x])
    return y.detach(), grads


def _assert_steps_equal(got, want, dtype):
    _assert_tensors_close(got[0], want[0], dtype, "y")
    assert len(got[1]) == len(want[1])
    for i, (g, r) in enumerate(zip(got[1], want[1])):
        _assert_tensors_close(g, r, dtype, f"gradient {i}")


def test_modules_run_the_engine_on_cuda(cuda):
    """A converted model on CUDA: every layer on fftconv's engine, its training step
    equal to the PyTorch model it came from (float64, cuDNN's TF32 off)."""
    import torch
    import fftconv.torch as ft
    model, x = _cuda_model(cuda, torch.float64)
    assert model.c1.choice(x) == "fft"
    for layer in (model.c1, model.c2, model.t2):
        assert ft.bridge.fallback_reason(x, layer.weight, layer.bias, algorithm="fft") is None

    class Native(torch.nn.Module):
        """The same parameters in PyTorch's own layers; causal = left pad + "valid"."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            h = torch.tanh(self.inner.c1(torch.nn.functional.pad(x, (3, 0))))
            h = h.unsqueeze(-1) * h.unsqueeze(-2)
            return self.inner.t2(torch.relu(self.inner.c2(h)))

    twin = _cuda_model(cuda, torch.float64)[0]
    twin.c1.padding = (0,)
    native = Native(ft.revert(twin))
    allow = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        _assert_steps_equal(_step(model, x), _step(native, x), torch.float64)
    finally:
        torch.backends.cudnn.allow_tf32 = allow


def test_fftconv2d_module_on_cuda(cuda):
    import torch
    import fftconv.torch as ft
    torch.manual_seed(3)
    m = ft.FFTConv2d(3, 4, 5, padding="same", padding_mode="reflect", algorithm="fft").to(
        device=cuda, dtype=torch.float64)
    x_np = np.random.default_rng(7).standard_normal((2, 3, 17, 16))
    x = torch.from_numpy(x_np).to(cuda).requires_grad_(True)
    assert m.choice(x) == "fft"
    y = m(x)
    assert y.device == cuda
    w_np, b_np = m.weight.detach().cpu().numpy(), m.bias.detach().cpu().numpy()
    kw = dict(padding="same", padding_mode="reflect")
    assert_close(y.detach().cpu().numpy(), oracle.oracle_forward(x_np, w_np, b_np, **kw),
                 np.float64, "y")
    g_np = np.random.default_rng(8).standard_normal(tuple(y.shape))
    dx, dw, db = torch.autograd.grad(y, (x, m.weight, m.bias), torch.from_numpy(g_np).to(cuda))
    for got, ref, name in zip((dx, dw, db), oracle.oracle_backward(g_np, x_np, w_np, **kw),
                              NAMES):
        assert got.device == cuda, name
        assert_close(got.cpu().numpy(), ref, np.float64, name)


def _graph_targets(gm):
    return [str(n.target) for n in gm.graph.nodes if n.op == "call_function"]


@pytest.mark.parametrize("backend, dtype_name", [("aot_eager", "float64"),
                                                 ("aot_eager", "float32"),
                                                 ("inductor", "float32")])
def test_compile_fullgraph_on_cuda_equals_eager(cuda, backend, dtype_name):
    import torch
    dtype = getattr(torch, dtype_name)
    model, x = _cuda_model(cuda, dtype)
    want = _step(model, x)
    graphs = []

    def capture(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    with torch.no_grad():
        torch.compile(model, backend=capture, fullgraph=True)(x)
    assert sum("fftconv.conv" in t for t in _graph_targets(graphs[0])) == 3, \
        _graph_targets(graphs[0])
    torch._dynamo.reset()
    compiled = torch.compile(model, backend=backend, fullgraph=True)
    got = _step(compiled, x)
    _assert_steps_equal(got, want, dtype)
    assert got[0].device == cuda


@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
def test_export_on_cuda_equals_eager(cuda, dtype_name):
    import torch
    dtype = getattr(torch, dtype_name)
    model, x = _cuda_model(cuda, dtype)
    exported = torch.export.export(model, (x,))
    assert sum("fftconv.conv" in t for t in _graph_targets(exported)) == 3, \
        _graph_targets(exported)
    module = exported.module()
    with torch.no_grad():
        for inp in (x, 3 * x):
            _assert_tensors_close(module(inp), model(inp), dtype, "y")
    # gradients through the exported module, against eager's, parameter by parameter
    want = _step(model, x)
    got = _step(module, x)
    _assert_tensors_close(got[0], want[0], dtype, "y")
    eager = dict(zip([n for n, _ in model.named_parameters()], want[1]))
    mine = dict(zip([n for n, _ in module.named_parameters()], got[1]))
    assert set(mine) == set(eager), (sorted(mine), sorted(eager))
    for name in eager:
        _assert_tensors_close(mine[name], eager[name], dtype, name)
    _assert_tensors_close(got[1][-1], want[1][-1], dtype, "dx")


# ---------------------------------------------------------------------------------------------
# fftconv.dask on CuPy-backed chunks
# ---------------------------------------------------------------------------------------------

@needs_cupy
@pytest.mark.parametrize("layout", ["channels_first", "channels_last"])
@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
def test_dask_with_cupy_chunks(layout, dtype_name):
    """Each block runs on the GPU: results (CuPy arrays) equal the whole-array call."""
    da = pytest.importorskip("dask.array")
    import dask
    import fftconv.dask as fd
    cp = namespace("cupy").cp
    rng = np.random.default_rng(12)
    kw = dict(padding="same", stride=(2, 1), dilation=(1, 2), groups=2,
              padding_mode="reflect", layout=layout)
    x_np = random_array(rng, (3, 4, 26, 19), dtype_name)
    w_np = random_array(rng, (6, 2, 3, 4), dtype_name)
    b_np = random_array(rng, (6,), dtype_name)
    if layout == "channels_last":
        x_np, w_np = oracle.to_channels_last(x_np), oracle.weights_to_channels_last(w_np)
    x_cp, w_cp, b_cp = cp.asarray(x_np), cp.asarray(w_np), cp.asarray(b_np)
    chunks = (2, 4, 9, 7) if layout == "channels_first" else (2, 9, 7, 4)
    x = da.from_array(x_cp, chunks=chunks, asarray=False)
    assert type(x._meta) is cp.ndarray
    with dask.config.set(scheduler="threads"):
        y = fd.forward(x, w_cp, b_cp, **kw)
        y_c = y.compute()
        want = fftconv.forward(x_cp, w_cp, b_cp, **kw)
        assert type(y_c) is cp.ndarray and y_c.dtype == np.dtype(dtype_name)
        assert_close(cp.asnumpy(y_c), cp.asnumpy(want), dtype_name, "y")
        dy_cp = cp.asarray(random_array(rng, tuple(want.shape), dtype_name))
        dy = da.from_array(dy_cp, chunks=y.chunks, asarray=False)
        dx, dw, db = fd.backward(dy, x, w_cp, **kw)
        g = fftconv.backward(dy_cp, x_cp, w_cp, **kw)
        dx_c = dx.compute()
        for got, ref, name in zip((dx_c, dw, db), g, NAMES):
            assert type(got) is cp.ndarray, f"{name}: {type(got)}"
            assert_close(cp.asnumpy(got), cp.asnumpy(ref), dtype_name, name)
