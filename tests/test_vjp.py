"""Pullbacks: a layer used many times, each use with its own gradients (CONVENTIONS §3)."""
import gc
import weakref

import numpy as np
import pytest

import fftconv
from conftest import ALGORITHMS, assert_close, random_array
from oracle import oracle_backward, oracle_forward

LAYERS = {
    1: ((2, 3, 20), (4, 3, 5), dict(padding="same", stride=2)),
    2: ((2, 2, 9, 8), (4, 2, 3, 2), dict(padding=1, dilation=(1, 2))),
    3: ((1, 2, 6, 5, 7), (2, 1, 3, 3, 2), dict(padding="full", groups=2)),
}


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_siamese_step(algorithm, nd, dtype):
    """``vjp`` on x1 then x2 with one plan, ``w`` changed in place in between,
    pullbacks called in reverse order: each equals the stateless ``backward``."""
    rng = np.random.default_rng(nd)
    x_shape, w_shape, kw = LAYERS[nd]
    p = fftconv.plan(x_shape, w_shape, dtype=dtype, algorithm=algorithm, **kw)
    w = random_array(rng, w_shape, dtype)
    x1, x2 = random_array(rng, x_shape, dtype), random_array(rng, x_shape, dtype)
    w1 = w.copy()
    y1, pb1 = p.vjp(x1, w)
    w *= 1.5                                  # an in-place update between the two uses
    y2, pb2 = p.vjp(x2, w)
    dy1, dy2 = random_array(rng, y1.shape, dtype), random_array(rng, y2.shape, dtype)
    g2, g1 = pb2(dy2), pb1(dy1)               # reverse order
    for g, x, ww, dy, y, name in ((g1, x1, w1, dy1, y1, "1"), (g2, x2, w, dy2, y2, "2")):
        ref = fftconv.backward(dy, x, ww, algorithm=algorithm, **kw)
        for got, want, what in zip(g, ref, ("dx", "dw", "db")):
            assert_close(got, want, dtype, what + name)
        assert_close(y, oracle_forward(x, ww, **kw), dtype, "y" + name)
        for got, want, what in zip(g, oracle_backward(dy, x, ww, **kw), ("dx", "dw", "db")):
            assert_close(got, want, dtype, what + name + " (oracle)")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_pullback_is_repeatable_and_sees_values_at_its_call(algorithm):
    rng = np.random.default_rng(7)
    x_shape, w_shape, kw = LAYERS[2]
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    x0, w0 = x.copy(), w.copy()
    y, pb = fftconv.vjp(x, w, algorithm=algorithm, **kw)
    dy = rng.standard_normal(y.shape)
    first = pb(dy)
    x += 1.0                                  # the caller reuses its buffers
    w[...] = 0.0
    _, other = fftconv.vjp(x, rng.standard_normal(w_shape), algorithm=algorithm, **kw)
    other(dy)                                 # another pullback runs in between
    again = pb(dy)
    ref = oracle_backward(dy, x0, w0, **kw)
    for a, b, want, name in zip(first, again, ref, ("dx", "dw", "db")):
        np.testing.assert_array_equal(a, b, err_msg=name)
        assert_close(a, want, np.float64, name)


def _planned(seed, nd, algorithm):
    """``(rng, plan, w, x_shape, layer keywords)`` for the float64 layer ``LAYERS[nd]``."""
    rng = np.random.default_rng(seed)
    x_shape, w_shape, kw = LAYERS[nd]
    p = fftconv.plan(x_shape, w_shape, dtype=np.float64, algorithm=algorithm, **kw)
    return rng, p, rng.standard_normal(w_shape), x_shape, kw


@pytest.mark.parametrize("algorithm", ["fft", "overlap_add"])
def test_unchanged_weights_are_transformed_once_and_shared(algorithm):
    rng, p, w, x_shape, kw = _planned(3, 2, algorithm)
    _, pb1 = p.vjp(rng.standard_normal(x_shape), w)
    _, pb2 = p.vjp(rng.standard_normal(x_shape), w.copy())   # equal values, another array
    assert pb1._weights is pb2._weights
    if algorithm == "fft":
        assert p.transform_counts["forward"] == 3   # x1, x2, and w once
    w[0, 0, 0, 0] += 1.0
    _, pb3 = p.vjp(rng.standard_normal(x_shape), w)
    assert pb3._weights is not pb1._weights
    # the stateless vjp shares the weight spectrum through its cached engine too
    _, s1 = fftconv.vjp(rng.standard_normal(x_shape), w, algorithm=algorithm, **kw)
    _, s2 = fftconv.vjp(rng.standard_normal(x_shape), w.copy(), algorithm=algorithm, **kw)
    assert s1._weights is s2._weights


@pytest.mark.parametrize("algorithm", ["fft", "direct", "overlap_add"])
def test_dropping_a_pullback_frees_what_it_kept(algorithm):
    rng, p, w, x_shape, kw = _planned(5, 1, algorithm)
    _, pb = p.vjp(rng.standard_normal(x_shape), w)
    kept = weakref.ref(pb._saved.array)
    state = pb._weights
    assert not np.shares_memory(pb._saved.array, w)
    _, later = p.vjp(rng.standard_normal(x_shape), w)
    assert later._weights is state             # a reference to the shared weights, not a copy
    del pb
    gc.collect()
    assert kept() is None


def test_pullbacks_keep_one_input_spectrum_each():
    """An FFT pullback keeps X (frequency-major), not x, and not a copy of the weights."""
    x_shape, w_shape, kw = (4, 3, 32, 32), (5, 3, 3, 3), dict(padding="same")
    p = fftconv.plan(x_shape, w_shape, dtype=np.float32, algorithm="fft", **kw)
    rng = np.random.default_rng(0)
    w = rng.standard_normal(w_shape).astype(np.float32)
    pullbacks = [p.vjp(rng.standard_normal(x_shape).astype(np.float32), w)[1] for _ in range(3)]
    spectra = {id(pb._saved.array) for pb in pullbacks}
    assert len(spectra) == 3 and all(pb._saved.kind == "spectrum" for pb in pullbacks)
    f = int(np.prod(p.fft_shape[:-1])) * (p.fft_shape[-1] // 2 + 1)
    assert all(pb._saved.array.nbytes == f * 4 * 3 * 8 for pb in pullbacks)   # complex64
    assert len({id(pb._weights) for pb in pullbacks}) == 1


def test_forward_backward_keep_meaning_the_last_forward():
    rng = np.random.default_rng(2)
    x_shape, w_shape, kw = LAYERS[1]
    p = fftconv.plan(x_shape, w_shape, dtype=np.float64, algorithm="fft", **kw)
    w = rng.standard_normal(w_shape)
    x1, x2 = rng.standard_normal(x_shape), rng.standard_normal(x_shape)
    p.forward(x1, w)
    y2 = p.forward(x2, w)
    dy = rng.standard_normal(y2.shape)
    got = p.backward(dy)
    for a, b in zip(got, oracle_backward(dy, x2, w, **kw)):
        assert_close(a, b, np.float64)
    assert "vjp" in fftconv.Plan.forward.__doc__ and "last" in fftconv.Plan.backward.__doc__


def test_skipping_a_gradient():
    rng = np.random.default_rng(4)
    x_shape, w_shape, kw = LAYERS[2]
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    for algorithm in ("fft", "direct", "overlap_add"):
        y, pb = fftconv.vjp(x, w, algorithm=algorithm, **kw)
        dy = rng.standard_normal(y.shape)
        ref = oracle_backward(dy, x, w, **kw)
        only_dx, only_dw = pb(dy, need_dw=False), pb(dy, need_dx=False)
        assert only_dx.dw is None and only_dw.dx is None
        assert_close(only_dx.dx, ref.dx, np.float64, "dx")
        assert_close(only_dw.dw, ref.dw, np.float64, "dw")


def test_a_step_with_vjp_costs_three_and_three_transforms():
    x_shape, w_shape, kw = LAYERS[2]
    p = fftconv.plan(x_shape, w_shape, dtype=np.float64, algorithm="fft", **kw)
    rng = np.random.default_rng(0)
    y, pb = p.vjp(rng.standard_normal(x_shape), rng.standard_normal(w_shape))
    pb(np.ones_like(y))
    assert p.transform_counts == {"forward": 3, "inverse": 3}


def _complex(rng, *shape):
    return rng.standard_normal(shape) + 1j * rng.standard_normal(shape)


@pytest.mark.parametrize("algorithm", ["fft", "direct", "overlap_add"])
def test_layers_sharing_an_engine_do_not_share_weight_states(algorithm):
    """A complex tied autoencoder (conv, then the transposed conv with the same
    ``w``) and one ``w`` used in both layouts share an engine, never a weight state."""
    from oracle import oracle_transposed_forward, to_channels_last, weights_to_channels_last
    rng = np.random.default_rng(0)
    x, w = _complex(rng, 2, 3, 15), _complex(rng, 4, 3, 5)
    kw = dict(padding=2, stride=2, algorithm=algorithm)
    h = fftconv.forward(x, w, **kw)
    y = fftconv.forward(h, w, transposed=True, **kw)
    assert_close(y, oracle_transposed_forward(h, w, padding=2, stride=2), np.complex128, "y")
    v = rng.standard_normal((2, 2, 2))
    xs = rng.standard_normal((1, 2, 6))
    first = fftconv.forward(xs, v, algorithm=algorithm)
    last = fftconv.forward(to_channels_last(xs), v, layout="channels_last", algorithm=algorithm)
    want = oracle_forward(to_channels_last(xs).transpose(0, 2, 1),
                          np.ascontiguousarray(np.transpose(v, (2, 1, 0))))
    assert_close(first, oracle_forward(xs, v), np.float64, "channels_first")
    assert_close(last, to_channels_last(want), np.float64, "channels_last")
    assert weights_to_channels_last(np.transpose(v, (2, 1, 0))).shape == v.shape


def test_direct_calls_on_one_geometry_do_not_wait_for_each_other():
    """The direct engine holds no buffers: its lock never blocks (CONVENTIONS §5b)."""
    import threading
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 3, 16)), rng.standard_normal((4, 3, 3))
    fftconv.forward(x, w, algorithm="direct")
    shared = [e for e in fftconv.planner.ENGINE_CACHE.entries()
              if type(e.engine).__name__ == "DirectEngine"][-1]
    done = []
    with shared.engine.lock:   # another caller is inside a direct pass
        t = threading.Thread(target=lambda: done.append(fftconv.forward(x, w, algorithm="direct")))
        t.start()
        t.join(timeout=60)
    assert done and not t.is_alive()


LAYER_OPTIONS = [dict(transposed=True, stride=2, padding=1, output_padding=1),
                 dict(padding="same", padding_mode="circular"),
                 dict(padding=2, padding_mode="reflect", stride=2),
                 dict(padding="same", padding_mode="replicate", layout="channels_last")]


def _layer_case(rng, options, n=3, dtype=np.float64, w=None):
    """``(x, w, dy, y, grads)`` of a layer with ``options``, in its layout; the
    reference from the oracle (``w``, channels-first, may be given)."""
    from oracle import (oracle_transposed_backward, oracle_transposed_forward,
                        to_channels_last, weights_to_channels_last)
    kw = {k: v for k, v in options.items() if k != "layout"}
    x = rng.standard_normal((n, 4, 9, 8)).astype(dtype)
    if w is None:
        w = rng.standard_normal((4, 2, 3, 3) if kw.get("transposed") else (2, 4, 3, 3))
    w = w.astype(dtype)
    transposed = kw.pop("transposed", False)
    fwd, bwd = ((oracle_transposed_forward, oracle_transposed_backward) if transposed
                else (oracle_forward, oracle_backward))
    y = fwd(x, w, **kw)
    dy = rng.standard_normal(y.shape).astype(dtype)
    grads = bwd(dy, x, w, **kw)
    if options.get("layout") == "channels_last":
        x, dy, y = (to_channels_last(a) for a in (x, dy, y))
        w = weights_to_channels_last(w)
        grads = (to_channels_last(grads.dx), weights_to_channels_last(grads.dw), grads.db)
    return x, w, dy, y, tuple(grads)


@pytest.mark.parametrize("options", LAYER_OPTIONS)
def test_chunked_and_tiled_plans_with_the_new_options(options):
    """A workspace budget (FFT in batch chunks) and tiny overlap-add tiles, through
    two outstanding pullbacks (the first one's x changed in place meanwhile), on
    transposed, padding-mode and channels-last layers."""
    rng = np.random.default_rng(1)
    w_first = rng.standard_normal((4, 2, 3, 3) if options.get("transposed") else (2, 4, 3, 3))
    x1, w, dy1, y1, g1 = _layer_case(rng, options, w=w_first)
    x2, _, dy2, y2, g2 = _layer_case(rng, options, w=w_first)
    full = fftconv.plan(x1.shape, w.shape, dtype=np.float64, algorithm="fft", **options)
    chunked = fftconv.plan(x1.shape, w.shape, dtype=np.float64, algorithm="fft",
                           max_workspace_bytes=full.workspace_bytes - 1, **options)
    tiled = fftconv.plan(x1.shape, w.shape, dtype=np.float64, algorithm="overlap_add",
                         tile=(2, 3), **options)
    assert chunked.chunk < 3 and tiled.tile == (2, 3)
    for p in (chunked, tiled):
        mine = x1.copy()
        out1, pb1 = p.vjp(mine, w)
        mine += 1.0
        out2, pb2 = p.vjp(x2, w)
        assert_close(out1, y1, np.float64, "y1")
        assert_close(out2, y2, np.float64, "y2")
        for grads, want in ((pb2(dy2), g2), (pb1(dy1), g1)):
            for got, ref, name in zip(grads, want, ("dx", "dw", "db")):
                assert_close(got, ref, np.float64, name)


@pytest.mark.parametrize("options", LAYER_OPTIONS)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_empty_batch_with_the_new_options(options, algorithm):
    rng = np.random.default_rng(0)
    x, w, dy, y, grads = _layer_case(rng, options, n=0)
    got_y, pullback = fftconv.vjp(x, w, algorithm=algorithm, **options)
    assert got_y.shape == y.shape and not got_y.any()
    for got, want in zip(pullback(dy), grads):
        assert got.shape == want.shape and not got.any()


@pytest.mark.parametrize("options", LAYER_OPTIONS)
def test_float16_and_integers_with_the_new_options(options):
    rng = np.random.default_rng(0)
    x, w, dy, y, grads = _layer_case(rng, options, dtype=np.float16)
    got = fftconv.forward(x, w, **options)
    assert got.dtype == np.float16
    assert np.max(np.abs(got - y)) <= 1e-2 * np.max(np.abs(y))
    xi, wi = np.round(4 * x).astype(np.int64), np.round(4 * w).astype(np.int32)
    yi = fftconv.forward(xi, wi, **options)
    assert yi.dtype == np.float64
    _, _, _, want, _ = _layer_case(np.random.default_rng(0), options)
    assert yi.shape == want.shape
