"""Memory layouts, byte order, empty batches, NaN isolation, dtypes, and input immutability."""

import numpy as np
import pytest

import fftconv
import oracle
from conftest import ALGORITHMS, assert_close, random_array, rel_err

KW = dict(padding="same", stride=(2, 1), dilation=(1, 2), groups=2, flip_kernel=True)
XS, WS = (3, 4, 9, 8), (6, 2, 3, 2)


def _data(dtype="float64", seed=0):
    rng = np.random.default_rng(seed)
    x = random_array(rng, XS, dtype)
    w = random_array(rng, WS, dtype)
    b = random_array(rng, (WS[0],), dtype)
    y_shape = oracle.output_shape(XS, WS, **{k: KW[k] for k in
                                             ("padding", "stride", "dilation", "flip_kernel")})
    dy = random_array(rng, y_shape, dtype)
    return x, w, b, dy


def _run(x, w, b, dy, algorithm, **kw):
    kw = kw or KW
    y = fftconv.forward(x, w, b, algorithm=algorithm, **kw)
    dx, dw, db = fftconv.backward(dy, x, w, algorithm=algorithm, **kw)
    return y, dx, dw, db


def _same(got, ref):
    # "the same result": equal up to rounding (a different layout may take another SIMD path),
    # i.e. a few dozen ulps of the result dtype relative to its largest magnitude
    for g, r in zip(got, ref):
        assert g.shape == r.shape
        assert rel_err(g, r) <= 64 * np.finfo(r.dtype).eps


def _strided(a, rng):
    """A non-contiguous view holding the values of ``a``: every other element of a bigger array."""
    big = random_array(rng, tuple(2 * s for s in a.shape), a.dtype)
    view = big[tuple(slice(None, None, 2) for _ in a.shape)]
    view[...] = a
    assert not view.flags.c_contiguous and not view.flags.f_contiguous
    return view


@pytest.mark.parametrize("algorithm", ALGORITHMS)
class TestLayouts:
    def test_non_contiguous(self, algorithm):
        x, w, b, dy = _data()
        ref = _run(x, w, b, dy, algorithm)
        rng = np.random.default_rng(1)
        _same(_run(_strided(x, rng), _strided(w, rng), _strided(b, rng), _strided(dy, rng),
                   algorithm), ref)

    def test_negative_strides(self, algorithm):
        x, w, b, dy = _data()
        ref = _run(x, w, b, dy, algorithm)
        def rev(a):  # same values as a, negative stride on the last axis
            return np.ascontiguousarray(a[..., ::-1])[..., ::-1]
        xr, wr, dyr = rev(x), rev(w), rev(dy)
        assert xr.strides[-1] < 0
        _same(_run(xr, wr, b, dyr, algorithm), ref)

    def test_fortran_order(self, algorithm):
        x, w, b, dy = _data()
        ref = _run(x, w, b, dy, algorithm)
        f = np.asfortranarray
        assert f(x).flags.f_contiguous and not f(x).flags.c_contiguous
        _same(_run(f(x), f(w), b, f(dy), algorithm), ref)

    @pytest.mark.parametrize("be", [">f8", ">f4", ">c16"])
    def test_big_endian(self, algorithm, be):
        native = np.dtype(be).newbyteorder("=")
        x, w, b, dy = _data(native)
        ref = _run(x, w, b, dy, algorithm)
        got = _run(x.astype(be), w.astype(be), b.astype(be), dy.astype(be), algorithm)
        for g in got:
            assert g.dtype.kind == native.kind and g.dtype.itemsize == native.itemsize
        _same([g.astype(native) for g in got], ref)
        # and right, not merely consistent
        assert_close(got[0], oracle.oracle_forward(x, w, b, **KW), native, "y")

    def test_empty_batch(self, algorithm):
        x, w, b, _ = _data()
        x0 = x[:0]
        y = fftconv.forward(x0, w, b, algorithm=algorithm, **KW)
        out = oracle.output_shape(XS, WS, padding="same", stride=(2, 1), dilation=(1, 2),
                                  flip_kernel=True)
        assert y.shape == (0,) + out[1:]
        assert y.dtype == x.dtype
        dx, dw, db = fftconv.backward(np.zeros((0,) + out[1:]), x0, w, algorithm=algorithm, **KW)
        assert dx.shape == x0.shape
        assert dw.shape == w.shape and np.all(dw == 0)
        assert db.shape == (WS[0],) and np.all(db == 0)
        assert dx.dtype == dw.dtype == db.dtype == x.dtype

    def test_nan_stays_in_its_sample(self, algorithm):
        x, w, b, dy = _data()
        xn = x.copy()
        xn[1, 2, 4, 3] = np.nan
        y = fftconv.forward(xn, w, b, algorithm=algorithm, **KW)
        ref = oracle.oracle_forward(x, w, b, **KW)
        assert np.isnan(y[1]).any(), "the NaN must not be silently dropped"
        for n in (0, 2):
            assert np.all(np.isfinite(y[n])), f"NaN leaked from sample 1 into sample {n}"
            assert_close(y[n], ref[n], np.float64, f"y[{n}]")
        # backward: a NaN in dy of one sample must not reach dx of the other samples
        dyn = dy.copy()
        dyn[1, 0, 2, 1] = np.nan
        dx, _, _ = fftconv.backward(dyn, x, w, algorithm=algorithm, **KW)
        gref = oracle.oracle_backward(dy, x, w, **KW)
        assert np.isnan(dx[1]).any()
        for n in (0, 2):
            assert np.all(np.isfinite(dx[n])), f"NaN leaked from sample 1 into dx[{n}]"
            assert_close(dx[n], gref.dx[n], np.float64, f"dx[{n}]")

    @pytest.mark.parametrize("dtype", ["float32", "float64", "complex64", "complex128"])
    def test_dtype_preserved(self, algorithm, dtype):
        x, w, b, dy = _data(dtype)
        y, dx, dw, db = _run(x, w, b, dy, algorithm)
        for name, a in (("y", y), ("dx", dx), ("dw", dw), ("db", db)):
            assert a.dtype == np.dtype(dtype), f"{name}: {a.dtype} for {dtype} input"
        assert_close(y, oracle.oracle_forward(x, w, b, **KW), dtype, "y")
        g = oracle.oracle_backward(dy, x, w, **KW)
        assert_close(dx, g.dx, dtype, "dx")
        assert_close(dw, g.dw, dtype, "dw")
        assert_close(db, g.db, dtype, "db")

    def test_float16(self, algorithm):
        x, w, b, dy = _data("float16")
        y, dx, dw, db = _run(x, w, b, dy, algorithm)
        for name, a in (("y", y), ("dx", dx), ("dw", dw), ("db", db)):
            assert a.dtype == np.float16, f"{name}: {a.dtype} for float16 input"
        # computed in float32, rounded once to float16: relative rounding 2**-11 per element
        g = oracle.oracle_backward(dy, x, w, **KW)
        for a, ref in ((y, oracle.oracle_forward(x, w, b, **KW)), (dx, g.dx), (dw, g.dw),
                       (db, g.db)):
            assert rel_err(a, ref) <= 1e-3

    def test_mixed_precision_promotes(self, algorithm):
        # numpy promotion, no silent downcast: float32 with float64 gives float64
        x, w, b, dy = _data("float64")
        x32 = x.astype(np.float32)
        y = fftconv.forward(x32, w, b, algorithm=algorithm, **KW)
        assert y.dtype == np.result_type(x32, w) == np.float64
        assert_close(y, oracle.oracle_forward(x32, w, b, **KW), np.float64, "y")
        xi = np.round(4 * x).astype(np.int64)
        y = fftconv.forward(xi, w, b, algorithm=algorithm, **KW)
        assert y.dtype == np.result_type(xi, w) == np.float64
        assert_close(y, oracle.oracle_forward(xi, w, b, **KW), np.float64, "y (int x)")

    @pytest.mark.parametrize("xd,wd", [("complex64", "float32"), ("float32", "complex64"),
                                       ("float64", "complex64"), ("complex128", "float32")])
    def test_mixed_real_complex_promotes(self, algorithm, xd, wd):
        x, w, b, dy = _data("complex128")
        x = (x if np.dtype(xd).kind == "c" else x.real).astype(xd)
        w = (w if np.dtype(wd).kind == "c" else w.real).astype(wd)
        dt = np.result_type(x, w)
        y = fftconv.forward(x, w, None, algorithm=algorithm, **KW)
        dx, dw, db = fftconv.backward(dy.astype(dt), x, w, algorithm=algorithm, **KW)
        for name, a in (("y", y), ("dx", dx), ("dw", dw), ("db", db)):
            assert a.dtype == dt, f"{name}: {a.dtype}, numpy promotes {xd} and {wd} to {dt}"
        assert_close(y, oracle.oracle_forward(x, w, None, **KW), dt, "y")
        g = oracle.oracle_backward(dy.astype(dt), x, w, **KW)
        assert_close(dx, g.dx, dt, "dx")
        assert_close(dw, g.dw, dt, "dw")

    def test_read_only_inputs(self, algorithm):
        x, w, b, dy = _data()
        ref = _run(x, w, b, dy, algorithm)
        for a in (x, w, b, dy):
            a.flags.writeable = False
        _same(_run(x, w, b, dy, algorithm), ref)
        p = fftconv.plan(x.shape, w.shape, dtype=x.dtype, algorithm=algorithm, **KW)
        _same([p.forward(x, w, b)] + list(p.backward(dy)), ref)

    @pytest.mark.parametrize("dtype", ["float64", "complex128", "float32"])
    @pytest.mark.parametrize("flip", [False, True])
    def test_inputs_not_modified(self, algorithm, dtype, flip):
        x, w, b, dy = _data(dtype)
        kw = dict(KW, flip_kernel=flip)
        copies = [a.copy() for a in (x, w, b, dy)]
        fftconv.forward(x, w, b, algorithm=algorithm, **kw)
        fftconv.backward(dy, x, w, algorithm=algorithm, **kw)
        p = fftconv.plan(x.shape, w.shape, dtype=x.dtype, algorithm=algorithm, **kw)
        p.forward(x, w, b)
        p.backward(dy)
        for name, a, c in zip(("x", "w", "b", "dy"), (x, w, b, dy), copies):
            assert np.array_equal(a, c), f"{name} was modified in place"
