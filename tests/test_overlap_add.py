"""Overlap-add tiling: exact against the oracle for every option and many tile
shapes, memory bounded by the tile, and tile choice by the cost model."""
import numpy as np
import pytest

import fftconv
from fftconv.algorithms import fft as fft_path, overlap_add
from fftconv.checks import check_layer
from conftest import random_options
from oracle import oracle_backward, oracle_forward


def random_case(rng):
    nd = int(rng.integers(1, 4))
    groups, cg, og, n_batch = int(rng.choice([1, 2])), int(rng.integers(1, 3)), \
        int(rng.integers(1, 3)), int(rng.integers(1, 3))
    k = tuple(int(v) for v in rng.integers(1, 4, nd))
    kw = random_options(rng, nd, groups)
    size = tuple(int(v) for v in rng.integers(9, 15, nd))
    complex_ = bool(rng.integers(0, 2))
    x = rng.standard_normal((n_batch, groups * cg) + size)
    w = rng.standard_normal((groups * og, cg) + k)
    if complex_:
        x, w = x + 1j * rng.standard_normal(x.shape), w + 1j * rng.standard_normal(w.shape)
    tile = tuple(int(v) for v in rng.integers(1, 6, nd))
    return x, w, kw, tile


@pytest.mark.parametrize("seed", range(40))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_tiled_passes_match_the_oracle(seed, dtype):
    rng = np.random.default_rng(seed)
    x, w, kw, tile = random_case(rng)
    if dtype == "float32":
        x, w = x.astype(np.complex64 if x.dtype.kind == "c" else np.float32), \
            w.astype(np.complex64 if w.dtype.kind == "c" else np.float32)
    try:
        check_layer("t", x.shape, w.shape, real=True, **kw)
    except ValueError:
        pytest.skip("kernel larger than padded input")
    p = fftconv.plan(x.shape, w.shape, dtype=x.dtype, algorithm="overlap_add", tile=tile, **kw)
    assert p.algorithm == "overlap_add" and p.tile == tuple(min(t, o) for t, o in
                                                             zip(tile, p.out_shape[2:]))
    b = rng.standard_normal(w.shape[0]).astype(x.real.dtype)
    y = p.forward(x, w, b)
    dy = rng.standard_normal(y.shape).astype(y.dtype)
    dx, dw, db = p.backward(dy)
    tol = 1e-10 if x.real.dtype == np.float64 else 1e-5
    refs = [oracle_forward(x, w, b, **kw)] + list(oracle_backward(dy, x, w, **kw))
    for got, want in zip((y, dx, dw, db), refs):
        assert got.dtype == x.dtype or got is db
        assert np.abs(got - want).max() <= tol * np.abs(want).max()


def test_memory_is_bounded_by_the_tile():
    shape_x, shape_w = (1, 2, 4096), (2, 2, 33)
    whole = fftconv.plan(shape_x, shape_w, dtype=np.float32, algorithm="fft")
    small = fftconv.plan(shape_x, shape_w, dtype=np.float32, algorithm="overlap_add", tile=(128,))
    big = fftconv.plan(shape_x, shape_w, dtype=np.float32, algorithm="overlap_add", tile=(1024,))
    assert small.workspace_bytes < big.workspace_bytes < whole.workspace_bytes
    # the working buffers; workspace_bytes also counts what a forward keeps (a copy of x
    # with several passes of tiles)
    assert small._engine.workspace_bytes * 10 < whole.workspace_bytes
    assert small.fft_shape[0] >= 128 + 32 and small.fft_shape[0] < 256


def test_cost_model_tiles_long_inputs_and_not_short_ones():
    long_geom = check_layer("t", (1, 4, 1 << 20), (4, 4, 65), padding="valid", stride=1,
                            dilation=1, groups=1, flip_kernel=False, real=True).conv
    tile, _ = overlap_add.best_tile(long_geom, np.float32)
    assert tile[0] < long_geom.out_size[0] // 4
    short_geom = check_layer("t", (8, 16, 64, 64), (16, 16, 5, 5), padding="valid", stride=1,
                             dilation=1, groups=1, flip_kernel=False, real=True).conv
    assert overlap_add.tile_candidates(short_geom, 8)[0][-1] == short_geom.out_size[0]


def test_tile_needs_overlap_add():
    with pytest.raises(ValueError, match=r"fftconv\.plan: tile is for algorithm='overlap_add' "
                                         r"or 'fft_tiles', got algorithm='fft'"):
        fftconv.plan((1, 1, 64), (1, 1, 3), dtype=np.float64, algorithm="fft", tile=(8,))
    with pytest.raises(ValueError, match=r"fftconv\.plan: tile must be >= 1 on every axis"):
        fftconv.plan((1, 1, 64), (1, 1, 3), dtype=np.float64, algorithm="overlap_add", tile=(0,))


@pytest.mark.parametrize("seed", range(16))
@pytest.mark.parametrize("per_pass", [2, 3, 1000])
def test_tiles_batched_into_passes_match_the_oracle(seed, per_pass, monkeypatch):
    """Several tiles per pass in the batch axis, a short last pass included."""
    monkeypatch.setattr(overlap_add, "tiles_per_pass",
                        lambda geom, dtype, tile: min(per_pass, int(np.prod(
                            [-(-o // b) for o, b in zip(geom.out_size, tile)]))))
    rng = np.random.default_rng(seed)
    x, w, kw, tile = random_case(rng)
    transposed = bool(seed % 2)
    try:
        check_layer("t", x.shape, w.shape, real=True, **kw)
    except ValueError:
        pytest.skip("kernel larger than padded input")
    if transposed:  # the transposed layer over this layer's output: the roles exchanged
        y = fftconv.forward(x, w, algorithm="fft", **kw)
        layer = dict(kw, transposed=True, padding=0 if isinstance(kw["padding"], str)
                     else kw["padding"])
        try:
            ref = fftconv.plan(y.shape, w.shape, dtype=y.dtype, algorithm="direct", **layer)
        except ValueError:
            pytest.skip("no transposed layer of this geometry")
        p = fftconv.plan(y.shape, w.shape, dtype=y.dtype, algorithm="overlap_add", tile=tile,
                         **layer)
        got, want = p.forward(y, w), ref.forward(y, w)
        assert np.abs(got - want).max() <= 1e-10 * np.abs(want).max()
        g = rng.standard_normal(want.shape)
        for a, r in zip(p.backward(g)[:2], ref.backward(g)[:2]):
            assert np.abs(a - r).max() <= 1e-10 * np.abs(r).max()
        return
    p = fftconv.plan(x.shape, w.shape, dtype=x.dtype, algorithm="overlap_add", tile=tile, **kw)
    n_tiles = int(np.prod([-(-o // b) for o, b in zip(p.out_shape[2:], p.tile)]))
    y = p.forward(x, w)
    assert p.transform_counts["forward"] == 1 + -(-n_tiles // min(per_pass, n_tiles))
    dy = rng.standard_normal(y.shape)
    if np.iscomplexobj(x):
        dy = dy + 1j * rng.standard_normal(y.shape)
    dx, dw, _ = p.backward(dy)
    # x's tiles are transformed again in the backward pass only with several passes:
    # in one pass the forward pass keeps their spectrum
    passes = -(-n_tiles // min(per_pass, n_tiles))
    assert p.transform_counts == {"forward": 1 + 2 * passes + (passes if passes > 1 else 0),
                                  "inverse": 2 * passes + 1}
    refs = [oracle_forward(x, w, None, **kw)] + list(oracle_backward(dy, x, w, **kw))[:2]
    for got, want in zip((y, dx, dw), refs):
        assert np.abs(got - want).max() <= 1e-10 * np.abs(want).max()


def test_tiles_per_pass_bounds_the_pass_workspace():
    from fftconv.algorithms.fft import workspace_bytes
    from fftconv.geometry import tile_geometry
    geom = fftconv.plan((2, 4, 1 << 16), (4, 4, 65), dtype=np.float32,
                        algorithm="overlap_add", tile=(512,)).geometry
    per_pass = overlap_add.tiles_per_pass(geom, np.float32, (512,))
    one = workspace_bytes(tile_geometry(geom, (512,)), np.float32, geom.batch)
    whole = workspace_bytes(geom, np.float32, geom.batch)
    assert 1 < per_pass < -(-geom.out_size[0] // 512)
    assert per_pass * one <= min(overlap_add.PASS_BYTES, whole // overlap_add.PASS_SHARE)


@pytest.mark.parametrize("padding, transposed", [("valid", False), ("same", False),
                                                 (0, True)])
def test_a_single_tile_is_the_fft_path(padding, transposed):
    """One tile covering the output runs the FFT path's engine: the same results,
    bit for bit, and the same workspace, with no tile windows copied."""
    from fftconv.algorithms.fft import FFTEngine
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((2, 4, 30, 26)), rng.standard_normal((4, 4, 5, 3))
    layer = dict(padding=padding, transposed=transposed)
    fft = fftconv.plan(x.shape, w.shape, dtype=np.float64, algorithm="fft", **layer)
    one = fftconv.plan(x.shape, w.shape, dtype=np.float64, algorithm="overlap_add",
                       tile=(100, 100), **layer)
    assert isinstance(one._engine, FFTEngine) and one.workspace_bytes == fft.workspace_bytes
    y = one.forward(x, w)
    np.testing.assert_array_equal(y, fft.forward(x, w))
    dy = rng.standard_normal(y.shape)
    for got, want in zip(one.backward(dy), fft.backward(dy)):
        np.testing.assert_array_equal(got, want)
    geom = fft.geometry
    assert overlap_add.work(geom, np.float64, (100, 100)) == fft_path.work(geom, np.float64)


def test_work_prices_the_elements_the_tile_copies_move():
    """Each of 5 tiles (60 outputs, tiles of 12, windows of 16 for k5) moves its
    window of ``x`` (2 x 3 x 16) in, its ``y`` tile (2 x 4 x 12) out, its ``dy`` tile
    in, and adds into its ``dx`` window (read and written): 5 x (3 x 96 + 2 x 96);
    float64 at twice the price."""
    geom = fftconv.plan((2, 3, 64), (4, 3, 5), dtype=np.float32, algorithm="direct").geometry
    one_pass = overlap_add.work(geom, np.float32, (12,), per_pass=5)
    assert one_pass["tile_element"] == 5 * (3 * 96 + 2 * 96)
    assert overlap_add.work(geom, np.float64, (12,), per_pass=5)["tile_element"] == 2 * 5 * 480
    several = overlap_add.work(geom, np.float32, (12,), per_pass=2)
    assert several["tile_element"] == 5 * (4 * 96 + 2 * 96)
