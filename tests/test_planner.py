"""The planner: spectra reuse across a training step, stale-weight detection,
bounded thread-safe caches, exposed geometry and both FFT backends."""
import threading

import numpy as np
import pytest

import fftconv
from fftconv.planner import EngineCache
from fftconv.transforms import spectrum_bytes
from oracle import oracle_backward, oracle_forward

RNG = np.random.default_rng(7)


def make(shape, dtype=np.float64):
    return RNG.standard_normal(shape).astype(dtype)


def test_one_training_step_is_three_forward_and_three_inverse_transforms():
    x, w, b = make((3, 4, 12, 10)), make((6, 2, 3, 3)), make(6)
    p = fftconv.plan(x.shape, w.shape, algorithm="fft", dtype=np.float64, groups=2, padding="same", stride=2)
    y = p.forward(x, w, b)
    assert p.transform_counts == {"forward": 2, "inverse": 1}
    dy = make(y.shape)
    dx, dw, db = p.backward(dy)
    assert p.transform_counts == {"forward": 3, "inverse": 3}
    ref = oracle_backward(dy, x, w, padding="same", stride=2, dilation=1, groups=2, flip_kernel=False)
    for got, want in zip((dx, dw, db), ref):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-10 * np.abs(want).max())


def test_unchanged_weights_are_not_transformed_again():
    x, w = make((2, 3, 16)), make((4, 3, 5))
    p = fftconv.plan(x.shape, w.shape, algorithm="fft", dtype=np.float64)
    p.forward(x, w)
    p.forward(make(x.shape), w.copy())  # equal values, other object: still no new transform
    assert p.transform_counts == {"forward": 3, "inverse": 2}


def test_weights_changed_in_place_are_detected():
    x, w = make((2, 3, 16, 16)), make((4, 3, 5, 5))
    p = fftconv.plan(x.shape, w.shape, algorithm="fft", dtype=np.float64)
    p.forward(x, w)
    w[1, 2, 3, 4] += 1e-9  # same object, same id(), new values
    y = p.forward(x, w)
    assert p.transform_counts["forward"] == 4
    np.testing.assert_allclose(y, oracle_forward(x, w, None, padding="valid", stride=1,
                                                 dilation=1, groups=1, flip_kernel=False),
                               rtol=0, atol=1e-12)
    # backward uses the weights of the last forward, not stale spectra
    dx = p.backward(np.ones_like(y)).dx
    ref = oracle_backward(np.ones_like(y), x, w, padding="valid", stride=1, dilation=1, groups=1,
                          flip_kernel=False)[0]
    np.testing.assert_allclose(dx, ref, rtol=0, atol=1e-12 * np.abs(ref).max())


def test_backward_uses_the_x_of_the_last_forward():
    x, w = make((2, 2, 9)), make((3, 2, 4))
    p = fftconv.plan(x.shape, w.shape, dtype=np.float64, algorithm="direct")
    y = p.forward(x, w)
    x_then = x.copy()
    x[...] = 0  # user reuses their buffer
    dw = p.backward(np.ones_like(y)).dw
    ref = oracle_backward(np.ones_like(y), x_then, w, padding="valid", stride=1, dilation=1,
                          groups=1, flip_kernel=False)[1]
    np.testing.assert_allclose(dw, ref, rtol=0, atol=1e-12)


def test_plan_exposes_geometry():
    p = fftconv.plan((2, 3, 100, 60), (4, 3, 7, 7), algorithm="fft", dtype=np.float32, padding="valid")
    assert p.out_shape == (2, 4, 94, 54)
    assert p.fft_shape == (100, 60)  # the padded input size, already fast lengths
    r = repr(p)
    assert "x(2, 3, 100, 60)" in r and "y(2, 4, 94, 54)" in r and "fft_shape=(100, 60)" in r
    assert "float32" in r
    q = fftconv.plan((1, 1, 101), (1, 1, 7), algorithm="fft", dtype=np.float64, padding="full")
    assert q.fft_shape == (120,)  # padded 101 + 12 = 113 -> smallest even 7-smooth >= 113


def test_cache_is_bounded_and_reuses_engines():
    cache = EngineCache(max_entries=2)
    from fftconv.config import get_settings
    from fftconv.geometry import make_geometry
    geoms = [make_geometry((1, 1, n), (1, 1, 3), "valid", (1,), (1,), 1, False, True)
             for n in (8, 9, 10)]
    from fftconv.backends import host
    from fftconv.planner import engine_for
    import fftconv.planner as planner
    old, planner.ENGINE_CACHE = planner.ENGINE_CACHE, cache

    def lend(geom, dtype, algorithm, tile=None):
        with engine_for("t", geom, dtype, algorithm, get_settings(), tile, host()) as entry:
            return entry
    try:
        a = lend(geoms[0], np.float64, "fft")
        assert lend(geoms[0], np.float64, "fft") is a
        assert lend(geoms[0], np.float32, "fft") is not a
        assert lend(geoms[0], np.float64, "overlap_add", (2,)) is not a
        assert len(cache) == 2  # bounded: the first one was evicted
        lend(geoms[1], np.float64, "fft")
        lend(geoms[2], np.float64, "fft")
        assert len(cache) == 2
    finally:
        planner.ENGINE_CACHE = old


def test_stateless_calls_share_cached_engine_across_threads():
    x, w = make((4, 3, 20, 20)), make((5, 3, 3, 3))
    ref = oracle_forward(x, w, None, padding="valid", stride=1, dilation=1, groups=1,
                         flip_kernel=False)
    errors = []

    def work():
        for _ in range(10):
            xi = x * 1.0
            y = fftconv.forward(xi, w, algorithm="fft")
            errors.append(np.abs(y - ref).max())

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 40 and max(errors) < 1e-10


@pytest.mark.parametrize("backend", ["pyfftw", "scipy"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex64, np.complex128])
def test_both_backends_match_the_oracle(backend, dtype):
    pytest.importorskip(backend if backend == "pyfftw" else "scipy")
    x, w = make((2, 4, 11, 9)), make((6, 2, 3, 4))
    if np.dtype(dtype).kind == "c":
        x, w = x + 1j * make(x.shape), w + 1j * make(w.shape)
    x, w = x.astype(dtype), w.astype(dtype)
    kw = dict(padding="same", stride=(2, 1), dilation=(1, 2), groups=2, flip_kernel=True)
    with fftconv.using(backend=backend):
        p = fftconv.plan(x.shape, w.shape, algorithm="fft", dtype=dtype, **kw)
        y = p.forward(x, w)
        grads = p.backward(np.ones_like(y))
    ref_y = oracle_forward(x, w, None, **kw)
    ref = oracle_backward(np.ones_like(y), x, w, **kw)
    tol = 1e-10 if np.dtype(dtype) in (np.float64, np.complex128) else 1e-5
    for got, want in zip((y,) + tuple(grads), (ref_y,) + tuple(ref)):
        assert got.dtype == dtype
        assert np.abs(got - want).max() <= tol * np.abs(want).max()


def test_measured_fftw_plans_give_the_same_result():
    pytest.importorskip("pyfftw")
    x, w = make((2, 3, 30, 30), np.float32), make((4, 3, 5, 5), np.float32)
    results = []
    for effort in ("FFTW_ESTIMATE", "FFTW_MEASURE"):
        with fftconv.using(backend="pyfftw", planner_effort=effort, planning_timelimit=0.5):
            p = fftconv.plan(x.shape, w.shape, algorithm="fft", dtype=np.float32)
            y = p.forward(x, w)
            results.append((y,) + tuple(p.backward(y)))
    for a, b in zip(*results):
        assert np.abs(a - b).max() <= 1e-5 * np.abs(b).max()


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 2e-6)])
def test_workspace_budget_chunks_the_batch_with_the_same_results(dtype, tol):
    x, w, b = make((7, 4, 20, 18), dtype), make((6, 2, 5, 3), dtype), make(6, dtype)
    kw = dict(padding="same", stride=(2, 1), groups=2)
    whole = fftconv.plan(x.shape, w.shape, algorithm="fft", dtype=dtype, **kw)
    budget = whole.workspace_bytes // 2
    chunked = fftconv.plan(x.shape, w.shape, algorithm="fft", dtype=dtype, max_workspace_bytes=budget, **kw)
    assert 1 <= chunked.chunk < 7 and chunked._engine.workspace_bytes <= budget
    assert chunked.workspace_bytes == chunked._engine.workspace_bytes + x.nbytes  # x kept
    assert whole.chunk == 7 and "chunk=" in repr(chunked)
    y0, y1 = whole.forward(x, w, b), chunked.forward(x, w, b)
    dy = make(y0.shape, dtype)
    g0, g1 = whole.backward(dy), chunked.backward(dy)
    for a, ref in zip((y1,) + tuple(g1), (y0,) + tuple(g0)):
        assert a.dtype == dtype
        assert np.abs(a - ref).max() <= tol * np.abs(ref).max()
    ref = oracle_backward(dy, x, w, flip_kernel=False, dilation=1, **kw)
    for a, want in zip(g1, ref):
        assert np.abs(a - want).max() <= (1e-10 if dtype == np.float64 else 1e-5) * np.abs(want).max()


def test_stateless_calls_respect_the_workspace_setting():
    x, w = make((5, 3, 16, 16)), make((4, 3, 3, 3))
    ref = fftconv.backward(np.ones((5, 4, 14, 14)), x, w, algorithm="fft")
    one_sample = fftconv.plan(x.shape[:0] + (1,) + x.shape[1:], w.shape, algorithm="fft", dtype=np.float64)
    with fftconv.using(max_workspace_bytes=2 * one_sample.workspace_bytes):
        got = fftconv.backward(np.ones((5, 4, 14, 14)), x, w, algorithm="fft")
    for a, b in zip(got, ref):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12 * np.abs(b).max())


def test_budget_below_one_sample_is_a_clear_error():
    with pytest.raises(ValueError, match=r"fftconv\.plan: max_workspace_bytes=1000 is too small: "
                                         r"one sample needs \d+ bytes of FFT workspace"):
        fftconv.plan((4, 3, 64, 64), (8, 3, 5, 5), algorithm="fft", dtype=np.float32, max_workspace_bytes=1000)
    with pytest.raises(ValueError, match=r"fftconv\.plan: max_workspace_bytes must be None or an int"):
        fftconv.plan((4, 3, 64, 64), (8, 3, 5, 5), algorithm="fft", dtype=np.float32, max_workspace_bytes=-5)
    with fftconv.using(max_workspace_bytes=1000):
        with pytest.raises(ValueError, match=r"fftconv\.forward: max_workspace_bytes=1000 is too small"):
            fftconv.forward(np.zeros((4, 3, 64, 64)), np.zeros((8, 3, 5, 5)), algorithm="fft")


@pytest.mark.parametrize("kw", [{}, {"stride": 2}, {"dilation": (1, 2)},
                                {"max_workspace_bytes": 300_000}])
def test_workspace_bytes_matches_the_buffers_actually_allocated(kw):
    x, w = make((3, 4, 24, 20), np.float32), make((6, 2, 3, 3), np.float32)
    p = fftconv.plan(x.shape, w.shape, algorithm="fft", dtype=np.float32, groups=2, **kw)
    y = p.forward(x, w)
    p.backward(y)
    engine = p._engine.passes
    saved = p._last.pullback._saved  # the kept X spectrum lives in the pullback, not the engine
    kept = saved.array.nbytes  # the X spectrum, or a copy of x when chunked
    allocated = (sum(t.nbytes for t in engine._transforms.values()) + p._weights._state.state.nbytes
                 + sum(a.nbytes for a in engine._unfolded.values()) + kept)
    # the spectra of w and dy tiled to the full grid exist only during a pass
    transient = 0
    if "dilation" in kw:
        transient += spectrum_bytes(6 * 2, p.fft_shape, np.float32)
    if "stride" in kw:
        transient += spectrum_bytes(p.chunk * 6, p.fft_shape, np.float32)
    assert p.workspace_bytes == allocated + transient
    assert ("max_workspace_bytes" in kw) == (p.chunk < 3)


def test_stride_and_dilation_transform_on_coarse_grids():
    """Stride does not pay for discarded outputs, dilation does not transform zeros."""
    x, w = make((2, 3, 30, 24), np.float32), make((4, 3, 3, 3), np.float32)
    p = fftconv.plan(x.shape, w.shape, algorithm="fft", dtype=np.float32, stride=(2, 3), dilation=(3, 2))
    y = p.forward(x, w)
    p.backward(y)
    grids = {name: t.fft_shape for name, t in p._engine.passes._transforms.items()}
    full = p.fft_shape
    assert full[0] % 6 == 0 and full[1] % 6 == 0
    assert grids["x"] == grids["dx"] == full
    assert grids["y"] == grids["dy"] == (full[0] // 2, full[1] // 3)
    assert grids["w"] == grids["dw"] == (full[0] // 3, full[1] // 2)
    assert p.transform_counts == {"forward": 3, "inverse": 3}


def test_using_is_local_to_its_thread():
    seen, started = [], threading.Event()
    before = fftconv.get_settings()

    def other():
        started.wait()
        seen.append(fftconv.get_settings().backend)

    t = threading.Thread(target=other)
    t.start()
    with fftconv.using(backend="scipy", threads=1):
        assert fftconv.get_settings().backend == "scipy"
        started.set()
        t.join()
    assert seen == [before.backend]  # the other thread never saw the override
    assert fftconv.get_settings() == before


def test_concurrent_planning_of_different_geometries():
    pytest.importorskip("pyfftw")
    errors = []

    def work(n):
        try:
            with fftconv.using(planner_effort="FFTW_MEASURE", planning_timelimit=0.05):
                x, w = make((2, 2, n, n)), make((3, 2, 3, 3))
                y = fftconv.forward(x, w, algorithm="fft")
                ref = oracle_forward(x, w, None, padding="valid", stride=1, dilation=1, groups=1,
                                     flip_kernel=False)
                errors.append(np.abs(y - ref).max())
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in (17, 19, 23, 29)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 4 and all(isinstance(e, float) and e < 1e-10 for e in errors), errors
