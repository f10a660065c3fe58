"""The direct algorithm on every library with strided views (issue 19): PyTorch CPU
tensors here, and the CuPy backend's own code on the numpy stand-in for CuPy
(``fake_cupy``).

``fftconv.algorithms.direct`` calls its backend (``fftconv.backends``) for every
operation on an operand: strided views with element strides (``as_strided``),
flips that are copies in torch, ``matmul`` into views.  Each layer below runs with
``algorithm="direct"`` on numpy and on the other library; the results are of the
input's kind and dtype and equal both the numpy call and the float64 oracle
(``tests/oracle.py``) to CONVENTIONS §4's bounds, relative to the largest
magnitude.  The layers cross both strategies of the direct path (flat shifts at
stride 1, patches otherwise), dilation, groups (depthwise too), padding forms and
modes, channels-last, transposed with ``output_padding``, ``flip_kernel``, 1-3
spatial axes, the four dtypes, and batch chunks under a small
``max_workspace_bytes``.
"""

import numpy as np
import pytest

import fftconv
import oracle
from conftest import assert_close, random_array
from fftconv import backends, registry
from fftconv.algorithms import direct

torch = pytest.importorskip("torch")

DTYPES = ("float32", "float64", "complex64", "complex128")

#: ``(name, x_shape, w_shape, keywords, oracle keywords that differ)``, shapes
#: channels-first (the channels-last layers are converted), transposed weights
#: ``(C_in, C_out // groups, *k)``.
LAYERS = [
    ("valid 2d", (2, 3, 9, 8), (4, 3, 3, 2), dict(), {}),
    ("same dilated 2d", (2, 4, 10, 9), (6, 4, 3, 3), dict(padding="same", dilation=2), {}),
    ("pairs stride 2d", (3, 2, 11, 10), (4, 2, 3, 4),
     dict(padding=[(1, 2), (0, 1)], stride=(2, 3)), {}),
    ("groups full 1d", (2, 6, 17), (9, 2, 4), dict(padding="full", groups=3), {}),
    ("depthwise causal flip 1d", (2, 4, 20), (4, 1, 5),
     dict(padding="causal", groups=4, flip_kernel=True), dict(padding=[(4, 0)])),
    ("3d padded dilated", (2, 2, 6, 5, 7), (3, 2, 3, 2, 3), dict(padding=1, dilation=(1, 2, 1)), {}),
    ("3d stride", (2, 2, 7, 6, 5), (4, 2, 2, 3, 2), dict(padding=(1, 0, 1), stride=2), {}),
    ("reflect", (2, 3, 8, 9), (4, 3, 3, 3), dict(padding=1, padding_mode="reflect"), {}),
    ("replicate stride", (2, 3, 9, 8), (4, 3, 3, 3),
     dict(padding=(2, 1), stride=2, padding_mode="replicate"), {}),
    ("circular same", (2, 3, 8, 7), (5, 3, 3, 3), dict(padding="same", padding_mode="circular"), {}),
    ("channels_last same", (2, 3, 8, 9), (4, 3, 3, 3),
     dict(padding="same", layout="channels_last"), {}),
    ("channels_last stride groups", (2, 4, 9, 8), (6, 2, 3, 3),
     dict(padding=1, stride=2, groups=2, layout="channels_last"), {}),
    ("transposed stride", (2, 3, 6, 5), (3, 4, 3, 3),
     dict(transposed=True, padding=1, stride=2, output_padding=1), {}),
    ("transposed groups dilated 1d", (2, 4, 7), (4, 3, 3),
     dict(transposed=True, groups=2, padding=1, dilation=2), {}),
    ("transposed channels_last flip", (2, 2, 5, 6), (2, 3, 2, 3),
     dict(transposed=True, padding=(1, 0), flip_kernel=True, layout="channels_last"), {}),
]
IDS = [layer[0] for layer in LAYERS]



def _one_sample_budget(whole) -> int:
    """A ``max_workspace_bytes`` that one sample of the plan ``whole``'s layer fits
    and the batch does not: the batch runs in pieces."""
    engine = whole._engine
    return direct.workspace_bytes(engine.geom, engine.dtype, 1)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """PyTorch's intra-op threads on one thread (these arrays are tiny; the machine shared)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _operands(rng, x_shape, w_shape, kw, dtype):
    """``x, w, b, dy`` (numpy, in the layer's layout) and the oracle's results (in it too)."""
    x = random_array(rng, x_shape, dtype)
    w = random_array(rng, w_shape, dtype)
    transposed = kw.get("transposed", False)
    c_out = w_shape[1] * kw.get("groups", 1) if transposed else w_shape[0]
    b = random_array(rng, (c_out,), dtype)
    return x, w, b


def _oracle(x, w, b, dy, kw, oracle_kw):
    """``(y, Grads)`` of the oracle for channels-first operands."""
    ref = {k: v for k, v in dict(kw, **oracle_kw).items() if k not in ("layout", "transposed")}
    if kw.get("transposed"):
        return (oracle.oracle_transposed_forward(x, w, b, **ref),
                oracle.oracle_transposed_backward(dy, x, w, **ref))
    return oracle.oracle_forward(x, w, b, **ref), oracle.oracle_backward(dy, x, w, **ref)


def _case(rng, x_shape, w_shape, kw, oracle_kw, dtype):
    """Operands in the layer's layout and the oracle's ``y, dx, dw, db`` in it."""
    x, w, b = _operands(rng, x_shape, w_shape, kw, dtype)
    y_shape = fftconv.forward(x, w, algorithm="direct",
                              **{k: v for k, v in kw.items() if k != "layout"}).shape
    dy = random_array(rng, y_shape, dtype)
    y_ref, g_ref = _oracle(x, w, b, dy, kw, oracle_kw)
    refs = (y_ref, g_ref.dx, g_ref.dw, g_ref.db)
    if kw.get("layout") == "channels_last":
        x, dy = oracle.to_channels_last(x), oracle.to_channels_last(dy)
        w = oracle.weights_to_channels_last(w)
        refs = (oracle.to_channels_last(refs[0]), oracle.to_channels_last(refs[1]),
                oracle.weights_to_channels_last(refs[2]), refs[3])
    return x, w, b, dy, refs


def _tensor(a):
    return torch.from_numpy(np.array(a, copy=True))


def _check(got, want_numpy, want_oracle, dtype, what):
    """A CPU tensor of ``dtype`` equal to the numpy call and the oracle."""
    assert type(got) is torch.Tensor, f"{what}: {type(got).__name__}"
    assert got.device.type == "cpu", f"{what}: on {got.device}"
    assert got.dtype == getattr(torch, np.dtype(dtype).name), f"{what}: {got.dtype}"
    got = got.numpy()
    assert_close(got, want_numpy, dtype, f"{what} (numpy)")
    assert_close(got, want_oracle, dtype, f"{what} (oracle)")


def test_direct_runs_on_strided_backends_only():
    """numpy, CuPy and torch tensors have strided views: ``direct`` is listed for them
    (so ``auto`` weighs it); the array-API fallback has none."""
    assert backends.NumpyArrays.strided and backends.CupyArrays.strided
    assert backends.TorchArrays.strided and not backends.Arrays.strided
    assert "direct" in registry.names_on(backends.arrays_of(torch.zeros(1)))
    assert "direct" in registry.names_on(backends.host())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, x_shape, w_shape, kw, oracle_kw", LAYERS, ids=IDS)
def test_direct_on_torch_equals_numpy_and_the_oracle(name, x_shape, w_shape, kw, oracle_kw,
                                                      dtype, rng):
    x, w, b, dy, refs = _case(rng, x_shape, w_shape, kw, oracle_kw, dtype)
    kw = dict(kw, algorithm="direct")
    y_np = fftconv.forward(x, w, b, **kw)
    g_np = fftconv.backward(dy, x, w, **kw)
    xt, wt, bt, dyt = (_tensor(a) for a in (x, w, b, dy))

    _check(fftconv.forward(xt, wt, bt, **kw), y_np, refs[0], dtype, f"{name}: forward y")
    for what, got, want, ref in zip(("dx", "dw", "db"), fftconv.backward(dyt, xt, wt, **kw),
                                    g_np, refs[1:]):
        _check(got, want, ref, dtype, f"{name}: backward {what}")

    y, pullback = fftconv.vjp(xt, wt, bt, **kw)
    _check(y, y_np, refs[0], dtype, f"{name}: vjp y")
    for what, got, want, ref in zip(("dx", "dw", "db"), pullback(dyt), g_np, refs[1:]):
        _check(got, want, ref, dtype, f"{name}: pullback {what}")


@pytest.mark.parametrize("dtype", ["float32", "complex128"])
@pytest.mark.parametrize("name, x_shape, w_shape, kw, oracle_kw",
                         [LAYERS[i] for i in (1, 2, 5, 8, 11, 12, 14)],
                         ids=[IDS[i] for i in (1, 2, 5, 8, 11, 12, 14)])
def test_direct_on_torch_in_batch_chunks(name, x_shape, w_shape, kw, oracle_kw, dtype, rng):
    """A plan ``like=`` a tensor under a small budget runs the batch in pieces (the
    gradients summed over them) and equals the whole-batch numpy plan and the oracle."""
    x, w, b, dy, refs = _case(rng, x_shape, w_shape, kw, oracle_kw, dtype)
    kw = dict(kw, algorithm="direct")
    xt, wt, bt, dyt = (_tensor(a) for a in (x, w, b, dy))
    whole = fftconv.plan(x.shape, w.shape, dtype=dtype, **kw)
    p = fftconv.plan(x.shape, w.shape, dtype=dtype, like=xt,
                     max_workspace_bytes=_one_sample_budget(whole), **kw)
    assert isinstance(p._engine, direct.DirectEngine)
    assert isinstance(p._engine.arrays, backends.TorchArrays)
    assert 1 <= p._engine.chunk < x.shape[0], (p._engine.chunk, x.shape)
    assert whole._engine.chunk == x.shape[0]
    y_np, pullback_np = whole.vjp(x, w, b)
    g_np = pullback_np(dy)
    y, pullback = p.vjp(xt, wt, bt)
    _check(y, y_np, refs[0], dtype, f"{name}: chunked y")
    grads = pullback(dyt)
    for what, got, want, ref in zip(("dx", "dw", "db"), grads, g_np, refs[1:]):
        _check(got, want, ref, dtype, f"{name}: chunked {what}")
    # the convenience form: the last forward's gradients, dx alone and dw alone
    p.forward(xt, wt, bt)
    for what, got, want, ref in zip(("dx", "dw", "db"), p.backward(dyt), g_np, refs[1:]):
        _check(got, want, ref, dtype, f"{name}: chunked plan backward {what}")


def test_direct_engine_passes_on_torch_equal_numpy(rng):
    """The engine's own passes (forward kept, backward with dx or dw alone, input_grad,
    transposed_backward), whole and chunked, on tensors equal numpy's, and results
    written into ``out=`` views of a channels-last tensor."""
    p = fftconv.plan((4, 3, 10, 9), (5, 3, 3, 3), dtype="float64", algorithm="direct",
                     padding=1)
    geom = p._engine.geom
    x, w = random_array(rng, geom.x_shape, "float64"), random_array(rng, geom.w_shape, "float64")
    dy = random_array(rng, geom.y_shape, "float64")
    numpy_engine = direct.DirectEngine(geom, "float64", arrays=backends.host())
    saved = numpy_engine.save_input(x)
    want = {"y": numpy_engine.forward(x, w)[0],
            "dx": numpy_engine.input_grad(dy, w)[0],
            "dw": numpy_engine.backward(dy, saved, w, need_dx=False)[1],
            "ty": numpy_engine.transposed_backward(x, numpy_engine.save_output(dy), w)[0],
            "tdw": numpy_engine.transposed_backward(x, numpy_engine.save_output(dy), w)[1]}
    arrays = backends.arrays_of(torch.zeros(1))
    xt, wt, dyt = _tensor(x), _tensor(w), _tensor(dy)
    for chunk in (None, 1, 3):
        e = direct.DirectEngine(geom, "float64", chunk=chunk, arrays=arrays)
        wt_state = e.weights(wt)
        y, kept = e.forward(xt, wt_state, keep=True)
        assert kept is not None and type(kept.array) is torch.Tensor
        got = {"y": y,
               "dx": e.backward(dyt, kept, wt_state, need_dw=False)[0],
               "dw": e.backward(dyt, kept, wt_state, need_dx=False)[1],
               "ty": e.transposed_backward(xt, e.save_output(dyt), wt_state)[0],
               "tdw": e.transposed_backward(xt, e.save_output(dyt), wt_state)[1]}
        dx, dw = e.backward(dyt, kept, wt_state)
        got["dx both"], got["dw both"] = dx, dw
        want["dx both"], want["dw both"] = want["dx"], want["dw"]
        # into a strided view: the channels-first view of a channels-last tensor
        out = torch.empty((geom.batch,) + geom.out_size + (geom.out_channels,),
                          dtype=torch.float64).movedim(-1, 1)
        assert e.forward(xt, wt_state, out=out)[0] is out
        got["y into a view"], want["y into a view"] = out, want["y"]
        for key, value in got.items():
            assert type(value) is torch.Tensor, key
            np.testing.assert_allclose(value.numpy(), want[key], rtol=1e-12, atol=1e-12,
                                       err_msg=f"chunk={chunk}: {key}")


def test_auto_on_torch_may_choose_direct(rng):
    """``auto`` weighs ``direct`` on tensors: a layer the cost model gives to direct on
    numpy gets it on tensors too, and runs."""
    x, w = random_array(rng, (1, 1, 6), "float64"), random_array(rng, (1, 1, 2), "float64")
    p_np = fftconv.plan(x.shape, w.shape, dtype="float64")
    p_t = fftconv.plan(x.shape, w.shape, dtype="float64", like=_tensor(x))
    assert p_np.algorithm == "direct", p_np.algorithm
    assert p_t.algorithm == "direct", p_t.algorithm
    y = p_t.forward(_tensor(x), _tensor(w))
    assert type(y) is torch.Tensor
    np.testing.assert_allclose(y.numpy(), oracle.oracle_forward(x, w), rtol=1e-12)


# -- the CuPy backend's code, on the numpy stand-in -----------------------------------------
@pytest.fixture
def cupy(monkeypatch):
    import fake_cupy
    cp = fake_cupy.use(monkeypatch)
    fftconv.clear_caches()
    yield cp
    fftconv.clear_caches()


@pytest.mark.parametrize("dtype", ["float32", "complex128"])
@pytest.mark.parametrize("name, x_shape, w_shape, kw, oracle_kw",
                         [LAYERS[i] for i in (1, 2, 4, 11, 12)],
                         ids=[IDS[i] for i in (1, 2, 4, 11, 12)])
@pytest.mark.parametrize("chunked", [False, True], ids=["whole", "chunked"])
def test_direct_on_the_cupy_stand_in(cupy, name, x_shape, w_shape, kw, oracle_kw, dtype,
                                     chunked, rng):
    import fake_cupy
    x, w, b, dy, refs = _case(rng, x_shape, w_shape, kw, oracle_kw, dtype)
    kw = dict(kw, algorithm="direct")
    xc, wc, bc, dyc = (cupy.asarray(a) for a in (x, w, b, dy))
    assert isinstance(backends.arrays_of(xc), backends.CupyArrays)
    budget = (_one_sample_budget(fftconv.plan(x.shape, w.shape, dtype=dtype, **kw))
              if chunked else None)
    p = fftconv.plan(x.shape, w.shape, dtype=dtype, like=xc, max_workspace_bytes=budget, **kw)
    assert isinstance(p._engine, direct.DirectEngine)
    assert (p._engine.chunk < x.shape[0]) == chunked
    y, pullback = p.vjp(xc, wc, bc)
    grads = pullback(dyc)
    for what, got, ref in zip(("y", "dx", "dw", "db"), (y,) + tuple(grads), refs):
        assert isinstance(got, fake_cupy.ndarray), what
        assert_close(got.get(), ref, dtype, f"{name}: {what}")
