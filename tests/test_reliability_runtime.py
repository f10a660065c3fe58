"""Issue 13, the runtime defects: threads sharing plans and geometries, fork and
process pools after a multithreaded FFT, overflow at the top of each dtype's
range, the workspace budget on every algorithm, and BLAS's threads."""
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

import fftconv
from fftconv import runtime
from fftconv.backends import host
from fftconv.algorithms import overlap_add
from fftconv.planner import ENGINE_CACHE
from conftest import traced_step
from oracle import (oracle_backward, oracle_forward, oracle_transposed_backward,
                    oracle_transposed_forward)

ALGORITHMS = ("fft", "direct", "overlap_add")
ROOT = Path(__file__).resolve().parents[1]


def rand(rng, shape, dtype=np.float64, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def run_threads(target, n):
    """Run ``target(i)`` in ``n`` threads; re-raise the first error."""
    errors = []

    def body(i):
        try:
            target(i)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    if errors:
        raise errors[0]


# -- threads -------------------------------------------------------------------------------
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_a_plan_shared_by_threads_gives_each_thread_its_own_results(algorithm):
    """Each thread's backward differentiates its own last forward; results are
    bit-identical to the same calls made serially on the same plan."""
    rng = np.random.default_rng(1)
    p = fftconv.plan((2, 3, 20, 20), (4, 3, 3, 3), dtype=np.float32, padding="same",
                     algorithm=algorithm)
    xs = [rand(rng, (2, 3, 20, 20), np.float32) for _ in range(4)]
    ws = [rand(rng, (4, 3, 3, 3), np.float32) for _ in range(4)]
    dys = [rand(rng, (2, 4, 20, 20), np.float32) for _ in range(4)]
    serial = []
    for x, w, dy in zip(xs, ws, dys):
        y = p.forward(x, w)
        serial.append((y, *p.backward(dy)))
    got = [[] for _ in xs]

    def step(i):
        for _ in range(10):
            y = p.forward(xs[i], ws[i])
            got[i].append((y, *p.backward(dys[i])))
    run_threads(step, len(xs))
    for want, results in zip(serial, got):
        for result in results:
            for a, b in zip(result, want):
                np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_stateless_calls_on_one_geometry_are_bit_identical_to_serial(algorithm):
    rng = np.random.default_rng(2)
    xs = [rand(rng, (2, 3, 24, 24)) for _ in range(4)]
    w, dy = rand(rng, (5, 3, 5, 5)), rand(rng, (2, 5, 24, 24))
    kw = dict(padding="same", algorithm=algorithm)
    serial = [(fftconv.forward(x, w, **kw), *fftconv.backward(dy, x, w, **kw)) for x in xs]
    got = [None] * len(xs)

    def call(i):
        for _ in range(5):
            got[i] = (fftconv.forward(xs[i], w, **kw), *fftconv.backward(dy, xs[i], w, **kw))
    run_threads(call, len(xs))
    for a, b in zip(got, serial):
        for u, v in zip(a, b):
            np.testing.assert_array_equal(u, v)


def test_a_busy_engine_does_not_block_another_call_on_the_same_geometry():
    """The cache lends a second engine of the same key while the first is out."""
    rng = np.random.default_rng(3)
    x, w = rand(rng, (2, 3, 16, 16)), rand(rng, (4, 3, 3, 3))
    want = fftconv.forward(x, w, algorithm="fft")
    held = [e for e in ENGINE_CACHE.entries() if type(e.engine).__name__ == "FFTEngine"
            and e.engine.geom.x_shape == x.shape]
    assert held
    key = next(k for k, v in ENGINE_CACHE._idle.items() if held[-1] in v)
    done = []
    with ENGINE_CACHE.checkout(key, None) as lent, lent.engine.lock:  # another caller's pass
        t = threading.Thread(target=lambda: done.append(fftconv.forward(x, w, algorithm="fft")))
        t.start()
        t.join(timeout=120)
    assert done and not t.is_alive()
    np.testing.assert_array_equal(done[0], want)


def test_the_engine_pool_is_bounded_per_key_and_by_bytes():
    from fftconv.planner import EngineCache
    built = []

    class Engine:
        workspace_bytes = 100

    def build():
        built.append(Engine())
        return built[-1]
    cache = EngineCache(max_bytes=250, per_key=4)
    with cache.checkout("k", build), cache.checkout("k", build):
        assert len(built) == 2    # a second engine while the first is out
        waiter = threading.Thread(target=lambda: cache.checkout("k", build).__enter__())
        waiter.start()
        waiter.join(timeout=0.5)
        assert waiter.is_alive() and len(built) == 2   # a third would pass 250 bytes: waits
    waiter.join(timeout=60)
    assert not waiter.is_alive() and len(built) == 2   # it got a returned one


# -- fork and process pools ----------------------------------------------------------------
FORK_SCRIPT = """
import multiprocessing, os, sys
import numpy as np
sys.path.insert(0, {root!r})
import fftconv
from fftconv import contraction
fftconv.configure(threads=2)
contraction.PARALLEL_MIN_MACS = 0   # the products use the worker pool, before and after the fork
rng = np.random.default_rng(0)
x = rng.standard_normal((4, 8, 64, 64)).astype(np.float32)
w = rng.standard_normal((8, 8, 5, 5)).astype(np.float32)
p = fftconv.plan(x.shape, w.shape, dtype=np.float32, algorithm="fft")
want = fftconv.forward(x, w, algorithm="fft")
p.forward(x, w)       # the parent's transforms ran on 2 FFTW threads

def step(seed):
    y = fftconv.forward(x, w, algorithm="fft")
    assert np.abs(y - want).max() <= 1e-5 * np.abs(want).max()
    return seed

if __name__ == "__main__":
    pid = os.fork()
    if pid == 0:
        try:       # a plan made before the fork, and a stateless call
            y = p.forward(x, w)
            assert np.abs(y - want).max() <= 1e-5 * np.abs(want).max()
            step(0)
        except BaseException:
            os._exit(3)
        os._exit(0)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0, "forked child failed"
    for method in {methods!r}:
        with multiprocessing.get_context(method).Pool(2) as pool:
            assert pool.map(step, range(4)) == list(range(4)), method
    print("ok")
"""


def run_script(source: str, timeout: float, path: Path) -> subprocess.CompletedProcess:
    """Run ``source`` as the script ``path`` (spawned workers import it) in a fresh
    interpreter; a hang is killed and fails the test."""
    path.write_text(source)
    try:
        return subprocess.run([sys.executable, str(path)], capture_output=True, text=True,
                              timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the child process hung (killed after {timeout} s)")


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_fork_and_process_pools_work_after_a_multithreaded_fft(tmp_path):
    done = run_script(textwrap.dedent(FORK_SCRIPT.format(
        root=str(ROOT), methods=("fork", "forkserver", "spawn"))), 240, tmp_path / "pools.py")
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


def test_a_forked_child_plans_fftw_on_one_thread(tmp_path):
    """The mechanism: after a fork, FFTW's thread count drops to 1 once the parent
    planned with threads, and transforms planned earlier see a new generation."""
    source = f"""
import os, sys
sys.path.insert(0, {str(ROOT)!r})
from fftconv import runtime
print(runtime.fftw_threads(2), runtime.generation(), flush=True)
pid = os.fork()
if pid == 0:
    print(runtime.fftw_threads(2), runtime.generation(), flush=True)
    os._exit(0)
os.waitpid(pid, 0)
"""
    done = run_script(source, 60, tmp_path / "child.py")
    assert done.stdout.split() == ["2", "0", "1", "1"], done.stderr


# -- overflow ------------------------------------------------------------------------------
EDGES = [(np.float32, 1e34, 1e-5), (np.float64, 1e304, 1e-10)]


def close(got, want, tol):
    assert np.isfinite(got).all()
    assert np.abs(got - want).max() <= tol * np.abs(want).max()


@pytest.mark.parametrize("dtype, big, tol", EDGES)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("large", ["x", "w", "dy"])
def test_values_near_the_top_of_the_range_do_not_overflow(dtype, big, tol, algorithm, large):
    """Exact results are finite (largest near 1e35 for float32, 1e306 for float64):
    forward and both gradients match the float64 oracle, on every algorithm."""
    rng = np.random.default_rng(4)
    kw = dict(padding="same", stride=1, dilation=1, groups=1, flip_kernel=False)
    x = rand(rng, (2, 3, 16, 16), dtype, big if large == "x" else 1.0)
    w = rand(rng, (4, 3, 3, 3), dtype, big if large == "w" else 1.0)
    dy = rand(rng, (2, 4, 16, 16), dtype, big if large == "dy" else 1.0)
    y, pullback = fftconv.vjp(x, w, algorithm=algorithm, padding="same")
    dx, dw, _ = pullback(dy)
    wide = [a.astype(np.float64) for a in (x, w, dy)]
    close(y, oracle_forward(wide[0], wide[1], None, **kw), tol)
    for got, want in zip((dx, dw), oracle_backward(wide[2], wide[0], wide[1], **kw)):
        close(got, want, tol)
    g = fftconv.backward(dy, x, w, algorithm=algorithm, padding="same")   # stateless
    np.testing.assert_array_equal(g.dx, dx)


@pytest.mark.parametrize("dtype, big, tol", EDGES)
def test_overflow_scaling_covers_transposed_channels_last_and_padding_modes(dtype, big, tol):
    rng = np.random.default_rng(5)
    x, w = rand(rng, (2, 4, 12, 12), dtype, big), rand(rng, (4, 3, 3, 3), dtype)
    kw = dict(padding=1, stride=2, dilation=1, groups=1, output_padding=1)
    y, pullback = fftconv.vjp(x, w, algorithm="fft", transposed=True, **kw)
    dy = rand(rng, y.shape, dtype)
    dx, dw, _ = pullback(dy)
    wide = [a.astype(np.float64) for a in (x, w, dy)]
    close(y, oracle_transposed_forward(wide[0], wide[1], None, **kw), tol)
    for got, want in zip((dx, dw), oracle_transposed_backward(wide[2], wide[0], wide[1], **kw)):
        close(got, want, tol)
    xl = np.ascontiguousarray(np.moveaxis(x, 1, -1))
    wl = np.ascontiguousarray(rand(rng, (3, 3, 4, 5), dtype))
    for mode in ("circular", "reflect"):
        got = fftconv.forward(xl, wl, algorithm="overlap_add", padding="same", padding_mode=mode,
                              layout="channels_last")
        want = fftconv.forward(xl.astype(np.float64) / big, wl.astype(np.float64),
                               algorithm="direct", padding="same", padding_mode=mode,
                               layout="channels_last") * big
        close(got, want, tol)


def test_ordinary_values_are_not_copied_for_scaling():
    from fftconv import scaling
    x = np.ones((2, 3, 8, 8), np.float32)
    assert scaling.scaled(x, scaling.scale_for(x, 10, host()), host()) is x
    assert scaling.exponent(np.array([np.inf, 1.0]), host()) == 0   # non-finite: no scaling
    assert scaling.exponent(np.array([3e38], np.float32), host()) == 128


# -- the memory budget ---------------------------------------------------------------------
BUDGET_CASES = [((4, 8, 48, 48), (8, 8, 5, 5), dict(padding="same")),
                ((4, 8, 48, 48), (8, 8, 3, 3), dict(stride=2)),
                ((3, 2, 3000), (4, 2, 31), dict())]


@pytest.mark.parametrize("case", BUDGET_CASES)
@pytest.mark.parametrize("algorithm", ALGORITHMS + ("auto",))
def test_the_budget_binds_every_algorithm_and_auto(case, algorithm):
    x_shape, w_shape, kw = case
    rng = np.random.default_rng(6)
    x, w = rand(rng, x_shape, np.float32), rand(rng, w_shape, np.float32)
    whole = fftconv.plan(x_shape, w_shape, dtype=np.float32, algorithm=algorithm, **kw)
    budget = whole._engine.workspace_bytes // 3
    try:
        p, peak = traced_step(x, w, algorithm=algorithm, max_workspace_bytes=budget, **kw)
    except ValueError as exc:   # one sample is too big for a chunked algorithm
        assert algorithm in ("fft", "direct") and "one sample needs" in str(exc)
        assert (algorithm, case) != ("direct", BUDGET_CASES[0])   # where it must fit
        return
    assert p._engine.workspace_bytes <= budget
    assert p.workspace_bytes == p._engine.workspace_bytes + p._engine.kept_bytes
    assert peak <= budget
    assert p.chunk < x_shape[0] or p.tile != whole.tile or p.algorithm != whole.algorithm
    y = p.forward(x, w)
    ref = whole.forward(x, w)
    assert np.abs(y - ref).max() <= 1e-5 * np.abs(ref).max()


def test_auto_takes_an_algorithm_that_meets_a_budget_the_others_do_not():
    shape, w_shape = (1, 4, 1 << 15), (4, 4, 65)
    p = fftconv.plan(shape, w_shape, dtype=np.float32, max_workspace_bytes=1 << 20)
    assert p.algorithm == "overlap_add" and p._engine.workspace_bytes <= 1 << 20
    with pytest.raises(ValueError, match=r"one sample needs \d+ bytes of FFT workspace"):
        fftconv.plan(shape, w_shape, dtype=np.float32, algorithm="fft",
                     max_workspace_bytes=1 << 20)
    with pytest.raises(ValueError, match=r"fftconv\.plan: max_workspace_bytes=100 is too small "
                                         r"for every algorithm: fft: .*direct: .*overlap_add"):
        fftconv.plan(shape, w_shape, dtype=np.float32, max_workspace_bytes=100)


def test_overlap_add_fits_a_small_budget_with_a_small_tile():
    shape, w_shape = (2, 4, 128, 128), (4, 4, 9, 9)
    p = fftconv.plan(shape, w_shape, dtype=np.float32, algorithm="overlap_add",
                     max_workspace_bytes=1 << 20)
    assert p._engine.workspace_bytes <= 1 << 20
    with pytest.raises(ValueError, match=r"overlap-add with tile=\(120, 120\) and one tile per "
                                         r"pass needs \d+ bytes"):
        fftconv.plan(shape, w_shape, dtype=np.float32, algorithm="overlap_add", tile=(120, 120),
                     max_workspace_bytes=1 << 20)


@pytest.mark.parametrize("tile", [None, (2, 2), (4, 4)])
def test_the_budget_sizes_overlap_adds_pass_as_well_as_its_tile(tile):
    """A budget smaller than a pass of the usual size runs fewer tiles per pass."""
    shape, w_shape, budget = (16, 16, 128, 128), (16, 16, 7, 7), 2 << 20
    extra = {} if tile is None else {"tile": tile}
    p = fftconv.plan(shape, w_shape, dtype=np.float32, padding="same", algorithm="overlap_add",
                     max_workspace_bytes=budget, **extra)
    assert p._engine.workspace_bytes <= budget and p._engine.per_pass >= 1
    if tile is not None:
        assert p.tile == tile
        unbounded = fftconv.plan(shape, w_shape, dtype=np.float32, padding="same",
                                 algorithm="overlap_add", tile=tile)
        assert unbounded._engine.workspace_bytes > budget
        assert unbounded._engine.per_pass > p._engine.per_pass


def test_a_budget_no_pass_meets_names_the_smallest_pass():
    with pytest.raises(ValueError, match=r"fftconv\.plan: max_workspace_bytes=1048576 is too "
                                         r"small: overlap-add with tile=\(1, 1\) and one tile "
                                         r"per pass needs \d+ bytes"):
        fftconv.plan((16, 16, 128, 128), (16, 16, 7, 7), dtype=np.float32, padding="same",
                     algorithm="overlap_add", max_workspace_bytes=1 << 20)


def test_auto_meets_a_budget_only_fewer_tiles_per_pass_meet():
    """Every tile of this layer needs more than 10 MB at its usual tiles per pass;
    with fewer per pass, overlap-add fits 2 MiB, and auto takes it."""
    p = fftconv.plan((16, 16, 128, 128), (16, 16, 7, 7), dtype=np.float32, padding="same",
                     max_workspace_bytes=2 << 20)
    assert p.algorithm == "overlap_add" and p._engine.workspace_bytes <= 2 << 20


def test_fewer_tiles_per_pass_give_the_same_gradients():
    shape, w_shape = (8, 8, 96, 96), (8, 8, 7, 7)
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal(shape), rng.standard_normal(w_shape)
    p = fftconv.plan(shape, w_shape, dtype=np.float64, padding="same", algorithm="overlap_add",
                     tile=(4, 4), max_workspace_bytes=2 << 20)
    assert 1 < p._engine.per_pass < overlap_add.tiles_per_pass(p.geometry, np.float64, (4, 4))
    y, pullback = p.vjp(x, w)
    dy = rng.standard_normal(y.shape)
    dx, dw, _ = pullback(dy)
    want_dx, want_dw, _ = oracle_backward(dy, x, w, padding="same")
    for got, want in ((y, oracle_forward(x, w, padding="same")), (dx, want_dx), (dw, want_dw)):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-10 * np.abs(want).max())


def test_a_workspace_beyond_the_memory_available_is_a_clear_memory_error(monkeypatch):
    monkeypatch.setattr(runtime, "available_memory", lambda: 1000)
    with pytest.raises(MemoryError, match=r"fftconv\.plan: the workspace of the layer "
                                          r"x\(2, 3, 64, 64\) \* w\(4, 3, 5, 5\) "
                                          r"\(algorithm='fft'\) needs \d+ bytes, but only 1000 "
                                          r"bytes .*max_workspace_bytes=.*overlap_add"):
        fftconv.plan((2, 3, 64, 64), (4, 3, 5, 5), dtype=np.float32, algorithm="fft")
    with pytest.raises(MemoryError, match=r"fftconv\.forward: the workspace of the layer"):
        fftconv.forward(np.ones((2, 3, 65, 64)), np.ones((4, 3, 5, 5)), algorithm="fft")


# -- BLAS threads --------------------------------------------------------------------------
def test_threads_bounds_blas_inside_a_call_and_restores_it(monkeypatch):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from fftconv.algorithms import direct

    def blas_threads():
        return [lib["num_threads"] for lib in threadpoolctl.threadpool_info()
                if lib["user_api"] == "blas"]
    seen, real = [], direct.forward
    monkeypatch.setattr(direct, "forward", lambda *a: (seen.append(blas_threads()), real(*a))[1])
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        before = blas_threads()
        with fftconv.using(threads=1):
            fftconv.forward(np.ones((2, 3, 9, 9)), np.ones((4, 3, 3, 3)), algorithm="direct")
        assert seen and all(n == 1 for counts in seen for n in counts)
        assert blas_threads() == before


@pytest.mark.parametrize("layer", [dict(groups=8), dict(groups=4),
                                   dict(groups=8, transposed=True)])
def test_groups_run_in_shares_when_one_sample_of_all_does_not_fit(layer):
    """A grouped layer whose one sample exceeds the budget runs a few groups per pass
    (long depthwise kernels: the weight spectrum alone can exceed the budget)."""
    from fftconv.algorithms.fft import GroupShareEngine
    rng = np.random.default_rng(5)
    c = 8
    x = rng.standard_normal((3, c, 300))
    w = rng.standard_normal((c, c // layer["groups"], 300))
    kw = dict(padding=[(299, 0)], flip_kernel=True, **layer)
    whole = fftconv.plan(x.shape, w.shape, dtype=np.float64, algorithm="fft", **kw)
    budget = whole._engine.workspace_bytes // 3
    p = fftconv.plan(x.shape, w.shape, dtype=np.float64, algorithm="fft",
                     max_workspace_bytes=budget, **kw)
    assert isinstance(p._engine, GroupShareEngine) and len(p._engine.shares) > 1
    assert p._engine.workspace_bytes <= budget
    ref = fftconv.plan(x.shape, w.shape, dtype=np.float64, algorithm="direct", **kw)
    y, pullback = p.vjp(x, w)
    want_y, want_pullback = ref.vjp(x, w)
    dy = rng.standard_normal(y.shape)
    for got, want in zip((y,) + tuple(pullback(dy))[:2], (want_y,) + tuple(want_pullback(dy))[:2]):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-10 * np.abs(want).max())


def test_a_budget_not_even_one_group_fits_is_a_clear_error():
    with pytest.raises(ValueError, match=r"fftconv\.plan: max_workspace_bytes=1000 is too small: "
                                         r"one sample of one group needs \d+ bytes of FFT"):
        fftconv.plan((2, 8, 300), (8, 1, 300), dtype=np.float64, algorithm="fft", groups=8,
                     padding=[(299, 0)], max_workspace_bytes=1000)
