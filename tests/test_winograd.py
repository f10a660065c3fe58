"""The Winograd algorithm (issue 20): F(4, 3) and F(2, 5) per axis, its scope, its cost.

Every layer runs ``algorithm="winograd"`` through ``forward``, ``backward``, ``vjp``
and a plan, against the float64 oracle (``tests/oracle.py``) and the direct
algorithm, at CONVENTIONS §4's bounds relative to the largest magnitude: 1-D,
2-D and 3-D, 3 and 5 taps (mixed per axis too), every padding form, groups
(depthwise included), ``flip_kernel``, bias, the four dtypes, odd sizes,
transposed layers, channels-last, padding modes and batch chunks under a small
``max_workspace_bytes``.  Then the transform matrices in exact arithmetic, the
scope (a clear error by name, never ``auto``'s pick outside it), the workspace
bound against tracemalloc, non-finite values, and other array libraries.
"""
import math
import tracemalloc
from fractions import Fraction

import numpy as np
import pytest

import fftconv
import oracle
from conftest import assert_close, random_array
from fftconv import backends, costs, registry
from fftconv.algorithms import winograd

DTYPES = ("float32", "float64", "complex64", "complex128")

#: ``(name, x_shape, w_shape, keywords)``: channels-first shapes, forward layers.
LAYERS = [
    ("1d k3 same", (3, 4, 17), (5, 4, 3), dict(padding="same")),
    ("1d k5 valid odd", (2, 3, 23), (4, 3, 5), dict()),
    ("1d k5 causal depthwise", (2, 6, 19), (6, 1, 5), dict(padding="causal", groups=6)),
    ("1d k3 full groups", (2, 6, 9), (9, 2, 3), dict(padding="full", groups=3)),
    ("1d k3 shorter than a tile", (2, 2, 4), (3, 2, 3), dict()),
    ("2d k3 same", (2, 5, 13, 11), (6, 5, 3, 3), dict(padding="same")),
    ("2d k3 valid", (3, 4, 16, 16), (4, 4, 3, 3), dict()),
    ("2d k5 same", (2, 3, 15, 14), (4, 3, 5, 5), dict(padding="same")),
    ("2d k5 pairs flip", (2, 4, 12, 9), (6, 4, 5, 5),
     dict(padding=[(1, 3), (4, 0)], flip_kernel=True)),
    ("2d mixed k (3, 5) ints", (2, 3, 10, 12), (5, 3, 3, 5), dict(padding=[2, 1])),
    ("2d depthwise x2", (2, 4, 11, 10), (8, 1, 3, 3), dict(padding=1, groups=4)),
    ("2d groups causal", (2, 6, 9, 13), (4, 3, 3, 3), dict(padding="causal", groups=2)),
    ("3d k3 same", (2, 3, 7, 6, 9), (4, 3, 3, 3, 3), dict(padding="same")),
    ("3d k3 valid groups", (2, 4, 9, 8, 7), (6, 2, 3, 3, 3), dict(groups=2)),
    ("3d k3 full flip", (1, 2, 5, 4, 6), (3, 2, 3, 3, 3), dict(padding="full", flip_kernel=True)),
]
IDS = [layer[0] for layer in LAYERS]


def _oracle_kw(kw, w_shape):
    """The oracle's keywords: ``"causal"`` as its ``(k - 1, 0)`` pairs."""
    if kw.get("padding") == "causal":
        return dict(kw, padding=[(k - 1, 0) for k in w_shape[2:]])
    return kw


def _operands(rng, x_shape, w_shape, kw, dtype, bias=True):
    x = random_array(rng, x_shape, dtype)
    w = random_array(rng, w_shape, dtype)
    b = random_array(rng, (w_shape[0],), dtype) if bias else None
    dy = random_array(rng, oracle.output_shape(x_shape, w_shape, **_oracle_kw(kw, w_shape)),
                      dtype)
    return x, w, b, dy


def _references(x, w, b, dy, kw):
    kw = _oracle_kw(kw, w.shape)
    return oracle.oracle_forward(x, w, b, **kw), oracle.oracle_backward(dy, x, w, **kw)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, x_shape, w_shape, kw", LAYERS, ids=IDS)
def test_winograd_equals_the_oracle_and_direct(name, x_shape, w_shape, kw, dtype):
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    x, w, b, dy = _operands(rng, x_shape, w_shape, kw, dtype)
    y_ref, g_ref = _references(x, w, b, dy, kw)
    y = fftconv.forward(x, w, b, algorithm="winograd", **kw)
    assert y.dtype == np.dtype(dtype) and y.flags.c_contiguous
    assert_close(y, y_ref, dtype, "y")
    assert_close(y, fftconv.forward(x, w, b, algorithm="direct", **kw), dtype, "y vs direct")
    y2, pullback = fftconv.vjp(x, w, b, algorithm="winograd", **kw)
    assert_close(y2, y_ref, dtype, "y (vjp)")
    direct = fftconv.backward(dy, x, w, algorithm="direct", **kw)
    for grads in (fftconv.backward(dy, x, w, algorithm="winograd", **kw), pullback(dy)):
        for got, want, other, what in zip(grads, g_ref, direct, ("dx", "dw", "db")):
            assert got.dtype == np.dtype(dtype), what
            assert_close(got, want, dtype, what)
            assert_close(got, other, dtype, f"{what} vs direct")


@pytest.mark.parametrize("name, x_shape, w_shape, kw", LAYERS[::2], ids=IDS[::2])
def test_a_plan_differentiates_its_last_forward(name, x_shape, w_shape, kw):
    rng = np.random.default_rng(7)
    x, w, b, dy = _operands(rng, x_shape, w_shape, kw, "float64")
    y_ref, g_ref = _references(x, w, b, dy, kw)
    p = fftconv.plan(x_shape, w_shape, dtype=np.float64, algorithm="winograd", **kw)
    assert p.algorithm == "winograd" and p.fft_shape is None
    p.forward(np.ones_like(x), w, b)
    assert_close(p.forward(x, w, b), y_ref, np.float64, "y")
    for got, want, what in zip(p.backward(dy), g_ref, ("dx", "dw", "db")):
        assert_close(got, want, np.float64, what)


TRANSPOSED = [
    ("1d k3", (2, 4, 11), (4, 3, 3), dict(padding=1)),
    ("2d k3 same groups", (2, 4, 7, 9), (4, 3, 3, 3), dict(padding="same", groups=2)),
    ("2d k5 output_padding 0", (2, 3, 6, 8), (3, 2, 5, 5), dict(padding=(2, 1))),
    ("3d k3", (1, 2, 5, 4, 6), (2, 3, 3, 3, 3), dict(padding=0)),
]


@pytest.mark.parametrize("dtype", ["float32", "complex128"])
@pytest.mark.parametrize("name, x_shape, w_shape, kw", TRANSPOSED, ids=[t[0] for t in TRANSPOSED])
def test_transposed_layers(name, x_shape, w_shape, kw, dtype):
    """A transposed layer runs the engine's input gradient forward and its
    transposed backward (``fftconv.runner``)."""
    rng = np.random.default_rng(3)
    x = random_array(rng, x_shape, dtype)
    w = random_array(rng, w_shape, dtype)
    b = random_array(rng, (w_shape[1] * kw.get("groups", 1),), dtype)
    y_ref = oracle.oracle_transposed_forward(x, w, b, **kw)
    dy = random_array(rng, y_ref.shape, dtype)
    g_ref = oracle.oracle_transposed_backward(dy, x, w, **kw)
    y, pullback = fftconv.vjp(x, w, b, algorithm="winograd", transposed=True, **kw)
    assert_close(y, y_ref, dtype, "y")
    for grads in (pullback(dy), fftconv.backward(dy, x, w, algorithm="winograd", transposed=True,
                                                 **kw)):
        for got, want, what in zip(grads, g_ref, ("dx", "dw", "db")):
            assert_close(got, want, dtype, what)


@pytest.mark.parametrize("kw", [dict(padding="same", layout="channels_last"),
                                dict(padding=1, padding_mode="reflect"),
                                dict(padding=(2, 1), padding_mode="circular"),
                                dict(padding="same", padding_mode="replicate", groups=2)],
                         ids=["channels_last", "reflect", "circular", "replicate groups"])
def test_layouts_and_padding_modes(kw):
    rng = np.random.default_rng(11)
    x_shape, w_shape = (2, 4, 9, 10), (6, 4 // kw.get("groups", 1), 3, 3)
    x, w, b, _ = _operands(rng, x_shape, w_shape, {}, "float64")
    ref_kw = {k: v for k, v in kw.items() if k != "layout"}
    y_ref = oracle.oracle_forward(x, w, b, **ref_kw)
    dy = random_array(rng, y_ref.shape, "float64")
    g_ref = oracle.oracle_backward(dy, x, w, **ref_kw)
    refs = (y_ref,) + tuple(g_ref)
    if kw.get("layout") == "channels_last":
        x, dy = oracle.to_channels_last(x), oracle.to_channels_last(dy)
        w = oracle.weights_to_channels_last(w)
        refs = (oracle.to_channels_last(refs[0]), oracle.to_channels_last(refs[1]),
                oracle.weights_to_channels_last(refs[2]), refs[3])
    y, pullback = fftconv.vjp(x, w, b, algorithm="winograd", **kw)
    for got, want, what in zip((y,) + tuple(pullback(dy)), refs, ("y", "dx", "dw", "db")):
        assert_close(got, want, np.float64, what)


def test_adjoint_identity():
    """``<forward(x, w), g> == <x, dx(g)> == <w, dw(x, g)>`` in float64."""
    rng = np.random.default_rng(5)
    for x_shape, w_shape, kw in [((2, 3, 14, 13), (4, 3, 3, 3), dict(padding="same")),
                                 ((2, 2, 16, 11), (3, 2, 5, 5), dict(padding=(3, 1))),
                                 ((1, 2, 6, 7, 5), (2, 2, 3, 3, 3), dict(padding=1))]:
        x, w, _, g = _operands(rng, x_shape, w_shape, kw, "complex128", bias=False)
        y, pullback = fftconv.vjp(x, w, algorithm="winograd", **kw)
        dx, dw, _ = pullback(g)
        lhs = np.vdot(y.ravel(), g.ravel())
        scale = np.linalg.norm(y) * np.linalg.norm(g)
        assert abs(lhs - np.vdot(x.ravel(), dx.ravel())) <= 1e-12 * scale
        assert abs(lhs - np.vdot(w.ravel(), dw.ravel())) <= 1e-12 * scale


# -- the transforms --------------------------------------------------------------------------
@pytest.mark.parametrize("m, r", [(4, 3), (2, 5), (2, 3), (3, 3)])
def test_the_transforms_compute_a_correlation_and_its_two_adjoints(m, r):
    """``y = A^T[(G g)(B^T d)]`` and, read for each operand, the input and weight
    gradients (see the module's docstring), in float64 on random data."""
    t = winograd.transforms(m, r)
    bt, g_, at = np.array(t.bt), np.array(t.g), np.array(t.at)
    alpha = m + r - 1
    assert bt.shape == (alpha, alpha) and g_.shape == (alpha, r) and at.shape == (m, alpha)
    assert np.abs(bt).max() == 1.0
    rng = np.random.default_rng(m * 10 + r)
    d, g, u = rng.standard_normal(alpha), rng.standard_normal(r), rng.standard_normal(m)
    corr = np.array([d[i:i + r] @ g for i in range(m)])
    np.testing.assert_allclose(at @ ((g_ @ g) * (bt @ d)), corr, rtol=0, atol=1e-13)
    dd = np.zeros(alpha)
    for i in range(m):
        dd[i:i + r] += u[i] * g
    np.testing.assert_allclose(bt.T @ ((at.T @ u) * (g_ @ g)), dd, rtol=0, atol=1e-13)
    dg = np.array([u @ d[j:j + m] for j in range(r)])
    np.testing.assert_allclose(g_.T @ ((at.T @ u) * (bt @ d)), dg, rtol=0, atol=1e-13)


def test_the_tiles_per_dimension():
    """F(4, 3) and F(2, 5) in 1-D and 2-D (mixed per axis); F(2, 3) in 3-D, where
    F(4, 3)'s float32 error reached the bound at 128 channels."""
    def tiles(x_shape, w_shape):
        geom = fftconv.plan(x_shape, w_shape, dtype=np.float32, algorithm="direct").geometry
        return [(a.m, a.r) for a in winograd.axes_of(geom)]
    assert tiles((1, 1, 20), (1, 1, 5)) == [(2, 5)]
    assert tiles((1, 1, 20, 20), (1, 1, 3, 5)) == [(4, 3), (2, 5)]
    assert tiles((1, 1, 9, 9, 9), (1, 1, 3, 3, 3)) == [(2, 3)] * 3


def test_the_points_are_exact_rationals():
    assert winograd.POINTS[:5] == (0, -1, 1, Fraction(1, 2), -2)
    assert all(isinstance(p, Fraction) for p in winograd.POINTS)


# -- scope, choice, cost ---------------------------------------------------------------------
OUT_OF_SCOPE = [
    ("stride", (2, 3, 16, 16), (4, 3, 3, 3), dict(stride=2)),
    ("dilation", (2, 3, 16, 16), (4, 3, 3, 3), dict(dilation=(1, 2))),
    ("kernel 4", (2, 3, 16, 16), (4, 3, 4, 4), dict()),
    ("kernel 7", (2, 3, 32), (4, 3, 7), dict(padding="same")),
    ("kernel 1", (2, 3, 8, 8), (4, 3, 1, 3), dict()),
    ("3d kernel 5", (1, 2, 9, 9, 9), (2, 2, 5, 5, 5), dict()),
    ("transposed stride", (2, 3, 8, 8), (3, 4, 3, 3), dict(transposed=True, stride=2)),
]


@pytest.mark.parametrize("name, x_shape, w_shape, kw", OUT_OF_SCOPE,
                         ids=[c[0] for c in OUT_OF_SCOPE])
def test_asking_for_it_outside_its_scope_is_a_clear_error(name, x_shape, w_shape, kw):
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    message = (r"fftconv\.forward: algorithm='winograd' supports stride 1, dilation 1 and "
               r"kernels of 3 or 5 taps on every axis .*, got kernel=")
    with pytest.raises(ValueError, match=message):
        fftconv.forward(x, w, algorithm="winograd", **kw)
    with pytest.raises(ValueError, match=r"fftconv\.plan: algorithm='winograd' supports"):
        fftconv.plan(x_shape, w_shape, dtype=np.float64, algorithm="winograd", **kw)


@pytest.mark.parametrize("name, x_shape, w_shape, kw", OUT_OF_SCOPE,
                         ids=[c[0] for c in OUT_OF_SCOPE])
def test_auto_never_chooses_it_outside_its_scope(name, x_shape, w_shape, kw):
    geom = fftconv.plan(x_shape, w_shape, dtype=np.float64, algorithm="direct", **kw).geometry
    assert not winograd.supports(geom)
    assert math.isinf(registry.estimates(geom, np.float32)["winograd"][0])
    assert math.isinf(costs.seconds(winograd.work(geom, np.float32)))
    for budget in (None, 1 << 16):
        p = fftconv.plan(x_shape, w_shape, dtype=np.float32, algorithm="auto",
                         max_workspace_bytes=budget, **kw)
        assert p.algorithm != "winograd"


def test_in_scope_its_cost_is_finite_and_auto_may_choose_it():
    geom = fftconv.plan((32, 64, 32, 32), (64, 64, 3, 3), dtype=np.float32, algorithm="direct",
                        padding="same").geometry
    units = winograd.work(geom, np.float32)
    assert set(units) <= set(costs.RATES)
    assert 0 < costs.seconds(units) < math.inf
    # the channel sums: 3 products of 2 * P * tiles * C_out * Cg flops (tiles with the
    # lattice's extra column per row of 8: 32 samples * 8 * 9 tiles)
    assert units["winograd_flop"] == 6 * 36 * (32 * 8 * 9) * 64 * 64


def test_the_error_comes_before_any_work(monkeypatch):
    """``partition`` refuses the layer: no engine is built."""
    built = []
    monkeypatch.setattr(winograd, "WinogradEngine",
                        lambda *a, **k: built.append(a) or pytest.fail("built"))
    with pytest.raises(ValueError, match="winograd"):
        fftconv.forward(np.ones((1, 1, 9)), np.ones((1, 1, 4)), algorithm="winograd")
    assert not built


# -- memory ----------------------------------------------------------------------------------
def test_a_small_budget_runs_the_batch_in_chunks():
    rng = np.random.default_rng(9)
    x_shape, w_shape, kw = (5, 3, 12, 10), (4, 3, 3, 3), dict(padding="same")
    x, w, b, dy = _operands(rng, x_shape, w_shape, kw, "float64")
    y_ref, g_ref = _references(x, w, b, dy, kw)
    geom = fftconv.plan(x_shape, w_shape, dtype=np.float64, algorithm="direct", **kw).geometry
    budget = winograd.workspace_bytes(geom, np.float64, 2)
    p = fftconv.plan(x_shape, w_shape, dtype=np.float64, algorithm="winograd",
                     max_workspace_bytes=budget, **kw)
    assert p.chunk == 2 and p.workspace_bytes <= budget + p._engine.kept_bytes
    y, pullback = p.vjp(x, w, b)
    assert_close(y, y_ref, np.float64, "y")
    for got, want, what in zip(pullback(dy), g_ref, ("dx", "dw", "db")):
        assert_close(got, want, np.float64, what)
    with pytest.raises(ValueError, match="max_workspace_bytes=100 is too small"):
        fftconv.plan(x_shape, w_shape, dtype=np.float64, algorithm="winograd",
                     max_workspace_bytes=100, **kw)


def test_a_transposed_layer_in_chunks():
    rng = np.random.default_rng(4)
    x_shape, w_shape, kw = (5, 3, 8, 9), (3, 2, 3, 3), dict(padding=1)
    x, w = random_array(rng, x_shape, "float64"), random_array(rng, w_shape, "float64")
    y_ref = oracle.oracle_transposed_forward(x, w, None, **kw)
    dy = random_array(rng, y_ref.shape, "float64")
    g_ref = oracle.oracle_transposed_backward(dy, x, w, **kw)
    geom = fftconv.plan(x_shape, w_shape, dtype=np.float64, algorithm="direct", transposed=True,
                        **kw).geometry
    p = fftconv.plan(x_shape, w_shape, dtype=np.float64, algorithm="winograd", transposed=True,
                     max_workspace_bytes=winograd.workspace_bytes(geom, np.float64, 2), **kw)
    assert p.chunk == 2
    y, pullback = p.vjp(x, w)
    assert_close(y, y_ref, np.float64, "y")
    for got, want, what in zip(pullback(dy), g_ref, ("dx", "dw")):
        assert_close(got, want, np.float64, what)


@pytest.mark.parametrize("x_shape, w_shape, kw", [
    ((4, 8, 40, 36), (8, 8, 3, 3), dict(padding="same")),
    ((2, 4, 30, 34), (6, 4, 5, 5), dict(padding=2)),
    ((2, 4, 10, 12, 11), (4, 4, 3, 3, 3), dict()),
])
def test_the_workspace_bounds_a_steps_allocations(x_shape, w_shape, kw):
    """tracemalloc's peak over a training step stays within the engine's workspace,
    what a forward pass keeps, and the step's own inputs and outputs."""
    rng = np.random.default_rng(2)
    x, w, _, dy = _operands(rng, x_shape, w_shape, kw, "float32", bias=False)
    p = fftconv.plan(x_shape, w_shape, dtype=np.float32, algorithm="winograd", **kw)
    p.forward(x, w)
    p.backward(dy)
    tracemalloc.start()
    try:
        p.forward(x, w + 1)
        p.backward(dy)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    results = 2 * (x.nbytes + dy.nbytes + w.nbytes)
    assert peak <= p.workspace_bytes + results, (peak, p.workspace_bytes, results)


# -- values ----------------------------------------------------------------------------------
def test_a_nan_stays_in_its_own_sample():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((3, 2, 12, 12))
    w = rng.standard_normal((2, 2, 3, 3))
    x[1, 0, 5, 6] = np.nan
    y, pullback = fftconv.vjp(x, w, algorithm="winograd", padding="same")
    assert np.isnan(y[1]).any() and np.isfinite(y[[0, 2]]).all()
    dy = rng.standard_normal(y.shape)
    dy[2, 1, 3, 3] = np.inf
    dx, _, _ = pullback(dy)
    assert np.isfinite(dx[[0, 1]]).all() and not np.isfinite(dx[2]).all()


def test_values_near_the_top_of_float32():
    """The runner's power-of-two scaling keeps the transforms' growth in range."""
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((2, 3, 10, 10)) * 1e34).astype(np.float32)
    w = rng.standard_normal((2, 3, 3, 3)).astype(np.float32)
    y = fftconv.forward(x, w, algorithm="winograd", padding="same")
    ref = oracle.oracle_forward(x.astype(np.float64), w.astype(np.float64), padding="same")
    assert np.isfinite(y).all()
    assert_close(y, ref, np.float32, "y")


# -- other array libraries ---------------------------------------------------------------------
def test_it_runs_without_strided_views():
    """No explicit strides: every backend runs it (``auto`` weighs it there too)."""
    assert not registry.REGISTRY["winograd"].strided
    assert "winograd" in registry.names_on(backends.Arrays(np))


@pytest.mark.parametrize("library", ["torch", "array_api_strict"])
def test_other_libraries_give_the_numpy_results(library):
    lib = pytest.importorskip(library)
    rng = np.random.default_rng(6)
    kw = dict(padding="same", groups=2)
    x, w, b, dy = _operands(rng, (2, 4, 9, 11), (4, 2, 3, 5), kw, "float64")
    want = fftconv.forward(x, w, b, algorithm="winograd", **kw)
    want_grads = fftconv.backward(dy, x, w, algorithm="winograd", **kw)
    if library == "torch":
        def convert(a):
            return lib.from_numpy(np.array(a, copy=True))

        def back(a):
            return a.numpy()
    else:
        def convert(a):
            return lib.asarray(np.array(a, copy=True))

        def back(a):
            return np.asarray(a)
    y = fftconv.forward(convert(x), convert(w), convert(b), algorithm="winograd", **kw)
    grads = fftconv.backward(convert(dy), convert(x), convert(w), algorithm="winograd", **kw)
    assert type(y) is type(convert(x))
    assert_close(back(y), want, np.float64, "y")
    for got, ref, what in zip(grads, want_grads, ("dx", "dw", "db")):
        assert_close(back(got), ref, np.float64, what)
