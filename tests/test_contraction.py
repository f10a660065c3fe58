"""The channel contraction (issue 11): every product against an einsum oracle,
its frequency blocks run on several threads bit-identical to one, and the
shared worker pool that runs them (``runtime.run_shares``)."""
import threading

import numpy as np
import pytest

import fftconv
from fftconv import contraction, runtime
from fftconv.backends import host
from oracle import oracle_backward, oracle_forward, oracle_products

HOST = host()


def crand(rng, shape, dtype=np.complex128):
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)


@pytest.fixture
def many_small_blocks(monkeypatch):
    """Blocks of a few frequencies, and every GEMM big enough to run in parallel."""
    monkeypatch.setattr(contraction, "BLOCK_BYTES", 1024)
    monkeypatch.setattr(contraction, "PARALLEL_MIN_MACS", 0)


def spectra(groups, dtype=np.complex128, n=3, c=4, o=6, f=53):
    rng = np.random.default_rng(groups)
    x, dy = crand(rng, (n, c, f), dtype), crand(rng, (n, o, f), dtype)
    conj_k = crand(rng, (o, c // groups, f), dtype)  # batch-major spectrum of conj(w)
    return x, dy, conj_k


def run_products(x, dy, conj_k, groups, threads):
    """All three products through ``contraction``, batch-major ``(rows, cols, F)``."""
    n, c, f = x.shape
    o = dy.shape[1]
    k = contraction.kernel_spectrum(HOST, conj_k, groups, threads)
    y = np.empty((f, n, o), x.dtype)
    x_keep = np.empty((f, groups, n, c // groups), x.dtype)
    contraction.forward_product(HOST, x, k, groups, y, x_keep=x_keep, threads=threads)
    dx, dw = np.empty((f, n, c), x.dtype), np.empty((o, c // groups, f), x.dtype)
    dy_keep = np.empty((f, groups, n, o // groups), x.dtype)
    contraction.backward_products(HOST, x_keep, dy, k, groups, dx_out=dx, dw_out=dw, dy_keep=dy_keep,
                                  threads=threads)
    # the transposed layer's products, from the kept conj(DY) and from DY itself
    y2, dw2 = np.empty_like(y), np.empty_like(dw)
    contraction.transposed_products(HOST, x, dy_keep, k, groups, y_out=y2, dw_out=dw2, threads=threads)
    dw3 = np.empty_like(dw)
    contraction.transposed_products(HOST, x, dy, k, groups, dw_out=dw3, threads=threads)
    return [y.transpose(1, 2, 0), dx.transpose(1, 2, 0), dw, y2.transpose(1, 2, 0), dw2, dw3]


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("dtype, tol", [(np.complex128, 1e-13), (np.complex64, 1e-5)])
def test_products_match_the_oracle_and_two_threads_match_one(many_small_blocks, groups, dtype,
                                                             tol):
    x, dy, conj_k = spectra(groups, dtype)
    y, dx, dw = oracle_products(*(a.astype(np.complex128) for a in (x, dy, conj_k)), groups)
    serial = run_products(x, dy, conj_k, groups, threads=1)
    for got, want in zip(serial, [y, dx, dw, y, dw, dw]):
        assert np.abs(got - want).max() <= tol * np.abs(want).max()
    parallel = run_products(x, dy, conj_k, groups, threads=3)
    for got, want in zip(parallel, serial):
        np.testing.assert_array_equal(got, want)   # the same GEMMs, shared out differently


def test_small_gemms_stay_on_the_calling_thread(monkeypatch):
    """Below PARALLEL_MIN_MACS the blocks run serially even with threads."""
    shares = []
    monkeypatch.setattr(contraction, "BLOCK_BYTES", 1024)
    monkeypatch.setattr(runtime, "run_shares",
                        lambda fn, items, threads: shares.append(threads) or [fn(i) for i in items])
    x, dy, conj_k = spectra(1)       # 3 x 6 x 4 = 72 multiply-adds per frequency
    run_products(x, dy, conj_k, 1, threads=2)
    assert shares[0] == 2            # kernel_spectrum: a copy, always shared out
    assert set(shares[1:]) == {1}
    monkeypatch.setattr(contraction, "PARALLEL_MIN_MACS", 72)
    shares.clear()
    run_products(x, dy, conj_k, 1, threads=2)
    assert set(shares) == {2}


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_a_layer_with_shared_out_products_is_bit_identical_and_exact(monkeypatch, padding):
    """One plan (the same FFTW plans), its products serial and then shared out."""
    monkeypatch.setattr(contraction, "BLOCK_BYTES", 1024)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 4, 19, 17))
    w = rng.standard_normal((6, 2, 5, 4))
    dy = rng.standard_normal(oracle_forward(x, w, padding=padding, groups=2).shape)
    with fftconv.using(threads=2):
        p = fftconv.plan(x.shape, w.shape, dtype=np.float64, algorithm="fft", padding=padding,
                         groups=2)
    shares = []
    original = runtime.run_shares
    monkeypatch.setattr(runtime, "run_shares",
                        lambda fn, items, threads: shares.append(threads) or original(
                            fn, items, threads))
    results = {}
    for low in (10 ** 9, 0):        # every GEMM below, then above, PARALLEL_MIN_MACS
        monkeypatch.setattr(contraction, "PARALLEL_MIN_MACS", low)
        shares.clear()
        results[low] = (p.forward(x, w),) + tuple(p.backward(dy)[:2])
        # shares[0]: the kernel-spectrum copy (always shared out), or the forward
        # product where the weights' spectrum is cached from the first round
        assert set(shares[1:]) == ({1} if low else {2})
    for got, want in zip(results[0], results[10 ** 9]):
        np.testing.assert_array_equal(got, want)
    want = (oracle_forward(x, w, padding=padding, groups=2),) + tuple(
        oracle_backward(dy, x, w, padding=padding, groups=2)[:2])
    for got, ref in zip(results[0], want):
        assert np.abs(got - ref).max() <= 1e-12 * np.abs(ref).max()


def test_large_gemms_are_not_shared_out(monkeypatch):
    shares = []
    monkeypatch.setattr(runtime, "run_shares",
                        lambda fn, items, threads: shares.append(threads) or [fn(i) for i in items])
    monkeypatch.setattr(contraction, "PARALLEL_MAX_MACS", 71)
    x, dy, conj_k = spectra(1)       # 72 multiply-adds per frequency
    monkeypatch.setattr(contraction, "PARALLEL_MIN_MACS", 0)
    run_products(x, dy, conj_k, 1, threads=2)
    assert shares[0] == 2 and set(shares[1:]) == {1}


# -- runtime.run_shares ----------------------------------------------------------------------
@pytest.mark.parametrize("n_items, threads", [(0, 2), (1, 2), (5, 1), (5, 2), (7, 3), (2, 8)])
def test_run_shares_calls_every_item_once(n_items, threads):
    seen, lock = [], threading.Lock()

    def fn(item):
        with lock:
            seen.append((item, threading.get_ident()))

    runtime.run_shares(fn, list(range(n_items)), threads)
    assert sorted(i for i, _ in seen) == list(range(n_items))
    if n_items:  # the calling thread runs the first share, which starts at item 0
        assert dict(seen)[0] == threading.get_ident()
    assert len({t for _, t in seen}) <= max(1, min(threads, n_items))


def test_run_shares_runs_two_shares_at_once():
    """Each share's first item waits for the other's: only concurrent shares pass."""
    meet = threading.Barrier(2, timeout=10)
    threads_seen = set()

    def fn(item):
        threads_seen.add(threading.get_ident())
        if item in (0, 2):
            meet.wait()

    runtime.run_shares(fn, list(range(4)), 2)
    assert len(threads_seen) == 2


@pytest.mark.parametrize("failing", [0, 9])
def test_run_shares_reraises_only_after_every_started_share_ended(failing):
    """A failing share (the caller's own, or a worker's) re-raises, and no share
    runs on after the call has returned."""
    done = []
    started = threading.Event()

    def fn(item):
        if item == 5:
            started.set()        # the worker's share has begun
        if item == 0 and failing == 0:
            started.wait(10)     # fail only once the worker's share is running
        if item == failing:
            raise ValueError(f"item {item}")
        threading.Event().wait(0.002)
        done.append(item)

    with pytest.raises(ValueError, match=f"item {failing}"):
        runtime.run_shares(fn, list(range(10)), 2)
    finished = list(done)
    threading.Event().wait(0.05)
    assert done == finished                      # nothing ran on after the call
    # shares [0..4] (the caller's) and [5..9]: the failing one stops at its item
    assert sorted(done) == (list(range(5, 10)) if failing == 0 else list(range(9)))


def test_run_shares_runs_an_unstarted_share_itself(monkeypatch):
    """Shares the pool has not started (busy, or shut down at interpreter exit)
    run on the calling thread."""
    from concurrent.futures import ThreadPoolExecutor
    closed = ThreadPoolExecutor(1)
    closed.shutdown()
    monkeypatch.setattr(runtime, "_worker_pool", lambda: closed)   # submit raises
    seen = []
    runtime.run_shares(lambda i: seen.append((i, threading.get_ident())), list(range(6)), 2)
    assert sorted(seen) == [(i, threading.get_ident()) for i in range(6)]


@pytest.mark.parametrize("og", [1, 3])
@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_elementwise_products_equal_the_gemm_products(og, dtype):
    """Depthwise layers (one input channel per group) run every product elementwise,
    batch-major; they must give what the per-frequency GEMMs give."""
    rng = np.random.default_rng(7)
    n, groups, f = 3, 5, 37

    def spec(*shape):
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)

    x, dy, conj_w = spec(n, groups, f), spec(n, groups * og, f), spec(groups * og, 1, f)
    gemm, elem = contraction.GemmProducts(groups, HOST), contraction.ElementwiseProducts(groups, HOST)
    assert isinstance(contraction.products_for(groups, groups, HOST), contraction.ElementwiseProducts)
    assert isinstance(contraction.products_for(groups, 2 * groups, HOST), contraction.GemmProducts)
    kg, ke = gemm.kernel(conj_w), elem.kernel(conj_w)

    def batch_major(fm):  # (F, N, C) -> (N, C, F)
        return np.moveaxis(fm, 0, -1)

    y_g = gemm.forward(x, kg, np.empty((f, n, groups * og), dtype))
    y_e = elem.forward(x, ke, np.empty((n, groups * og, f), dtype),
                       x_keep=np.empty(elem.kept_shape(f, n, groups), dtype))
    tol = 1e-5 if dtype == np.complex64 else 1e-12
    np.testing.assert_allclose(y_e, batch_major(y_g), rtol=tol)
    dx_g, dw_g = gemm.backward(x, dy, kg, np.empty((f, n, groups), dtype),
                               np.empty((groups * og, 1, f), dtype))
    dy_keep = np.empty(elem.kept_shape(f, n, groups * og), dtype)
    dx_e, dw_e = elem.backward(x, dy, ke, np.empty((n, groups, f), dtype),
                               np.empty((groups * og, 1, f), dtype), dy_keep=dy_keep)
    np.testing.assert_allclose(dx_e, batch_major(dx_g), rtol=tol)
    np.testing.assert_allclose(dw_e, dw_g, rtol=tol)
    for kept in (dy, dy_keep):  # what backward kept stands for DY
        y_t, dw_t = elem.transposed(x, kept, ke, np.empty((n, groups * og, f), dtype),
                                    np.empty((groups * og, 1, f), dtype))
        np.testing.assert_allclose(y_t, y_e, rtol=tol)
        np.testing.assert_allclose(dw_t, dw_g, rtol=tol)


@pytest.mark.parametrize("algorithm", ["fft", "overlap_add"])
@pytest.mark.parametrize("layer", [dict(), dict(stride=2), dict(dilation=3),
                                   dict(transposed=True, stride=2), dict(padding="same")])
def test_depthwise_layers_run_elementwise_and_match_the_oracle(algorithm, layer):
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((2, 6, 64)), rng.standard_normal((12, 1, 9))
    if layer.get("transposed"):  # (C_in, C_out // groups, k): the engine runs 6 -> 6 channels
        w = rng.standard_normal((6, 1, 9))
    extra = {"tile": (16,)} if algorithm == "overlap_add" else {}
    p = fftconv.plan(x.shape, w.shape, dtype=np.float64, algorithm=algorithm, groups=6,
                     **layer, **extra)
    assert isinstance(p._engine.passes.products, contraction.ElementwiseProducts)
    y, pullback = p.vjp(x, w)
    dy = rng.standard_normal(y.shape)
    dx, dw, _ = pullback(dy)
    ref = fftconv.plan(x.shape, w.shape, dtype=np.float64, algorithm="direct", groups=6,
                       **layer)
    ry, rpull = ref.vjp(x, w)
    rdx, rdw, _ = rpull(dy)
    for got, want in ((y, ry), (dx, rdx), (dw, rdw)):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-10 * np.abs(want).max())
