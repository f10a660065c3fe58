"""``fftconv.dask`` on chunks of any array library (issue 19 §4, "Dask on GPUs").

CI has no GPU, and Dask itself handles torch tensors and ``array_api_strict``
arrays as chunks poorly (its metas, concatenation and reductions assume numpy's
API), so the code a Dask array of CuPy chunks runs is exercised in two ways:

* the block tasks (``fftconv.dask.tasks``) called directly on torch CPU
  tensors and on ``array_api_strict`` arrays (on its default device and on
  ``device1``, which numpy cannot read): window assembly with reflected halos,
  the adjoint scatter, the empty block, and each task equal to its numpy call;
* the whole graph of a numpy-chunked Dask array with every task *replayed* on
  another library: each task's numpy arguments are converted (the weights kept
  as numpy, as a caller may pass them, or converted with the chunks), the task
  runs there and must return that library's arrays on that device, which are
  converted back for Dask.  The results must equal the numpy functions'.

Numpy chunks keep every result, and every ``_meta``, numpy (``tests/test_dask.py``
is the full suite on them); the GPU run (``tests/test_gpu.py``) checks CuPy chunks
end to end.
"""
import functools
import inspect

import numpy as np
import pytest

import fftconv
from conftest import TOL, rel_err

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")
from kinds import KINDS, Kind, torch, xp  # noqa: E402

import fftconv.dask as fd  # noqa: E402
from fftconv.dask import tasks  # noqa: E402



def _close(got, want, dtype, what):
    err = rel_err(got, want)
    assert err <= TOL[np.dtype(dtype)], f"{what}: relative error {err:.3g}"


# -- the tasks, called directly ------------------------------------------------------------------
@pytest.mark.parametrize("name", KINDS)
def test_assemble_and_scatter_on_a_library(name):
    kind = Kind(name)
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 3, 4, 5)), rng.standard_normal((2, 3, 2, 5))
    # a reflected on the last axis, b on the first spatial one (reflected halos)
    placements = [((slice(0, 4), slice(1, 6)), (1, -1)), ((slice(4, 6), slice(0, 5)), (-1, 1))]
    want = tasks.assemble(fftconv.backends.host(), (2, 3, 6, 7), np.float64, [a, b], placements)
    assert want[0, 0, 0, 1] == a[0, 0, 0, -1] and want[0, 0, 4, 0] == b[0, 0, -1, 0]
    arrays = tasks.backend([kind.asarray(a)], None)
    got = tasks.assemble(arrays, (2, 3, 6, 7), np.float64, [kind.asarray(a), kind.asarray(b)],
                         placements)
    assert kind.is_kind(got) and got.dtype == kind.native(np.float64)
    np.testing.assert_array_equal(kind.to_numpy(got), want)
    # scatter is assemble's adjoint: <assemble(a, b), g> == <a, ga> + <b, gb>, where each
    # g piece is scattered back onto its block through the same (reversed) run
    g = rng.standard_normal((2, 3, 6, 7))
    whole = (slice(None), slice(None))
    ga, gb = (tasks.scatter(p.shape, np.float64, [kind.asarray(g[(Ellipsis,) + sl])],
                            [(whole, steps)], None)
              for p, (sl, steps) in zip((a, b), placements))
    assert kind.is_kind(ga) and kind.is_kind(gb)
    np.testing.assert_allclose(np.vdot(want, g), np.vdot(a, kind.to_numpy(ga))
                               + np.vdot(b, kind.to_numpy(gb)), rtol=1e-12)
    # pieces landing on the same samples add up
    block = tasks.scatter((2, 3, 2, 5), np.float64, [kind.asarray(b), kind.asarray(b)],
                          [((slice(0, 2), slice(0, 5)), (1, 1)),
                           ((slice(0, 2), slice(0, 5)), (-1, 1))], None)
    np.testing.assert_allclose(kind.to_numpy(block), b + b[..., ::-1, :], rtol=1e-15)


@pytest.mark.parametrize("name", KINDS)
def test_a_task_without_blocks_uses_the_meta(name):
    kind = Kind(name)
    meta = kind.asarray(np.empty((0, 0, 0)))
    out = tasks.empty((2, 3, 0), np.float32, meta)
    assert kind.is_kind(out) and tuple(out.shape) == (2, 3, 0)
    assert out.dtype == kind.native(np.float32)
    out = tasks.scatter((1, 2, 3), np.float64, [], [], meta)
    assert kind.is_kind(out) and not kind.to_numpy(out).any()
    out = tasks.dxpad_block((1, 2, 4), (1, 3, 0), [], [], [(slice(0, 0), slice(0, 0))],
                            np.ones((3, 2, 3)), meta, {}, {})
    assert kind.is_kind(out) and tuple(out.shape) == (1, 2, 4)
    assert tasks.backend([], meta).key == fftconv.backends.arrays_of(meta).key


@pytest.mark.parametrize("weights", ["numpy", "converted"])
@pytest.mark.parametrize("name", KINDS)
def test_each_task_equals_its_numpy_call(name, weights):
    kind = Kind(name)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 4, 9, 8))
    w, b = rng.standard_normal((6, 2, 3, 2)), rng.standard_normal(6)
    dy = rng.standard_normal((2, 6, 7, 7))
    layer = dict(stride=(1, 1), dilation=(1, 1), groups=2, flip_kernel=False, algorithm="auto")
    place = [((slice(0, 9), slice(0, 8)), (1, 1))]
    conv = kind.asarray if weights == "converted" else (lambda a: a)
    meta = kind.asarray(np.empty((0,) * 4))
    # forward: the "valid" layer over the window
    y = tasks.forward_block((2, 4, 9, 8), [kind.asarray(x)], place, conv(w), conv(b), meta,
                            layer, {})
    assert kind.is_kind(y) and y.dtype == kind.native(np.float64)
    _close(kind.to_numpy(y), fftconv.forward(x, w, b, groups=2), np.float64, "y")
    # the weight and bias gradients, in double precision with a leading axis of one
    dw, db = tasks.grad_block((2, 4, 9, 8), [kind.asarray(x)], place, kind.asarray(dy), conv(w),
                              meta, layer, {})
    g = fftconv.backward(dy, x, w, groups=2)
    assert kind.is_kind(dw) and kind.is_kind(db)
    assert tuple(dw.shape) == (1,) + w.shape and tuple(db.shape) == (1, 6)
    _close(kind.to_numpy(dw)[0], g.dw, np.float64, "dw")
    _close(kind.to_numpy(db)[0], g.db, np.float64, "db")
    # dxpad: the transposed convolution of dy, cropped into the block
    crop = [(slice(1, 8), slice(0, 7)), (slice(0, 8), slice(0, 8))]
    out = tasks.dxpad_block((2, 4, 7, 8), (2, 6, 7, 7), [kind.asarray(dy)],
                            [((slice(0, 7), slice(0, 7)), (1, 1))], crop, conv(w), meta, layer, {})
    assert kind.is_kind(out)
    _close(kind.to_numpy(out), g.dx[:, :, 1:8, 0:8], np.float64, "dxpad")


def test_complex_weights_are_conjugated_in_their_own_library():
    """The transposed layer's ``w_t`` is ``conj(w)``, made by ``w``'s library."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 1, 12)) + 1j * rng.standard_normal((1, 1, 12))
    w = rng.standard_normal((2, 1, 3)) + 1j * rng.standard_normal((2, 1, 3))
    xd = da.from_array(x, chunks=(1, 1, 5))
    dy = rng.standard_normal((1, 2, 12)) + 1j * rng.standard_normal((1, 2, 12))
    g = fd.backward(da.from_array(dy, chunks=(1, 2, 5)), xd, w, padding="same")
    ref = fftconv.backward(dy, x, w, padding="same")
    for got, want, what in zip(g, ref, "dx dw db".split()):
        got = got.compute() if hasattr(got, "compute") else got
        _close(got, want, np.complex128, what)


# -- the whole graph, every task replayed on another library -------------------------------------
_ARRAY_PARAMS = {"w", "b", "w_t"}


def _replayed(kind, weights, counts, f):
    """``f`` run on ``kind``: numpy arguments converted (the weights only when
    ``weights == "converted"``), the result checked to be of ``kind`` and returned
    as numpy for Dask."""
    signature = inspect.signature(f)

    def convert(value, name):
        if isinstance(value, np.ndarray) and value.dtype != object:
            if name in _ARRAY_PARAMS and weights == "numpy":
                return value
            return kind.asarray(value)
        if isinstance(value, list):
            return [convert(v, name) for v in value]
        return value

    @functools.wraps(f)
    def run(*args):
        bound = signature.bind(*args)
        moved = {n: convert(v, n) for n, v in bound.arguments.items()}
        result = f(**moved)
        counts[f.__name__] = counts.get(f.__name__, 0) + 1
        results = result if isinstance(result, tuple) else (result,)
        for r in results:
            assert kind.is_kind(r), f"{f.__name__} returned {type(r)} for {kind.name} blocks"
        back = tuple(kind.to_numpy(r) for r in results)
        return back if isinstance(result, tuple) else back[0]
    return run


@pytest.fixture
def replay(monkeypatch):
    """Replay every task the graphs built from now on run on ``kind``."""
    def install(kind, weights):
        counts = {}
        for name in ("forward_block", "dxpad_block", "grad_block", "scatter", "empty"):
            monkeypatch.setattr(tasks, name, _replayed(kind, weights, counts,
                                                       getattr(tasks, name)))
        return counts
    return install


LAYERS = {
    "reflect-strided": dict(padding="same", stride=(2, 1), dilation=(1, 2), groups=2,
                            padding_mode="reflect"),
    "zeros-last": dict(padding=(1, 2), layout="channels_last", flip_kernel=True),
    "short-chunks": dict(padding="full", stride=3, padding_mode="zeros"),
}


@pytest.mark.parametrize("layer", list(LAYERS))
@pytest.mark.parametrize("weights", ["numpy", "converted"])
@pytest.mark.parametrize("name", KINDS)
def test_the_graph_runs_every_block_on_the_chunks_library(replay, name, weights, layer):
    kind = Kind(name)
    counts = replay(kind, weights)
    kw = LAYERS[layer]
    last = kw.get("layout") == "channels_last"
    rng = np.random.default_rng(5)
    x_np = rng.standard_normal((3, 4, 17, 11)).astype(np.float32)
    groups = kw.get("groups", 1)
    w_np = rng.standard_normal((6, 4 // groups, 3, 4)).astype(np.float32)
    b_np = rng.standard_normal(6).astype(np.float32)
    if last:
        x_np = np.ascontiguousarray(np.moveaxis(x_np, 1, -1))
        w_np = np.ascontiguousarray(np.transpose(w_np, (2, 3, 1, 0)))
    chunks = (2, 17, 5, 4) if last else (2, 4, 5, 4)
    if layer == "short-chunks":
        chunks = (2, 4, (2, 8, 1, 6), (2, 9))   # a chunk shorter than the stride: an empty block
    x = da.from_array(x_np, chunks=chunks)
    with dask.config.set(scheduler="sync"):
        y = fd.forward(x, w_np, b_np, **kw)
        want = fftconv.forward(x_np, w_np, b_np, **kw)
        _close(y.compute(), want, np.float32, "y")
        dy_np = rng.standard_normal(want.shape).astype(np.float32)
        g = fd.backward(da.from_array(dy_np, chunks=y.chunks), x, w_np, **kw)
        ref = fftconv.backward(dy_np, x_np, w_np, **kw)
        _close(g.dx.compute(), ref.dx, np.float32, "dx")
        _close(g.dw, ref.dw, np.float32, "dw")
        _close(g.db, ref.db, np.float32, "db")
    assert counts["forward_block"] and counts["grad_block"] and counts["dxpad_block"] \
        and counts["scatter"], counts
    if layer == "short-chunks":
        assert counts.get("empty"), counts


# -- numpy chunks: numpy results and metas; kinds that do not mix --------------------------------
def test_numpy_chunks_give_numpy_results_and_metas():
    rng = np.random.default_rng(7)
    x = da.from_array(rng.standard_normal((2, 3, 12, 10)), chunks=(1, 3, 5, 4))
    w = rng.standard_normal((4, 3, 3, 3))
    y, pullback = fd.vjp(x, w, rng.standard_normal(4), padding="same", padding_mode="circular")
    assert type(y._meta) is np.ndarray and y._meta.dtype == np.float64
    dx, dw, db = pullback(da.ones_like(y))
    assert type(dx._meta) is np.ndarray and type(dw) is np.ndarray and type(db) is np.ndarray
    assert type(y.compute()) is np.ndarray and type(dx.compute()) is np.ndarray
    yl = fd.forward(x.transpose(0, 2, 3, 1), w.transpose(2, 3, 1, 0), layout="channels_last")
    assert type(yl._meta) is np.ndarray and yl.dtype == np.float64


def test_weights_of_another_kind_than_the_chunks_are_a_clear_error():
    rng = np.random.default_rng(8)
    x_np = rng.standard_normal((1, 2, 10))
    x = da.from_array(x_np, chunks=(1, 2, 4))
    w = rng.standard_normal((3, 2, 3))
    with pytest.raises(TypeError, match=r"^fftconv\.dask\.forward: w is a torch tensor on cpu but "
                                        r"each of x's chunks is a numpy array; pass w as a numpy "
                                        r"array or as an array of the chunks' kind$"):
        fd.forward(x, torch.from_numpy(w))
    with pytest.raises(TypeError, match=r"^fftconv\.dask\.vjp: b is an array of array_api_strict "
                                        r".*but each of x's chunks is a numpy array"):
        fd.vjp(x, w, xp.asarray(np.ones(3)))
    with pytest.raises(TypeError, match=r"^fftconv\.dask\.backward: w is a torch tensor"):
        fd.backward(da.ones((1, 3, 8), chunks=(1, 3, 4)), x, torch.from_numpy(w))
    dy = da.ones((1, 3, 8), chunks=(1, 3, 4)).map_blocks(
        lambda a: a, meta=torch.empty((0, 0, 0), dtype=torch.float64))
    with pytest.raises(TypeError, match=r"^fftconv\.dask\.backward: each of dy's chunks is a torch "
                                        r"tensor on cpu but each of x's is a numpy array; convert "
                                        r"one of them"):
        fd.backward(dy, x, w)
