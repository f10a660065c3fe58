"""The compiled (numba) channel products (issue 20): every product against an einsum
oracle and against ``contraction.GemmProducts``, both complex dtypes, odd sizes, F=1,
grouped layers with ``Og != Cg``, N=1, real-signal spectra (DC and Nyquist bins), the
kept-spectrum paths, one and two threads; the module without numba; the compile
notice; and whole layers run on them."""
import subprocess
import sys
import warnings

import numpy as np
import pytest

import fftconv
from fftconv import compiled, contraction, planner
from oracle import (oracle_backward, oracle_forward, oracle_products,
                    oracle_transposed_backward, oracle_transposed_forward)

# relative to the largest magnitude (CONVENTIONS section 4; tests/test_contraction.py)
TOL = {np.dtype(np.complex64): 1e-5, np.dtype(np.complex128): 1e-12}

# (N, C_in, C_out, groups, F): odd sizes, F=1, Og != Cg, N=1, channel counts that leave
# remainders after the blocks of four, frequencies over several tasks with a partial last one
CASES = [(3, 5, 7, 1, 37), (1, 1, 1, 1, 1), (2, 6, 9, 3, 70), (4, 8, 12, 4, 65),
         (1, 12, 8, 2, 129), (3, 9, 13, 1, 200), (2, 16, 16, 1, 64), (5, 4, 4, 4, 33)]


#: Tests that run without numba too.
WITHOUT_NUMBA = ("test_the_module_imports_and_says_so_without_numba",
                 "test_importing_the_package_imports_no_numba")


@pytest.fixture(autouse=True)
def _numba(request):
    if request.node.originalname not in WITHOUT_NUMBA:
        pytest.importorskip("numba")


@pytest.fixture
def shared_out(monkeypatch):
    """Every call big enough to share its tasks out over threads."""
    monkeypatch.setattr(compiled, "PARALLEL_MIN_MACS", 0)


def real_spectra(rng, rows, cols, n_freq, dtype):
    """``rfft`` of real signals ``(rows, cols, 2 (F - 1))`` (length 1 for F=1): DC and,
    for F > 1, Nyquist bins included."""
    length = max(1, 2 * (n_freq - 1))
    signal = rng.standard_normal((rows, cols, length))
    spec = np.fft.rfft(signal, axis=-1)
    assert spec.shape[-1] == n_freq
    return spec.astype(dtype)


def operands(case, dtype, seed=0):
    n, c, o, groups, f = case
    rng = np.random.default_rng(seed)
    x = real_spectra(rng, n, c, f, dtype)
    dy = real_spectra(rng, n, o, f, dtype)
    conj_k = real_spectra(rng, o, c // groups, f, dtype)   # spectrum of conj(w) = w (real)
    return x, dy, conj_k


def rel(got, want) -> float:
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-300))


def run(products, x, dy, conj_k, threads):
    """All products through ``products``, results batch-major ``(rows, cols, F)``:
    forward keeping ``X``, backward from the kept ``X`` keeping ``DY``, the
    transposed pair from the kept ``DY`` and from ``DY`` itself, and the backward
    products one at a time."""
    n, c, f = x.shape
    o = dy.shape[1]
    groups = products.groups
    fm = products.frequency_major

    def new(rows, cols):
        return np.empty((f, rows, cols) if fm else (rows, cols, f), x.dtype)

    def batch_major(a):
        return a.transpose(1, 2, 0) if fm else a

    k = products.kernel(conj_k, threads)
    y, x_keep = new(n, o), np.empty(products.kept_shape(f, n, c), x.dtype)
    products.forward(x, k, y, x_keep=x_keep, threads=threads)
    dx, dw = new(n, c), np.empty((o, c // groups, f), x.dtype)
    dy_keep = np.empty(products.kept_shape(f, n, o), x.dtype)
    if fm:   # GemmProducts keeps conj(DY) frequency-major
        dy_keep = np.empty((f, groups, n, o // groups), x.dtype)
    products.backward(x_keep, dy, k, dx_out=dx, dw_out=dw, dy_keep=dy_keep, threads=threads)
    y2, dw2 = new(n, o), np.empty_like(dw)
    products.transposed(x, dy_keep, k, y_out=y2, dw_out=dw2, threads=threads)
    dw3 = np.empty_like(dw)
    products.transposed(x, dy, k, dw_out=dw3, threads=threads)
    dx_only, dw_only = new(n, c), np.empty_like(dw)
    products.backward(None, dy, k, dx_out=dx_only, threads=threads)
    products.backward(x, dy, k, dw_out=dw_only, threads=threads)
    return {"y": batch_major(y), "dx": batch_major(dx), "dw": dw, "y2": batch_major(y2),
            "dw2": dw2, "dw3": dw3, "dx_only": batch_major(dx_only), "dw_only": dw_only}


def gemm(groups):
    from fftconv.backends import host
    return contraction.GemmProducts(groups, host())


@pytest.mark.parametrize("case", CASES, ids=lambda c: "N{}-{}to{}-g{}-F{}".format(*c))
@pytest.mark.parametrize("dtype", [np.complex64, np.complex128], ids=["c64", "c128"])
def test_products_match_the_oracle_and_the_gemms(shared_out, case, dtype):
    x, dy, conj_k = operands(case, dtype)
    groups = case[3]
    want_y, want_dx, want_dw = oracle_products(x, dy, conj_k, groups)
    want = {"y": want_y, "dx": want_dx, "dw": want_dw, "y2": want_y, "dw2": want_dw,
            "dw3": want_dw, "dx_only": want_dx, "dw_only": want_dw}
    tol = TOL[np.dtype(dtype)]
    serial = run(compiled.CompiledProducts(groups), x, dy, conj_k, threads=1)
    for name, got in serial.items():
        assert got.dtype == dtype, name
        assert rel(got, want[name]) <= tol, name
    gemms = run(gemm(groups), x, dy, conj_k, threads=1)
    for name, got in serial.items():
        assert rel(got, gemms[name]) <= tol, name
    parallel = run(compiled.CompiledProducts(groups), x, dy, conj_k, threads=2)
    for name, got in parallel.items():
        np.testing.assert_array_equal(got, serial[name], err_msg=name)   # the same tasks


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128], ids=["c64", "c128"])
def test_kept_spectra_are_copies_in_the_transforms_layout(dtype):
    case = (3, 6, 4, 2, 90)
    x, dy, conj_k = operands(case, dtype, seed=3)
    p = compiled.CompiledProducts(2)
    assert p.frequency_major is False
    assert p.kept_shape(90, 3, 6) == (3, 6, 90)
    k = p.kernel(conj_k)
    x_keep, dy_keep = np.empty(x.shape, dtype), np.empty(dy.shape, dtype)
    p.forward(x, k, np.empty(dy.shape, dtype), x_keep=x_keep)
    p.backward(x_keep, dy, k, dx_out=np.empty_like(x), dy_keep=dy_keep)
    np.testing.assert_array_equal(x_keep, x)
    np.testing.assert_array_equal(dy_keep, dy)
    only_kept = np.empty_like(dy)          # no product asked for: a copy only
    p.backward(None, dy, k, dy_keep=only_kept)
    np.testing.assert_array_equal(only_kept, dy)


def test_results_go_into_non_contiguous_outputs_too():
    case = (2, 4, 6, 1, 50)
    x, dy, conj_k = operands(case, np.complex128, seed=5)
    want_y, want_dx, want_dw = oracle_products(x, dy, conj_k, 1)
    p = compiled.CompiledProducts(1)
    k = p.kernel(conj_k[:, :, ::-1][:, :, ::-1])            # a view in, too
    y = np.empty((6, 2, 50), np.complex128).transpose(1, 0, 2)
    p.forward(x, k, y)
    dx = np.empty((4, 2, 50), np.complex128).transpose(1, 0, 2)
    dw = np.empty((4, 6, 50), np.complex128).transpose(1, 0, 2)
    p.backward(x, dy, k, dx_out=dx, dw_out=dw)
    for got, want in ((y, want_y), (dx, want_dx), (dw, want_dw)):
        assert rel(got, want) <= 1e-12


def test_a_kernel_spectrum_of_another_layer_is_refused():
    x, dy, conj_k = operands((2, 4, 6, 2, 40), np.complex64)
    k = compiled.CompiledProducts(2).kernel(conj_k)
    with pytest.raises(ValueError, match="CompiledProducts: K must come from "
                                         "CompiledProducts.kernel for 1 groups"):
        compiled.CompiledProducts(1).forward(x, k, np.empty((2, 6, 40), np.complex64))


def test_a_non_finite_value_stays_in_its_own_sample():
    """CONVENTIONS section 5: a NaN in sample 0 spreads over sample 0's outputs only
    (and over DW, a sum over the batch), exactly as in the GEMMs."""
    x, dy, conj_k = operands((3, 5, 6, 1, 70), np.complex64)
    x[0, 2, 17] = np.nan
    dy[1, 3, 40] = np.inf
    p = compiled.CompiledProducts(1)
    k = p.kernel(conj_k)
    y, dx = np.empty_like(dy), np.empty_like(x)
    p.forward(x, k, y)
    p.backward(None, dy, k, dx_out=dx)
    assert np.isnan(y[0, :, 17]).all() and np.isfinite(y[1:]).all()
    assert np.isfinite(np.delete(y[0], 17, axis=-1)).all()
    assert not np.isfinite(dx[1, :, 40]).any() and np.isfinite(dx[[0, 2]]).all()


def forget_kernels(monkeypatch) -> None:
    """No kernel loaded in this process and no notice given yet."""
    monkeypatch.setattr(compiled, "_kernels", {})
    monkeypatch.setattr(compiled, "_noticed", False)


@pytest.fixture
def uncached(monkeypatch):
    """Kernels forgotten (:func:`forget_kernels`) and numba's disk cache reported empty."""
    forget_kernels(monkeypatch)
    monkeypatch.setattr(compiled, "_in_cache", lambda dispatcher, signature: False)


def compile_notices(action) -> list:
    """The CompileNotices ``action()`` gives."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        action()
    return [w for w in caught if issubclass(w.category, compiled.CompileNotice)]


def test_the_compile_notice_is_given_once_before_compiling(uncached):
    """Kernels not in numba's cache: one CompileNotice naming warm_up, then none."""
    def use_both_precisions():
        compiled.kernels(np.float32)
        compiled.kernels(np.float64)
        assert compiled.warm_up() >= 0
    notices = compile_notices(use_both_precisions)
    assert len(notices) == 1
    assert "warm_up" in str(notices[0].message) and "float32" in str(notices[0].message)


def test_warm_up_compiles_without_a_notice(uncached):
    """Whoever calls warm_up asked for the compile: no CompileNotice, even uncached."""
    assert not compile_notices(lambda: compiled.warm_up((np.float32,)))
    assert np.dtype(np.float32) in compiled._kernels


def test_cached_kernels_give_no_notice(monkeypatch):
    compiled.warm_up()                     # compiled (or loaded) and cached on disk by now
    forget_kernels(monkeypatch)
    assert not compile_notices(lambda: compiled.kernels(np.float32))


# -- without numba ---------------------------------------------------------------------------
def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)


def test_the_module_imports_and_says_so_without_numba():
    done = _python(
        "import sys\n"
        "sys.modules['numba'] = None\n"
        "import numpy as np\n"
        "import fftconv, fftconv.compiled as c\n"
        "assert c.AVAILABLE is False, c.AVAILABLE\n"
        "try:\n"
        "    c.CompiledProducts(1).kernel(np.ones((1, 1, 3), np.complex64))\n"
        "except ImportError as e:\n"
        "    assert 'fftconv[compiled]' in str(e), e\n"
        "else:\n"
        "    raise SystemExit('no ImportError')\n"
        "print('ok')\n")
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_importing_the_package_imports_no_numba():
    done = _python("import sys, fftconv, fftconv.compiled as c\n"
                   "assert 'numba' not in sys.modules\n"
                   "print(c.AVAILABLE)\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(compiled.AVAILABLE)


# -- whole layers on the compiled products ---------------------------------------------------
@pytest.fixture
def compiled_layers(monkeypatch):
    """``contraction.products_for`` returns CompiledProducts for every layer that
    takes GEMMs, small spectra included; engines built before are dropped."""
    original = contraction.products_for

    def products_for(groups, in_channels, arrays, *args, **kwargs):
        chosen = original(groups, in_channels, arrays, *args, **kwargs)
        if isinstance(chosen, contraction.GemmProducts):
            return compiled.CompiledProducts(groups, arrays)
        return chosen

    monkeypatch.setattr(contraction, "products_for", products_for)
    planner.clear_caches()
    yield
    planner.clear_caches()


LAYERS = [dict(padding="same"), dict(padding="valid", groups=2, stride=2),
          dict(padding="full", dilation=2, groups=3), dict(padding=1, stride=(1, 2))]


@pytest.mark.parametrize("layer", LAYERS, ids=lambda d: "-".join(f"{k}{v}" for k, v in d.items()))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layers_on_compiled_products_match_the_oracle(compiled_layers, layer, dtype):
    rng = np.random.default_rng(11)
    groups = layer.get("groups", 1)
    x = rng.standard_normal((3, 6, 21, 18)).astype(dtype)
    w = rng.standard_normal((12, 6 // groups, 5, 4)).astype(dtype)
    y, pullback = fftconv.vjp(x, w, algorithm="fft", **layer)
    want = oracle_forward(x, w, **layer)
    dy = rng.standard_normal(want.shape).astype(dtype)
    grads = pullback(dy)
    want_dx, want_dw, _ = oracle_backward(dy, x, w, **layer)
    tol = 1e-5 if dtype == np.float32 else 1e-10
    for got, ref in ((y, want), (grads.dx, want_dx), (grads.dw, want_dw)):
        assert got.dtype == dtype
        assert rel(got, ref) <= tol


def test_a_transposed_layer_on_compiled_products_matches_the_oracle(compiled_layers):
    rng = np.random.default_rng(12)
    x = rng.standard_normal((2, 4, 13, 11))
    w = rng.standard_normal((4, 3, 3, 5))
    layer = dict(transposed=True, stride=2, padding=1)
    y, pullback = fftconv.vjp(x, w, algorithm="fft", **layer)
    want = oracle_transposed_forward(x, w, stride=2, padding=1)
    dy = rng.standard_normal(want.shape)
    grads = pullback(dy)
    want_dx, want_dw, _ = oracle_transposed_backward(dy, x, w, stride=2, padding=1)
    for got, ref in ((y, want), (grads.dx, want_dx), (grads.dw, want_dw)):
        assert rel(got, ref) <= 1e-10


def test_other_array_libraries_are_refused():
    class NotNumpy:
        dtype = np.dtype(np.complex64)
        shape = (1, 1, 4)

    with pytest.raises(TypeError, match="CompiledProducts: runs on numpy arrays only"):
        compiled.CompiledProducts(1).kernel(NotNumpy())


# -- the choice: numpy layers with numba and the setting on, large enough spectra ----------
@pytest.mark.parametrize("setting", [True, False])
def test_products_for_chooses_the_compiled_kernels_by_the_setting(setting):
    from fftconv.backends import host
    big = contraction.COMPILED_MIN_FREQUENCIES
    chosen = contraction.products_for(2, 8, host(), big, setting)
    assert isinstance(chosen, compiled.CompiledProducts if setting and compiled.AVAILABLE
                      else contraction.GemmProducts)
    assert isinstance(contraction.products_for(2, 8, host(), big - 1, True),
                      contraction.GemmProducts)          # small spectra: the GEMMs
    assert isinstance(contraction.products_for(8, 8, host(), big, True),
                      contraction.ElementwiseProducts)   # depthwise: elementwise


@pytest.mark.skipif(not compiled.AVAILABLE, reason="numba is not installed")
def test_the_gemms_take_layers_whose_kernel_slice_outgrows_l1_over_many_rows():
    from fftconv.backends import host
    big = contraction.COMPILED_MIN_FREQUENCIES
    many = contraction.COMPILED_MAX_SPILL_ROWS
    # 4 outputs x 64 channels x 2 x LANES float64 = 64 KiB: past L1
    assert contraction.product_kind(1, 64, big, True, rows=many, itemsize=8) == "gemm"
    assert contraction.product_kind(1, 64, big, True, rows=many - 1, itemsize=8) == "compiled"
    assert contraction.product_kind(1, 64, big, True, rows=many, itemsize=4) == "compiled"
    # the wider side counts (the input gradient's sums run over the output channels)
    assert contraction.product_kind(1, 8, big, True, rows=many, out_channels=128) == "gemm"
    # per group: 4 groups of 32 -> 32 channels are a 16 KiB slice
    assert contraction.product_kind(4, 128, big, True, rows=many, out_channels=128,
                                    itemsize=8) == "compiled"
    assert isinstance(contraction.products_for(1, 64, host(), big, True, many, 64, 8),
                      contraction.GemmProducts)


def test_a_plan_uses_the_setting():
    x_shape, w_shape = (2, 4, 48, 48), (4, 4, 3, 3)
    with fftconv.using(compiled=True):
        on = fftconv.plan(x_shape, w_shape, dtype=np.float32, algorithm="fft")
    with fftconv.using(compiled=False):
        off = fftconv.plan(x_shape, w_shape, dtype=np.float32, algorithm="fft")
    assert isinstance(off._engine.passes.products, contraction.GemmProducts)
    assert isinstance(on._engine.passes.products, compiled.CompiledProducts
                      if compiled.AVAILABLE else contraction.GemmProducts)


@pytest.mark.skipif(not compiled.AVAILABLE, reason="numba is not installed")
def test_a_plan_passes_its_rows_and_precision_to_the_choice_of_products():
    many = contraction.COMPILED_MAX_SPILL_ROWS
    x_shape, w_shape = (many, 64, 40, 40), (64, 64, 3, 3)  # a 64 KiB slice in float64
    with fftconv.using(compiled=True):
        wide = fftconv.plan(x_shape, w_shape, dtype=np.float64, algorithm="fft")
        narrow = fftconv.plan(x_shape, w_shape, dtype=np.float32, algorithm="fft")
    assert isinstance(wide._engine.passes.products, contraction.GemmProducts)
    assert isinstance(narrow._engine.passes.products, compiled.CompiledProducts)
