"""Shared fixtures and helpers for the fftconv test suite."""

import os
import sys
import tracemalloc

import numpy as np
import pytest

# make ``import oracle`` work from every test module, whatever the rootdir / import mode
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

ALGORITHMS = ("fft", "direct", "overlap_add", "auto")

# CONVENTIONS section 4: relative to the largest reference magnitude
TOL = {
    np.dtype(np.float64): 1e-10,
    np.dtype(np.complex128): 1e-10,
    np.dtype(np.float32): 1e-5,
    np.dtype(np.complex64): 1e-5,
}


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: big sweeps, not needed for the fast default run")


@pytest.fixture
def rng():
    return np.random.default_rng(20240607)


def rel_err(a, ref):
    """max|a - ref| / max|ref| (absolute error if ref is all zeros)."""
    a = np.asarray(a)
    ref = np.asarray(ref)
    assert a.shape == ref.shape, f"shape {a.shape} != reference shape {ref.shape}"
    if ref.size == 0:
        return 0.0
    diff = np.max(np.abs(a.astype(np.complex128) - ref.astype(np.complex128)))
    scale = np.max(np.abs(ref))
    return float(diff / scale) if scale > 0 else float(diff)


def tol_for(dtype):
    dtype = np.dtype(dtype)
    if dtype not in TOL:
        raise KeyError(f"no tolerance for {dtype}")
    return TOL[dtype]


def assert_close(a, ref, dtype, what=""):
    """Assert ``a`` matches the float64 reference within the contract tolerance of ``dtype``.

    Also checks the shape and that the result is finite wherever the reference is.
    """
    a = np.asarray(a)
    ref = np.asarray(ref)
    assert a.shape == ref.shape, f"{what}: shape {a.shape} != expected {ref.shape}"
    assert np.all(np.isfinite(a)), f"{what}: non-finite values in result"
    err = rel_err(a, ref)
    tol = tol_for(dtype)
    assert err <= tol, f"{what}: relative error {err:.3e} > {tol:.0e} for {np.dtype(dtype)}"


PADDING_KINDS = ("valid", "same", "full", "int", "ints", "pairs")


def random_padding(rng, nd, kinds=PADDING_KINDS, high=3):
    """A random padding of one of ``kinds``: a string, an int, one int per axis or a
    ``(lo, hi)`` pair per axis, amounts below ``high``."""
    kind = rng.choice(list(kinds))
    if kind in ("valid", "same", "full"):
        return str(kind)
    if kind == "int":
        return int(rng.integers(0, high))
    if kind == "ints":
        return [int(v) for v in rng.integers(0, high, size=nd)]
    return [(int(a), int(b)) for a, b in rng.integers(0, high, size=(nd, 2))]


def random_options(rng, nd, groups):
    """Random layer options for the tiled paths' oracle sweeps: a padding (a mode,
    an int or per-axis pairs), strides and dilations of 1-2, ``groups``, a flip."""
    return dict(padding=["valid", "same", "full", 1, ((2, 0),) * nd][int(rng.integers(0, 5))],
                stride=tuple(int(v) for v in rng.integers(1, 3, nd)),
                dilation=tuple(int(v) for v in rng.integers(1, 3, nd)),
                groups=groups, flip_kernel=bool(rng.integers(0, 2)))


def random_array(rng, shape, dtype):
    """Standard normal data of ``dtype`` (complex: independent real and imaginary parts)."""
    dtype = np.dtype(dtype)
    if dtype.kind == "c":
        a = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    else:
        a = rng.standard_normal(shape)
    return a.astype(dtype)


def traced_step(x, w, **options):
    """``(plan, peak)``: a plan and the peak traced bytes of its second training
    step, counting every buffer the plan allocated since it was built (traced from
    the start; the first step's peak is not used: FFTW planning and wisdom export
    happen there), minus the step's inputs, outputs and kept ``x`` (all allowed
    beyond the budget)."""
    import fftconv
    tracemalloc.start()
    try:
        p = fftconv.plan(x.shape, w.shape, dtype=x.dtype, **options)
        dy = np.ones(p.out_shape, x.dtype)
        p.vjp(x, w)[1](dy)      # the first step; its pullback and results are dropped
        tracemalloc.reset_peak()
        y, pullback = p.vjp(x, w)
        g = pullback(dy)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    allowed = x.nbytes + w.nbytes + 2 * y.nbytes + g.dx.nbytes + g.dw.nbytes
    return p, peak - allowed - p._engine.kept_bytes
