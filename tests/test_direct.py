"""The direct path's internal variants: every split of the kernel taps into
stacked and looped ones, and batch chunks of every size, give the oracle's
results (the sweep tests run the default split and one chunk only)."""
import numpy as np
import pytest

import fftconv
from fftconv.algorithms import direct
from fftconv.checks import check_layer
from conftest import assert_close, random_array
from oracle import oracle_backward, oracle_forward

#: STACK_DEPTH values that stack only the last axis (0) and every axis (10**6).
DEPTHS = (0, 10 ** 6)


def random_layer(rng, nd):
    groups, cg, og = int(rng.choice([1, 2])), int(rng.integers(1, 4)), int(rng.integers(1, 4))
    k = tuple(int(v) for v in rng.integers(1, 5, nd))
    kw = dict(padding=["valid", "same", "full", ((2, 1),) * nd][int(rng.integers(0, 4))],
              dilation=tuple(int(v) for v in rng.integers(1, 3, nd)),
              groups=groups, flip_kernel=bool(rng.integers(0, 2)))
    size = tuple(int(v) for v in rng.integers(6, 11, nd))
    return (5, groups * cg) + size, (groups * og, cg) + k, kw


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("chunk", [1, 2, 5])  # of a batch of 5: 2 leaves a short last chunk
@pytest.mark.parametrize("dtype", ["float64", "complex128", "float32"])
@pytest.mark.parametrize("seed", range(6))
def test_every_split_and_chunk_matches_the_oracle(monkeypatch, seed, dtype, chunk, depth):
    monkeypatch.setattr(direct, "STACK_DEPTH", depth)
    monkeypatch.setattr(direct, "_chunk", lambda n, per_sample_bytes: min(n, chunk))
    rng = np.random.default_rng(seed)
    x_shape, w_shape, kw = random_layer(rng, nd=1 + seed % 3)
    try:
        check_layer("t", x_shape, w_shape, stride=1, real=True, **kw)
    except ValueError:
        pytest.skip("kernel larger than padded input")
    x, w = random_array(rng, x_shape, dtype), random_array(rng, w_shape, dtype)
    p = fftconv.plan(x_shape, w_shape, dtype=dtype, algorithm="direct", **kw)
    y = p.forward(x, w)
    dy = random_array(rng, y.shape, dtype)
    dx, dw, _ = p.backward(dy)
    assert_close(y, oracle_forward(x, w, **kw), dtype, "y")
    for got, want, name in zip((dx, dw), oracle_backward(dy, x, w, **kw), ("dx", "dw")):
        assert_close(got, want, dtype, name)


def test_the_split_stacks_the_last_axis_and_more_while_shallow():
    geom = check_layer("t", (2, 8, 20, 20, 20), (8, 8, 3, 3, 3), padding="same", stride=1,
                       dilation=1, groups=1, flip_kernel=False, real=True).conv
    taps = direct._taps(geom, channels=8)  # 8 * 9 <= 128 < 8 * 27: two axes stacked
    assert taps.stacked_kernel == (3, 3) and taps.looped_kernel == (3,)
    assert len(taps.stacked) == 9 and taps.looped == (0, 22 * 22, 2 * 22 * 22)
    wide = direct._taps(geom, channels=1000)  # never fewer than the last axis
    assert wide.stacked_kernel == (3,) and wide.stacked == (0, 1, 2)


def test_a_plan_keeps_the_padded_input_not_the_callers_array():
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 3, 9, 9)), rng.standard_normal((4, 3, 3, 3))
    p = fftconv.plan(x.shape, w.shape, dtype=x.dtype, padding="same", algorithm="direct")
    p.forward(x, w)
    dy = rng.standard_normal(p.out_shape)
    expected = oracle_backward(dy, x, w, padding="same")
    x[...] = 0.0  # the caller reuses its buffer before the backward pass
    dx, dw, _ = p.backward(dy)
    assert_close(dx, expected[0], np.float64, "dx")
    assert_close(dw, expected[1], np.float64, "dw")
