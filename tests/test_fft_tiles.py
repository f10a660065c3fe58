"""Small FFT tiles (``algorithm="fft_tiles"``): exact against the oracle for the three
products over tile sizes, odd sizes, strides, dilations, groups, dtypes and several
passes; its scope and tile choice; its errors."""
import math

import numpy as np
import pytest

import fftconv
from fftconv import registry
from fftconv.algorithms import fft_tiles
from fftconv.checks import check_layer
from conftest import assert_close, random_options
from oracle import oracle_backward, oracle_forward

def random_case(rng):
    """A small random layer and an output tile for it."""
    nd = int(rng.integers(1, 4))
    groups, cg, og = int(rng.choice([1, 2, 3])), int(rng.integers(1, 4)), int(rng.integers(1, 4))
    k = tuple(int(v) for v in rng.integers(1, 6, nd))
    kw = random_options(rng, nd, groups)
    size = tuple(int(v) for v in rng.integers(9, 20 if nd < 3 else 12, nd))
    x = rng.standard_normal((int(rng.integers(1, 3)), groups * cg) + size)
    w = rng.standard_normal((groups * og, cg) + k)
    tile = tuple(int(v) for v in rng.integers(1, 9, nd))
    return x, w, kw, tile


@pytest.mark.parametrize("seed", range(24))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_all_three_products_match_the_oracle(seed, dtype):
    rng = np.random.default_rng(seed)
    x, w, kw, tile = random_case(rng)
    x, w = x.astype(dtype), w.astype(dtype)
    try:
        check_layer("t", x.shape, w.shape, real=True, **kw)
    except ValueError:
        pytest.skip("kernel larger than padded input")
    p = fftconv.plan(x.shape, w.shape, dtype=dtype, algorithm="fft_tiles", tile=tile, **kw)
    assert p.algorithm == "fft_tiles"
    assert p.tile == tuple(min(t, o) for t, o in zip(tile, p.out_shape[2:]))
    b = rng.standard_normal(w.shape[0]).astype(dtype)
    y = p.forward(x, w, b)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx, dw, db = p.backward(dy)
    refs = [oracle_forward(x, w, b, **kw)] + list(oracle_backward(dy, x, w, **kw))
    for got, want in zip((y, dx, dw, db), refs):
        assert got.dtype == np.dtype(dtype)
        assert_close(got, want, dtype)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("slabs", [1, 2])
def test_several_passes_and_the_transposed_layer(seed, slabs, monkeypatch):
    """Slabs of tiles in several passes (the input's windows transformed again for the
    weight gradient, which sums over the passes), forward and transposed."""
    rng = np.random.default_rng(100 + seed)
    x, w, kw, tile = random_case(rng)
    kw["dilation"] = 1
    try:
        check_layer("t", x.shape, w.shape, real=True, **kw)
    except ValueError:
        pytest.skip("kernel larger than padded input")
    monkeypatch.setattr(fft_tiles, "slabs_per_pass",
                        lambda geom, tile: min(slabs, fft_tiles.grid(geom, tile)[0]))
    p = fftconv.plan(x.shape, w.shape, dtype=x.dtype, algorithm="fft_tiles", tile=tile, **kw)
    engine = p._engine
    assert engine.slabs == min(slabs, engine.grid[0])
    y = p.forward(x, w)
    dy = rng.standard_normal(y.shape)
    dx, dw, _ = p.backward(dy)
    refs = [oracle_forward(x, w, None, **kw)] + list(oracle_backward(dy, x, w, **kw))[:2]
    for got, want in zip((y, dx, dw), refs):
        assert_close(got, want, np.float64)
    layer = dict(kw, transposed=True, padding=0 if isinstance(kw["padding"], str)
                 else kw["padding"])
    try:
        ref = fftconv.plan(y.shape, w.shape, dtype=y.dtype, algorithm="direct", **layer)
    except ValueError:
        return
    q = fftconv.plan(y.shape, w.shape, dtype=y.dtype, algorithm="fft_tiles", tile=tile, **layer)
    assert_close(q.forward(y, w), ref.forward(y, w), np.float64)
    g = rng.standard_normal(ref.out_shape)
    for got, want in zip(q.backward(g)[:2], ref.backward(g)[:2]):
        assert_close(got, want, np.float64)


def test_pieces_per_window_and_the_staging_size():
    """An 8-point window of a 3-tap kernel is one 6-sample step and a 2-sample piece;
    the staging input holds every window."""
    geom = check_layer("t", (2, 4, 32, 32), (4, 4, 3, 3), padding="same", stride=1, dilation=1,
                       groups=1, flip_kernel=False, real=True).conv
    assert fft_tiles.grid(geom, (6, 6)) == (6, 6)
    assert fft_tiles.parts(geom, (6, 6)) == (2, 2)
    assert fft_tiles.staged(geom, (6, 6)) == (42, 42)
    assert fft_tiles.pass_geometry(geom, (6, 6), 6).x_shape == (2 * 36, 4, 8, 8)
    assert fft_tiles.tile_candidates(geom) == [(6, 6), (6, 14), (6, 30), (14, 6), (14, 14),
                                               (14, 30), (30, 6), (30, 14), (30, 30)]


def test_a_forward_that_keeps_transforms_the_input_once():
    x = np.random.default_rng(0).standard_normal((2, 3, 20, 17))
    w = np.random.default_rng(1).standard_normal((4, 3, 3, 3))
    p = fftconv.plan(x.shape, w.shape, dtype=np.float64, algorithm="fft_tiles", tile=(6, 6),
                     padding="same")
    y = p.forward(x, w)
    p.backward(np.ones_like(y))
    # x, w and dy forward; y, dx and dw inverse: one pass of every tile
    assert p.transform_counts == {"forward": 3, "inverse": 3}


def test_scope_kernels_longer_than_every_window_price_infinite():
    inside = check_layer("t", (1, 2, 64), (2, 2, 31), padding="same", stride=1, dilation=1,
                         groups=1, flip_kernel=False, real=True).conv
    outside = check_layer("t", (1, 2, 64), (2, 2, 33), padding="same", stride=1, dilation=1,
                          groups=1, flip_kernel=False, real=True).conv
    assert math.isfinite(registry.estimates(inside, np.float32)["fft_tiles"][0])
    assert math.isinf(registry.estimates(outside, np.float32)["fft_tiles"][0])
    assert "fft_tiles" not in registry.candidates(outside, np.float32)
    # named explicitly, it still runs: one tile, the whole output
    x, w = np.ones((1, 2, 64)), np.ones((2, 2, 33))
    p = fftconv.plan(x.shape, w.shape, dtype=np.float64, algorithm="fft_tiles", padding="same")
    assert p.tile == (64,)
    assert_close(p.forward(x, w), oracle_forward(x, w, None, padding="same"), np.float64)


def test_workspace_budget_takes_fewer_slabs_per_pass():
    shape_x, shape_w = (2, 4, 64, 64), (4, 4, 3, 3)
    whole = fftconv.plan(shape_x, shape_w, dtype=np.float32, algorithm="fft_tiles", tile=(6, 6))
    limit = whole.workspace_bytes // 3
    small = fftconv.plan(shape_x, shape_w, dtype=np.float32, algorithm="fft_tiles", tile=(6, 6),
                         max_workspace_bytes=limit)
    assert small._engine.slabs < small._engine.grid[0] == whole._engine.slabs
    assert small._engine.workspace_bytes <= limit
    x = np.random.default_rng(2).standard_normal(shape_x).astype(np.float32)
    w = np.random.default_rng(3).standard_normal(shape_w).astype(np.float32)
    assert_close(small.forward(x, w), oracle_forward(x, w, None), np.float32)


def test_a_partition_of_no_tile_count_prices_the_one_pass_the_plan_runs():
    """``Tiling(tile, 0)`` (the bench's and calibrate's partition of a plan's tile) is
    priced as the plan runs it, all slabs in one pass, not one slab per pass."""
    from fftconv.protocol import Tiling
    plan = fftconv.plan((2, 8, 8192), (8, 8, 17), dtype=np.float32, algorithm="fft_tiles")
    tile, geom = tuple(plan.tile), plan.geometry
    entry = registry.REGISTRY["fft_tiles"]
    assert plan._engine.slabs == fft_tiles.grid(geom, tile)[0] > 1
    priced = entry.work(geom, np.float32, Tiling(tile, 0))
    assert priced == fft_tiles.work(geom, np.float32, tile, plan._engine.slabs)
    assert priced["call"] < entry.work(geom, np.float32, Tiling(tile, fft_tiles.slab(geom, tile)))["call"]


def test_errors_name_the_algorithm_and_the_rule():
    with pytest.raises(ValueError, match=r"fftconv\.plan: tile is for algorithm='overlap_add' "
                                         r"or 'fft_tiles', got algorithm='fft'"):
        fftconv.plan((1, 1, 64), (1, 1, 3), dtype=np.float64, algorithm="fft", tile=(8,))
    with pytest.raises(ValueError, match=r"fftconv\.plan: tile must be >= 1 on every axis"):
        fftconv.plan((1, 1, 64), (1, 1, 3), dtype=np.float64, algorithm="fft_tiles", tile=(0,))
    with pytest.raises(ValueError, match=r"fftconv\.plan: max_workspace_bytes=64 is too small: "
                                         r"fft_tiles with tile=\(8,\)"):
        fftconv.plan((1, 1, 64), (1, 1, 3), dtype=np.float64, algorithm="fft_tiles", tile=(8,),
                     max_workspace_bytes=64)
