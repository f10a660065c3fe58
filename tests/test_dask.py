"""fftconv.dask: the layer on Dask arrays equals the numpy functions and the oracle.

* the block geometry alone: every output in exactly one block, windows that
  reproduce ``np.pad`` of every mode, folds that are their adjoints;
* a seeded sweep (1-3 spatial axes, random chunkings with tiny and uneven
  chunks, every padding form and mode, stride, dilation, groups, flip,
  float32/float64, both layouts) of ``y``, ``dx``, ``dw`` and ``db`` against
  ``fftconv.forward``/``backward`` and, in float64, against the oracle;
* plans built once per block shape; ``vjp``; a two-process ``LocalCluster``;
* bad input, each message matched.
"""
import numpy as np
import pytest

da = pytest.importorskip("dask.array")
import dask  # noqa: E402

import fftconv  # noqa: E402
import fftconv.dask as fd  # noqa: E402
import oracle  # noqa: E402
from conftest import assert_close, random_array, random_padding  # noqa: E402
from fftconv.dask.blocks import AxisBlocks, bounds_of, chunks_of  # noqa: E402
from fftconv.geometry import PADDING_FILLS  # noqa: E402

MODES = tuple(PADDING_FILLS)


def _random_chunks(rng, n):
    """Chunk sizes for an axis of ``n``: one chunk, regular, tiny (1-2) or uneven."""
    kind = rng.integers(4)
    if kind == 0:
        return (n,)
    if kind == 1:
        size = int(rng.integers(1, n + 1))
        return (size,) * (n // size) + ((n % size,) if n % size else ())
    sizes, left = [], n
    while left:
        size = int(min(left, rng.integers(1, 3) if kind == 2 else rng.integers(1, n + 1)))
        sizes.append(size)
        left -= size
    return tuple(sizes)


# -- the block geometry alone ---------------------------------------------------------------
def _axis(rng, mode):
    n = int(rng.integers(2, 14))
    lo, hi = (int(v) for v in rng.integers(0, n if mode == "reflect" else n + 1, size=2))
    s, ke = int(rng.integers(1, 4)), int(rng.integers(1, 6))
    out = (n + lo + hi - ke) // s + 1
    if out < 1:
        return None
    return AxisBlocks(n, lo, hi, s, ke, out, mode, bounds_of(_random_chunks(rng, n)))


def _gathered(runs, size, data_blocks):
    window = np.zeros(size)
    for r in runs:
        window[r.dst_slice] = data_blocks[r.block][r.src_slice][::r.step]
    return window


@pytest.mark.parametrize("mode", MODES)
def test_blocks_cover_outputs_windows_pad_and_folds_are_adjoint(mode):
    rng = np.random.default_rng(12)
    checked = 0
    while checked < 150:
        ax = _axis(rng, mode)
        if ax is None:
            continue
        checked += 1
        b = ax.bounds
        data = rng.standard_normal(ax.n)
        blocks = [data[b[i]:b[i + 1]] for i in range(ax.blocks)]
        padded = np.pad(data, (ax.lo, ax.hi), mode=PADDING_FILLS[mode])
        assert sum(ax.out_chunks) == ax.out and min(ax.out_chunks) >= 0
        for j in range(ax.blocks):
            start, stop = ax.window(j)
            assert np.array_equal(_gathered(ax.window_runs(j), stop - start, blocks),
                                  padded[start:stop])
            first, last = ax.out_bounds[j], ax.out_bounds[j + 1]
            if last > first:  # the window is what those outputs read, no more
                assert start == first * ax.stride
                assert stop == (last - 1) * ax.stride + ax.kernel
        # the fold is the padding operator's adjoint: <P x, g> == <x, fold(g)>
        g = rng.standard_normal(len(padded))
        folded = np.zeros(ax.n)
        for i in range(ax.blocks):
            for j, r in ax.dx_sources(i):
                gj = g[ax.padded_bounds[j]:ax.padded_bounds[j + 1]]
                folded[b[i]:b[i + 1]][r.src_slice] += gj[r.dst_slice][::r.step]
        assert np.isclose(padded @ g, data @ folded)


def test_same_layer_keeps_chunks_and_stride_lines_up():
    ax = AxisBlocks(20, 1, 1, 1, 3, 20, "zeros", bounds_of((7, 7, 6)))
    assert ax.out_chunks == (7, 7, 6)
    strided = AxisBlocks(20, 1, 1, 3, 3, 7, "zeros", bounds_of((7, 7, 6)))
    assert strided.out_bounds == (0, 3, 5, 7)           # outputs i*3 in [0, 7), [7, 14), [14, 20)
    assert chunks_of(bounds_of((1, 0, 2))) == (1, 0, 2)


# -- the seeded sweep -----------------------------------------------------------------------
def _case(seed):
    """A random layer that the numpy functions accept, its arrays and a chunking."""
    rng = np.random.default_rng(seed)
    while True:
        nd = int(rng.integers(1, 4))
        groups = int(rng.choice([1, 1, 2]))
        c_in, c_out = groups * int(rng.integers(1, 3)), groups * int(rng.integers(1, 3))
        spatial = tuple(int(v) for v in rng.integers(4, {1: 30, 2: 12, 3: 8}[nd], size=nd))
        kernel = tuple(int(v) for v in rng.integers(1, 5 if nd < 3 else 4, size=nd))
        layer = dict(padding=random_padding(rng, nd, high=4), groups=groups,
                     stride=tuple(int(v) for v in rng.choice([1, 1, 2, 3], size=nd)),
                     dilation=tuple(int(v) for v in rng.choice([1, 1, 2], size=nd)),
                     flip_kernel=bool(rng.random() < 0.3),
                     padding_mode=str(rng.choice(MODES)))
        dtype = np.dtype(rng.choice(["float64", "float32"]))
        batch = int(rng.integers(1, 4))
        x = random_array(rng, (batch, c_in) + spatial, dtype)
        w = random_array(rng, (c_out, c_in // groups) + kernel, dtype)
        b = random_array(rng, (c_out,), dtype) if rng.random() < 0.5 else None
        try:
            y = fftconv.forward(x, w, b, **layer)
        except ValueError:  # e.g. reflect padding as large as the input: draw again
            continue
        chunks = (_random_chunks(rng, batch), (c_in,)) + tuple(_random_chunks(rng, n)
                                                               for n in spatial)
        layout = "channels_last" if rng.random() < 0.2 else "channels_first"
        dy = random_array(rng, y.shape, dtype)
        return layer, layout, x, w, b, dy, chunks


def _caller(a, layout, weights=False):
    if layout == "channels_first":
        return a
    return oracle.weights_to_channels_last(a) if weights else oracle.to_channels_last(a)


@pytest.mark.parametrize("seed", range(40))
def test_sweep_equals_numpy_functions_and_oracle(seed):
    layer, layout, x, w, b, dy, chunks = _case(seed)
    dtype = x.dtype
    y = fftconv.forward(x, w, b, **layer)
    ref = fftconv.backward(dy, x, w, **layer)
    if layout == "channels_last":
        chunks = (chunks[0],) + chunks[2:] + (chunks[1],)
    xd = da.from_array(_caller(x, layout), chunks=chunks)
    wl = _caller(w, layout, weights=True)
    yd = fd.forward(xd, wl, b, layout=layout, **layer)
    assert yd.dtype == dtype and yd.shape == _caller(y, layout).shape
    dyd = da.from_array(_caller(dy, layout), chunks=yd.chunks)
    dx, dw, db = fd.backward(dyd, xd, wl, layout=layout, **layer)
    assert dx.chunks == xd.chunks and dx.dtype == dtype and dw.dtype == dtype
    got = (yd.compute(), dx.compute(), dw, db)
    want = (_caller(y, layout), _caller(ref.dx, layout), _caller(ref.dw, layout, True), ref.db)
    for name, a, r in zip(("y", "dx", "dw", "db"), got, want):
        assert_close(a, r, dtype, f"seed {seed} {name} vs numpy {layer} chunks {chunks}")
    if dtype == np.float64:  # and against the independent oracle
        oy = oracle.oracle_forward(x, w, b, **layer)
        odx, odw, odb = oracle.oracle_backward(dy, x, w, **layer)
        for name, a, r in zip(("y", "dx", "dw", "db"), got,
                              (_caller(oy, layout), _caller(odx, layout),
                               _caller(odw, layout, True), odb)):
            assert_close(a, r, dtype, f"seed {seed} {name} vs oracle")


@pytest.mark.parametrize("algorithm", ["fft", "direct", "overlap_add"])
def test_every_algorithm_per_block_and_a_bounded_workspace(algorithm, rng):
    x = rng.standard_normal((3, 2, 17, 9))
    w = rng.standard_normal((3, 2, 4, 3))
    layer = dict(padding="same", stride=(2, 1), padding_mode="circular")
    xd = da.from_array(x, chunks=(2, 2, 5, 4))
    y = fd.forward(xd, w, algorithm=algorithm, max_workspace_bytes=40000, **layer)
    assert_close(y.compute(), fftconv.forward(x, w, **layer), x.dtype, algorithm)


def test_complex_input_gradient(rng):
    x = random_array(rng, (2, 2, 15), np.complex128)
    w = random_array(rng, (4, 1, 3), np.complex128)
    layer = dict(padding=[(2, 1)], stride=2, groups=2)
    dy = random_array(rng, fftconv.forward(x, w, **layer).shape, np.complex128)
    ref = fftconv.backward(dy, x, w, **layer)
    xd = da.from_array(x, chunks=(1, 2, 4))
    dyd = da.from_array(dy, chunks=fd.forward(xd, w, **layer).chunks)
    got = fd.backward(dyd, xd, w, **layer)
    for a, r in zip((got.dx.compute(), got.dw, got.db), ref):
        assert_close(a, r, np.complex128, "complex")


# -- plans, vjp, distributed -----------------------------------------------------------------
def test_plans_built_once_per_block_shape(rng, monkeypatch):
    built = []
    real_build = fftconv.registry.build

    def counting(algorithm, geom, *args, **kwargs):
        built.append(geom)
        return real_build(algorithm, geom, *args, **kwargs)
    monkeypatch.setattr(fftconv.registry, "build", counting)
    fftconv.clear_caches()
    x = da.from_array(rng.standard_normal((1, 2, 64, 40)), chunks=(1, 2, 8, 8))  # 40 blocks
    w = rng.standard_normal((2, 2, 5, 5))
    with dask.config.set(scheduler="synchronous"):
        y = fd.forward(x, w, padding="same", algorithm="fft")
        y.compute()
        assert len(built) == 1  # equal chunks, equal windows: one plan for 40 blocks
        fd.backward(da.ones_like(y), x, w, padding="same", algorithm="fft").dx.compute()
    # dw shares the forward's plan; dx's windows are equal too (zeros past the edges)
    assert len(built) == len(set(built)) == 2


def test_vjp_keeps_the_weights_of_its_call(rng):
    x = rng.standard_normal((2, 2, 12))
    w = rng.standard_normal((3, 2, 3))
    xd = da.from_array(x, chunks=(1, 2, 5))
    y, pullback = fd.vjp(xd, w, None, padding="full", dilation=2)
    w0 = w.copy()
    w += 1.0  # in place, after the call
    dy = rng.standard_normal(y.shape)
    got = pullback(da.from_array(dy, chunks=y.chunks))
    ref = fftconv.backward(dy, x, w0, padding="full", dilation=2)
    assert_close(y.compute(), fftconv.forward(x, w0, padding="full", dilation=2), x.dtype, "y")
    for a, r in zip((got.dx.compute(), got.dw, got.db), ref):
        assert_close(a, r, x.dtype, "pullback")


def test_local_cluster_two_processes(rng, tmp_path):
    distributed = pytest.importorskip("distributed")
    x = rng.standard_normal((2, 2, 14, 11)).astype(np.float32)
    w = rng.standard_normal((3, 2, 3, 4)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    layer = dict(padding="same", stride=2, padding_mode="reflect")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0", local_directory=str(tmp_path)) \
            as cluster, \
            distributed.Client(cluster):
        xd = da.from_array(x, chunks=(1, 2, 5, 6))
        y = fd.forward(xd, w, b, **layer)
        dy = da.ones_like(y)
        dx, dw, db = fd.backward(dy, xd, w, **layer)
        y, dx = dask.compute(y, dx)
    ref = fftconv.backward(np.ones_like(y), x, w, **layer)
    assert_close(y, fftconv.forward(x, w, b, **layer), np.float32, "y")
    for a, r in zip((dx, dw, db), ref):
        assert_close(a, r, np.float32, "gradients")


# -- bad input --------------------------------------------------------------------------------
def test_chunked_channel_axis_is_rechunked_with_a_warning(rng):
    x = rng.standard_normal((1, 4, 10))
    w = rng.standard_normal((2, 4, 3))
    with pytest.warns(fd.ChunkWarning, match=r"fftconv.dask.forward: x is chunked along its "
                                             r"channel axis \(1\)"):
        y = fd.forward(da.from_array(x, chunks=(1, 2, 5)), w)
    assert_close(y.compute(), fftconv.forward(x, w), x.dtype, "rechunked")


def test_mismatched_dy_chunks_are_rechunked_with_a_warning(rng):
    x = rng.standard_normal((2, 1, 12))
    w = rng.standard_normal((1, 1, 3))
    dy = rng.standard_normal((2, 1, 10))
    with pytest.warns(fd.ChunkWarning, match="dy's chunks .* do not line up"):
        got = fd.backward(da.from_array(dy, chunks=(2, 1, 3)),
                          da.from_array(x, chunks=(1, 1, 4)), w)
    for a, r in zip((got.dx.compute(), got.dw, got.db), fftconv.backward(dy, x, w)):
        assert_close(a, r, x.dtype, "rechunked dy")


@pytest.mark.parametrize("call, kind, match", [
    (lambda x, w: fd.forward(np.zeros((1, 1, 8)), w), TypeError,
     r"fftconv.dask.forward: x must be a dask.array.Array, got numpy.ndarray; "
     r"use fftconv.forward for numpy arrays"),
    (lambda x, w: fd.backward(np.zeros((1, 1, 6)), x, w), TypeError,
     "fftconv.dask.backward: dy must be a dask.array.Array"),
    (lambda x, w: fd.backward(da.zeros((1, 1, 5), chunks=2), x, w), ValueError,
     r"fftconv.dask.backward: dy must have shape \(1, 1, 6\)"),
    (lambda x, w: fd.forward(x, w, groups=3), ValueError,
     "fftconv.dask.forward: groups must divide C_in, got groups=3 and C_in=1"),
    (lambda x, w: fd.forward(x, w, transposed=True), ValueError,
     "fftconv.dask.forward: transposed=True is not supported on Dask arrays"),
    (lambda x, w: fd.vjp(x, w, np.zeros(2)), ValueError,
     r"fftconv.dask.vjp: b must have shape \(C_out,\) = \(1,\)"),
    (lambda x, w: fd.forward(x, w, max_workspace_bytes=0), ValueError,
     "fftconv.dask.forward: max_workspace_bytes must be None or an int >= 1"),
    (lambda x, w: fd.forward(x, w, algorithm="fastest"), ValueError,
     "fftconv.dask.forward: algorithm must be one of"),
    (lambda x, w: fd.forward(x[x > 0][None, None], w), ValueError,
     "fftconv.dask.forward: x must have known chunk sizes"),
    (lambda x, w: fd.forward(x, w, paddin="same"), TypeError,
     "fftconv.dask.forward: got unexpected keyword argument"),
])
def test_bad_input(call, kind, match):
    x = da.zeros((1, 1, 8), chunks=3)
    w = np.ones((1, 1, 3))
    with pytest.raises(kind, match=match):
        call(x, w)
