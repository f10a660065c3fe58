"""Transposed convolution, padding modes and channels-last against the oracle.

A seeded sweep crosses each new operation with 1-5 spatial axes, both
layouts, the four dtypes and every algorithm, through ``forward``,
``backward`` and ``vjp``; then the adjoint identity per operation, and the
facts the engine promises (circular padding as one FFT at the input size,
three-and-three transforms per transposed step, no layout copies).
"""
import functools
import tracemalloc

import numpy as np
import pytest

import fftconv
import oracle
from fftconv import registry
from conftest import ALGORITHMS, assert_close, random_array, random_padding

OPERATIONS = ("transposed", "circular", "reflect", "replicate")
DTYPES = ("float64", "float32", "complex128", "complex64")


def _axis(rng, nd, choices):
    return int(rng.choice(choices)) if rng.random() < 0.4 else tuple(
        int(v) for v in rng.choice(choices, size=nd))


def _per_axis(v, nd):
    return (v,) * nd if isinstance(v, int) else tuple(v)


def _make_config(rng, idx, nd, operation, layout, small_kernels=False):
    """One random layer of ``operation`` that PyTorch's rules allow; with
    ``small_kernels``, inside Winograd's scope: stride 1, dilation 1 and 3 or 5 taps
    per axis (5 in 1-D and 2-D only)."""
    small = nd >= 4
    while True:
        groups = 1 if small or rng.random() < 0.5 else int(rng.integers(2, 4))
        c_in = groups * (1 if small else int(rng.integers(1, 3)))
        c_out = groups * (1 if small else int(rng.integers(1, 3)))
        lo_n, hi_n = {1: (3, 12), 2: (3, 9), 3: (3, 6)}.get(nd, (2, 4))
        spatial = tuple(int(v) for v in rng.integers(lo_n, hi_n + 1, size=nd))
        kernel = tuple(int(v) for v in rng.integers(1, (4 if nd <= 2 else 3) + 1, size=nd))
        stride = _axis(rng, nd, [1, 1, 2, 3] if nd <= 3 else [1, 2])
        dilation = _axis(rng, nd, [1, 1, 2])
        if small_kernels:
            kernel = tuple(int(v) for v in rng.choice([3, 5] if nd <= 2 else [3], size=nd))
            stride, dilation = 1, 1
        flip = bool(rng.random() < 0.3)
        kw = dict(stride=stride, dilation=dilation, groups=groups, flip_kernel=flip)
        s, d = _per_axis(stride, nd), _per_axis(dilation, nd)
        if operation == "transposed":
            kw["padding"] = random_padding(rng, nd)
            ops = (0,) * nd if kw["padding"] == "same" else tuple(
                int(rng.integers(0, max(si, di))) for si, di in zip(s, d))
            kw.update(transposed=True, output_padding=ops)
            try:
                out = oracle.transposed_output_spatial(spatial, kernel, kw["padding"], stride,
                                                       dilation, ops, flip)
            except ValueError:
                continue  # empty output: draw again
            w_shape = (c_in, c_out // groups) + kernel
        else:
            kw["padding"] = random_padding(rng, nd, ["same", "int", "ints", "pairs"])
            kw["padding_mode"] = operation
            try:
                pads = oracle.resolve_padding(kw["padding"], spatial, kernel, stride, dilation,
                                              flip)
                out = oracle.output_spatial(spatial, kernel, kw["padding"], stride, dilation,
                                            flip)
            except ValueError:
                continue
            limit = (lambda p, n: p < n) if operation == "reflect" else (lambda p, n: p <= n)
            if not all(limit(p, n) for pair, n in zip(pads, spatial) for p in pair):
                continue
            w_shape = (c_out, c_in // groups) + kernel
        if min(out) < 1:
            continue
        return dict(idx=idx, nd=nd, op=operation, layout=layout, kw=kw, bias=rng.random() < 0.6,
                    x_shape=(int(rng.integers(1, 3)), c_in) + spatial, w_shape=w_shape,
                    c_out=c_out, out=tuple(out))


def _build(seed=2026):
    rng = np.random.default_rng(seed)
    configs = []
    for operation in OPERATIONS:
        for nd in (1, 2, 3, 4, 5):
            for layout in ("channels_first", "channels_last"):
                configs.append(_make_config(rng, len(configs), nd, operation, layout))
    return configs


def _build_small_kernels(first: int, seed=2027):
    """Layers with 3 and 5 taps at stride 1 (the small-kernel band, where the
    ``winograd`` algorithm runs), numbered from ``first``."""
    rng = np.random.default_rng(seed)
    configs = []
    for operation in OPERATIONS:
        for nd in (1, 2, 3):
            for layout in ("channels_first", "channels_last"):
                configs.append(_make_config(rng, first + len(configs), nd, operation, layout,
                                            small_kernels=True))
    return configs


CONFIGS = _build()
CONFIGS += _build_small_kernels(len(CONFIGS))


def _reference(c, x, w, b, dy):
    """The oracle's y and gradients, channels-first."""
    kw = dict(c["kw"])
    if kw.pop("transposed", False):
        return (oracle.oracle_transposed_forward(x, w, b, **kw),
                oracle.oracle_transposed_backward(dy, x, w, **kw))
    return oracle.oracle_forward(x, w, b, **kw), oracle.oracle_backward(dy, x, w, **kw)


@functools.lru_cache(maxsize=None)
def _case(idx, dtype):
    c = CONFIGS[idx]
    rng = np.random.default_rng(idx)
    x = random_array(rng, c["x_shape"], dtype)
    w = random_array(rng, c["w_shape"], dtype)
    b = random_array(rng, (c["c_out"],), dtype) if c["bias"] else None
    dy = random_array(rng, (c["x_shape"][0], c["c_out"]) + c["out"], dtype)
    y_ref, g_ref = _reference(c, x, w, b, dy)
    if c["layout"] == "channels_last":
        x, dy, y_ref = (oracle.to_channels_last(a) for a in (x, dy, y_ref))
        w = oracle.weights_to_channels_last(w)
        g_ref = oracle.Grads(oracle.to_channels_last(g_ref.dx),
                             oracle.weights_to_channels_last(g_ref.dw), g_ref.db)
    return x, w, b, dy, y_ref, g_ref


def _id(c):
    return f"c{c['idx']}-{c['op']}-{c['nd']}d-{c['layout']}"


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c", [pytest.param(c, id=_id(c)) for c in CONFIGS])
def test_layer_sweep(c, dtype, algorithm):
    x, w, b, dy, y_ref, g_ref = _case(c["idx"], dtype)
    kw = dict(c["kw"], layout=c["layout"], algorithm=algorithm)
    y = fftconv.forward(x, w, b, **kw)
    assert y.dtype == np.dtype(dtype) and y.flags.c_contiguous
    assert_close(y, y_ref, dtype, "y")
    y2, pullback = fftconv.vjp(x, w, b, **kw)
    assert_close(y2, y_ref, dtype, "y (vjp)")
    for grads in (fftconv.backward(dy, x, w, **kw), pullback(dy)):
        for got, want, name in zip(grads, g_ref, ("dx", "dw", "db")):
            assert got.dtype == np.dtype(dtype), name
            assert_close(got, want, dtype, name)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("c", [pytest.param(c, id=_id(c)) for c in CONFIGS[::3]])
def test_layer_sweep_plan(c, algorithm):
    """A plan over the same layer: two forwards, the backward of the last one."""
    x, w, b, dy, y_ref, g_ref = _case(c["idx"], "float64")
    p = fftconv.plan(x.shape, w.shape, dtype=np.float64, algorithm=algorithm,
                     layout=c["layout"], **c["kw"])
    assert p.out_shape == y_ref.shape
    p.forward(np.ones_like(x), w, b)
    y = p.forward(x, w, b)
    assert_close(y, y_ref, np.float64, "y")
    for got, want, name in zip(p.backward(dy), g_ref, ("dx", "dw", "db")):
        assert_close(got, want, np.float64, name)


def _in_winograd_scope(c) -> bool:
    """Whether ``winograd`` prices the layer finitely (runs it); elsewhere it is a clear
    error by name (``tests/test_winograd.py``) and ``auto`` never weighs it."""
    kw = dict(c["kw"], layout=c["layout"])
    x_shape = c["x_shape"]
    if c["layout"] == "channels_last":
        x_shape = (x_shape[0],) + tuple(x_shape[2:]) + (x_shape[1],)
    w_shape = c["w_shape"]
    if c["layout"] == "channels_last":
        w_shape = tuple(w_shape[2:]) + (w_shape[1], w_shape[0])
    geom = fftconv.plan(x_shape, w_shape, dtype=np.float64, algorithm="direct", **kw).geometry
    return "winograd" in registry.candidates(geom, np.float64)


WINOGRAD_CONFIGS = [c for c in CONFIGS if _in_winograd_scope(c)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c", [pytest.param(c, id=_id(c)) for c in WINOGRAD_CONFIGS])
def test_layer_sweep_winograd(c, dtype):
    """The sweep for ``winograd``, on the layers inside its scope."""
    test_layer_sweep(c, dtype, "winograd")


@pytest.mark.parametrize("c", [pytest.param(c, id=_id(c)) for c in WINOGRAD_CONFIGS])
def test_layer_sweep_plan_winograd(c):
    test_layer_sweep_plan(c, "winograd")


def _vdot(a, b):
    return np.vdot(a.ravel(), b.ravel())


@pytest.mark.parametrize("algorithm", ["fft", "direct", "overlap_add"])
@pytest.mark.parametrize("dtype", ["float64", "complex128"])
@pytest.mark.parametrize("c", [pytest.param(c, id=_id(c)) for c in CONFIGS if c["nd"] <= 3])
def test_adjoint_identity(c, dtype, algorithm):
    _adjoint_identity(c, dtype, algorithm)


@pytest.mark.parametrize("dtype", ["float64", "complex128"])
@pytest.mark.parametrize("c", [pytest.param(c, id=_id(c)) for c in WINOGRAD_CONFIGS])
def test_adjoint_identity_winograd(c, dtype):
    _adjoint_identity(c, dtype, "winograd")


def _adjoint_identity(c, dtype, algorithm):
    """``<forward(x, w), g> == <x, dx(g)> == <w, dw(x, g)>`` for each new operation."""
    x, w, _, dy, _, _ = _case(c["idx"], dtype)
    kw = dict(c["kw"], layout=c["layout"], algorithm=algorithm)
    y, pullback = fftconv.vjp(x, w, **kw)
    dx, dw, _ = pullback(dy)
    lhs = _vdot(y, dy)
    scale = np.linalg.norm(y) * np.linalg.norm(dy)
    assert abs(lhs - _vdot(x, dx)) <= 1e-12 * scale
    assert abs(lhs - _vdot(w, dw)) <= 1e-12 * scale


@pytest.mark.parametrize("n, k, padding", [(13, 3, "same"), (16, 5, 2), (9, 4, "same"),
                                           (7, 7, "same")])
def test_circular_same_is_one_fft_at_the_input_size(n, k, padding):
    """Stride 1, output as long as the input: a circular correlation of length n,
    no padding copy, no larger transform (13 and 7 are not rounded up)."""
    rng = np.random.default_rng(n)
    x, w = rng.standard_normal((2, 3, n, n + 1)), rng.standard_normal((4, 3, k, k))
    kw = dict(padding=padding, padding_mode="circular")
    p = fftconv.plan(x.shape, w.shape, dtype=np.float64, algorithm="fft", **kw)
    assert p.fft_shape == (n, n + 1)
    assert p.geometry.wrap and not p.layer.pads_input
    y = p.forward(x, w)
    assert_close(y, oracle.oracle_forward(x, w, **kw), np.float64, "y")
    dy = rng.standard_normal(y.shape)
    for got, want in zip(p.backward(dy), oracle.oracle_backward(dy, x, w, **kw)):
        assert_close(got, want, np.float64)


def test_circular_with_stride_pads_explicitly():
    p = fftconv.plan((1, 1, 12), (1, 1, 3), dtype=np.float64, algorithm="fft", padding=1,
                     stride=2, padding_mode="circular")
    assert not p.geometry.wrap and p.layer.pads_input and p.fft_shape[0] >= 14
    q = fftconv.plan((1, 1, 12), (1, 1, 3), dtype=np.float64, algorithm="direct", padding=1,
                     padding_mode="circular")
    assert q.layer.pads_input   # the direct engine pads: only FFT engines wrap


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_a_transposed_step_costs_three_and_three_transforms(nd):
    x_shape, w_shape = (2, 4) + (6,) * nd, (4, 3) + (3,) * nd
    p = fftconv.plan(x_shape, w_shape, dtype=np.float32, algorithm="fft", transposed=True,
                     stride=2, padding=1, output_padding=1)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    for step in range(3):
        y = p.forward(x, w)
        p.backward(np.ones_like(y))
        w += 0.1
    assert p.transform_counts == {"forward": 9, "inverse": 9}


def _step_peak(layout, algorithm):
    """Peak traced bytes of a second training step (buffers already built)."""
    shape_cf, w_cf = (4, 8, 64, 64), (8, 8, 5, 5)
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal(shape_cf), rng.standard_normal(w_cf)
    if layout == "channels_last":
        x, w = oracle.to_channels_last(x), oracle.weights_to_channels_last(w)
    p = fftconv.plan(x.shape, w.shape, dtype=np.float64, algorithm=algorithm, padding="same",
                     layout=layout)
    y = p.forward(x, w)
    p.backward(y)
    tracemalloc.start()
    y = p.forward(x, w)
    p.backward(y)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak, x.nbytes


def test_channels_last_makes_no_layout_copies_on_the_fft_path():
    """The FFT engine reads and writes channels-last through views: a step's
    peak memory is the channels-first one, not one array more."""
    first, x_bytes = _step_peak("channels_first", "fft")
    last, _ = _step_peak("channels_last", "fft")
    assert last < first + x_bytes // 4


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c", [pytest.param(c, id=_id(c)) for c in CONFIGS[::2]])
def test_layer_sweep_fft_tiles(c, dtype):
    """The sweep for ``fft_tiles`` on every other layer, with its own tile choice (the
    whole output where the kernel is longer than every window)."""
    test_layer_sweep(c, dtype, "fft_tiles")
