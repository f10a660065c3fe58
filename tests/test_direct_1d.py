"""The direct path on one axis at stride 1 (``fftconv.algorithms.direct_1d``): one
im2col GEMM per product, in blocks of samples and output segments.

Every layer is checked against the float64 oracle (``tests/oracle.py``) to
CONVENTIONS §4's bounds: odd lengths, kernels of 1 to 7 taps, groups (depthwise
too), dilation, padding forms, ``flip_kernel``, real and complex dtypes, blocks of
one sample and short segments with a short last one, the engine's batch chunks
under a budget, the gradients alone (a transposed layer), and the workspace bound
against tracemalloc's peak.
"""

import numpy as np
import pytest

import fftconv
from conftest import assert_close, random_array, traced_step
from fftconv.algorithms import direct, direct_1d
from fftconv.checks import check_layer
from oracle import (oracle_backward, oracle_forward, oracle_transposed_backward,
                    oracle_transposed_forward)

PADDINGS = ("valid", "same", "full", "causal", [(3, 1)])


def _geometry(x_shape, w_shape, stride=1, **kw):
    return check_layer("t", x_shape, w_shape, stride=stride, dilation=kw.pop("dilation", 1),
                       groups=kw.pop("groups", 1), flip_kernel=False, real=True,
                       padding=kw.pop("padding", "valid")).conv


def random_layer(rng):
    """A small 1-D layer: ``(x_shape, w_shape, keywords)``."""
    groups = int(rng.choice([1, 2, 3]))
    cg, og = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    k, d = int(rng.integers(1, 8)), int(rng.integers(1, 4))
    n_in = int(rng.integers(d * (k - 1) + 1, 40)) | 1  # odd lengths
    kw = dict(padding=PADDINGS[int(rng.integers(0, len(PADDINGS)))], dilation=d, groups=groups,
              flip_kernel=bool(rng.integers(0, 2)))
    return (int(rng.integers(1, 6)), groups * cg, n_in), (groups * og, cg, k), kw


def _for_oracle(w_shape, kw):
    """The oracle's keywords: ``"causal"`` as its pair ``(ke - 1, 0)``, no budget."""
    kw = {key: value for key, value in kw.items() if key != "max_workspace_bytes"}
    if kw.get("padding") == "causal":
        kw["padding"] = [(kw.get("dilation", 1) * (w_shape[2] - 1), 0)]
    return kw


def _check_step(x, w, dtype, **kw):
    p = fftconv.plan(x.shape, w.shape, dtype=dtype, algorithm="direct", **kw)
    y = p.forward(x, w)
    rng = np.random.default_rng(1)
    dy = random_array(rng, y.shape, dtype)
    dx, dw, _ = p.backward(dy)
    kw = _for_oracle(w.shape, kw)
    assert_close(y, oracle_forward(x, w, **kw), dtype, "y")
    for got, want, name in zip((dx, dw), oracle_backward(dy, x, w, **kw), ("dx", "dw")):
        assert_close(got, want, dtype, name)
    return p


def test_the_path_takes_one_axis_at_stride_1_only():
    assert direct_1d.applies(_geometry((2, 3, 20), (4, 3, 5), dilation=2))
    assert not direct_1d.applies(_geometry((2, 3, 20), (4, 3, 5), stride=2))
    assert not direct_1d.applies(_geometry((2, 3, 20, 20), (4, 3, 5, 5)))


@pytest.mark.parametrize("dtype", ["float32", "float64", "complex128"])
@pytest.mark.parametrize("seed", range(8))
def test_random_layers_match_the_oracle(seed, dtype):
    rng = np.random.default_rng(seed)
    x_shape, w_shape, kw = random_layer(rng)
    _check_step(random_array(rng, x_shape, dtype), random_array(rng, w_shape, dtype), dtype, **kw)


@pytest.mark.parametrize("w_shape", [(2, 8, 2), (8, 2, 3)])  # O*k < C, O*k >= C
def test_both_orders_of_the_weight_gradient_gemm_match_the_oracle(w_shape):
    rng = np.random.default_rng(2)
    x, w = random_array(rng, (3, 8, 23), "float64"), random_array(rng, w_shape, "float64")
    _check_step(x, w, "float64", padding=1, groups=8 // w_shape[1])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("samples_and_segment", [(1, 5), (2, 7), (3, 10 ** 6)])
def test_blocks_of_samples_and_segments_match_the_oracle(monkeypatch, samples_and_segment, dtype):
    """Blocks of 1-3 samples of a batch of 5 (a short last block), and segments
    of 5 or 7 positions (a short last segment, edges of the embedded ``dy`` in
    the middle of the input)."""
    samples, segment = samples_and_segment
    monkeypatch.setattr(direct_1d, "blocking", lambda n, length, *a: direct_1d.Blocking(
        min(samples, n), min(segment, length)))
    rng = np.random.default_rng(samples)
    for kw in (dict(padding="same", dilation=2, groups=2), dict(padding=[(4, 1)]),
               dict(padding="full", flip_kernel=True)):
        w_shape = (6, 4 // kw.get("groups", 1), 4)
        x, w = random_array(rng, (5, 4, 31), dtype), random_array(rng, w_shape, dtype)
        _check_step(x, w, dtype, **kw)


def test_a_long_input_runs_in_segments_within_the_block_bytes(monkeypatch):
    """The real blocking, scaled down: one sample's column matrix over the block
    size is cut into segments, none shorter than ``MIN_SEGMENT`` but the last."""
    monkeypatch.setattr(direct_1d, "BLOCK_BYTES", 16 << 10)
    monkeypatch.setattr(direct_1d, "MIN_SEGMENT", 16)
    cut = direct_1d.blocking(3, 1000, 1, 8, 8, 5, 4, 8)
    assert cut.samples == 1 and 16 <= cut.segment < 1000
    assert direct_1d.block_bytes(cut, 1, 8, 8, 5, 4, 8) <= (16 << 10) + 2 * 8 * 8 * 5 * 8
    rng = np.random.default_rng(3)
    x, w = random_array(rng, (3, 8, 1001), "float64"), random_array(rng, (8, 8, 5), "float64")
    _check_step(x, w, "float64", padding="same")


def test_blocking_fills_the_block_with_whole_samples_when_they_fit():
    cut = direct_1d.blocking(32, 256, 1, 64, 64, 3, 2, 4)
    per_sample = 64 * (4 * 256 + 2) + 64 * 64 * 3
    assert cut.segment == 256 and 1 < cut.samples <= direct_1d.BLOCK_BYTES // (4 * per_sample)
    assert direct_1d.blocking(2, 256, 1, 4, 4, 3, 2, 4) == direct_1d.Blocking(2, 256)


@pytest.mark.parametrize("dtype", ["float32", "complex128"])
def test_a_transposed_layer_uses_the_gradients_alone(dtype):
    """A transposed layer's forward pass is the input gradient alone, its weight
    gradient the weight gradient alone (``input_grad``, ``weight_grad``)."""
    rng = np.random.default_rng(4)
    kw = dict(padding=2, dilation=2, groups=2)
    x, w = random_array(rng, (3, 4, 13), dtype), random_array(rng, (4, 3, 3), dtype)
    p = fftconv.plan(x.shape, w.shape, dtype=dtype, algorithm="direct", transposed=True, **kw)
    y = p.forward(x, w)
    dy = random_array(rng, y.shape, dtype)
    dx, dw, _ = p.backward(dy)
    assert_close(y, oracle_transposed_forward(x, w, **kw), dtype, "y")
    for got, want, name in zip((dx, dw), oracle_transposed_backward(dy, x, w, **kw),
                               ("dx", "dw")):
        assert_close(got, want, dtype, name)


def test_batch_chunks_under_a_budget_match_the_oracle():
    rng = np.random.default_rng(5)
    x, w = random_array(rng, (5, 6, 41), "float32"), random_array(rng, (4, 3, 5), "float32")
    kw = dict(padding="same", groups=2)
    whole = fftconv.plan(x.shape, w.shape, dtype="float32", algorithm="direct", **kw)
    budget = direct.workspace_bytes(whole._engine.geom, np.float32, 2)
    p = _check_step(x, w, "float32", max_workspace_bytes=budget, **kw)
    assert p.chunk == 2


def test_the_workspace_bound_holds_a_step_and_stays_bounded_for_long_inputs(monkeypatch):
    """tracemalloc's peak of a segmented step stays within ``workspace_bytes``, and
    the bound does not grow with the length once a sample fills a block."""
    monkeypatch.setattr(direct_1d, "BLOCK_BYTES", 64 << 10)
    monkeypatch.setattr(direct_1d, "MIN_SEGMENT", 16)
    rng = np.random.default_rng(6)
    x, w = random_array(rng, (2, 8, 3001), "float64"), random_array(rng, (8, 8, 7), "float64")
    p, peak = traced_step(x, w, algorithm="direct", padding="same")
    assert peak <= p._engine.workspace_bytes
    geom = p._engine.geom
    blocks = direct_1d.pass_bytes(geom, 2, 8)
    longer = check_layer("t", (2, 8, 30001), w.shape, stride=1, dilation=1, groups=1,
                         flip_kernel=False, real=True, padding="same").conv
    assert direct_1d.pass_bytes(longer, 2, 8) <= blocks + 2 * 8 * 8 * 7 * 8


def test_the_cost_units_count_the_blocks():
    """More samples per block, fewer calls; the elements grow with the work."""
    small = _geometry((8, 32, 1024), (32, 32, 5))
    elements, calls = direct_1d.work(small, 4)
    bigger, _ = direct_1d.work(_geometry((16, 32, 1024), (32, 32, 5)), 4)
    assert bigger == 2 * elements and calls > 0
    units = direct.work(small, np.float32)
    assert units["direct_element"] > 0 and units["gemm_flop"] > 0


@pytest.mark.parametrize("mode", ["channels_last", "reflect"])
def test_results_the_gemms_cannot_write_in_place_are_copied_out(mode):
    """A channels-last ``y``/``dx`` (not C-contiguous) and a padded ``dx`` folded
    back by the runner take a new array and a copy; the results are the oracle's."""
    rng = np.random.default_rng(7)
    x, w = random_array(rng, (3, 4, 25), "float64"), random_array(rng, (6, 4, 3), "float64")
    kw = dict(padding=2, padding_mode="reflect") if mode == "reflect" else dict(padding="same")
    layout = mode == "channels_last"
    p = fftconv.plan((3, 25, 4) if layout else x.shape, (3, 4, 6) if layout else w.shape,
                     dtype="float64", algorithm="direct",
                     layout="channels_last" if layout else "channels_first", **kw)
    xs, ws = (x.transpose(0, 2, 1), w.transpose(2, 1, 0)) if layout else (x, w)
    y = p.forward(xs, ws)
    dy = random_array(rng, y.shape, "float64")
    dx, dw, _ = p.backward(dy)
    if layout:
        y, dy, dx, dw = (y.transpose(0, 2, 1), dy.transpose(0, 2, 1), dx.transpose(0, 2, 1),
                         dw.transpose(2, 1, 0))
    assert_close(y, oracle_forward(x, w, **kw), "float64", "y")
    for got, want, name in zip((dx, dw), oracle_backward(dy, x, w, **kw), ("dx", "dw")):
        assert_close(got, want, "float64", name)


def test_torch_tensors_in_blocks_and_segments_match_numpy(monkeypatch):
    """The path on the ``Arrays`` seam: torch CPU tensors, with GEMMs into
    segment views (not contiguous), equal the numpy results and the oracle."""
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(direct_1d, "blocking", lambda n, length, *a: direct_1d.Blocking(
        min(2, n), min(6, length)))
    rng = np.random.default_rng(8)
    kw = dict(padding="same", dilation=2, groups=2)
    x, w = random_array(rng, (3, 4, 19), "float64"), random_array(rng, (4, 2, 3), "float64")
    p = fftconv.plan(x.shape, w.shape, dtype="float64", algorithm="direct", **kw)
    y = p.forward(x, w)
    dy = random_array(rng, y.shape, "float64")
    dx, dw, _ = p.backward(dy)
    pt = fftconv.plan(x.shape, w.shape, dtype="float64", algorithm="direct",
                      like=torch.from_numpy(x), **kw)
    yt = pt.forward(torch.from_numpy(x), torch.from_numpy(w))
    dxt, dwt, _ = pt.backward(torch.from_numpy(dy))
    for got, want, name in zip((yt, dxt, dwt), (y, dx, dw), ("y", "dx", "dw")):
        assert isinstance(got, torch.Tensor)
        assert_close(got.numpy(), want, "float64", name)
    assert_close(y, oracle_forward(x, w, **kw), "float64", "y")
