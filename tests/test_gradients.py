"""Gradients: the adjoint identity and central finite differences (CONVENTIONS section 3)."""

import numpy as np
import pytest

import fftconv
from conftest import ALGORITHMS, random_array

CONFIGS = [
    dict(xs=(2, 3, 11), ws=(4, 3, 3), kw=dict()),
    dict(xs=(2, 4, 9), ws=(6, 2, 4), kw=dict(padding="same", stride=2, groups=2)),
    dict(xs=(1, 2, 8, 7), ws=(3, 2, 2, 3), kw=dict(padding="same", flip_kernel=True,
                                                    stride=(2, 1), dilation=(1, 2))),
    dict(xs=(3, 3, 6, 5), ws=(3, 1, 3, 2), kw=dict(padding="full", groups=3)),
    dict(xs=(2, 2, 5, 6, 4), ws=(2, 2, 2, 3, 2), kw=dict(padding=[(1, 0), (0, 2), (2, 2)],
                                                         stride=(1, 2, 3))),
    dict(xs=(1, 2, 4, 3, 4, 3), ws=(2, 1, 2, 2, 1, 2), kw=dict(padding=1, groups=2,
                                                               flip_kernel=True)),
]
IDS = ["1d", "1d-same-s2-g2", "2d-same-flip-sd", "2d-full-dw", "3d-pairs-s", "4d-flip-g2"]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("dtype", ["float64", "complex128"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_adjoint_identity(cfg, dtype, algorithm):
    rng = np.random.default_rng(11)
    x = random_array(rng, cfg["xs"], dtype)
    w = random_array(rng, cfg["ws"], dtype)
    y = fftconv.forward(x, w, None, algorithm=algorithm, **cfg["kw"])
    g = random_array(rng, y.shape, dtype)
    dx, dw, db = fftconv.backward(g, x, w, algorithm=algorithm, **cfg["kw"])
    _assert_adjoint(g, y, x, w, dx, dw, 1e-10)
    # db is the adjoint of broadcasting b: <g, 1 b> == <db, b>
    b = random_array(rng, (w.shape[0],), dtype)
    yb = fftconv.forward(x, w, b, algorithm=algorithm, **cfg["kw"])
    err = abs(np.vdot(g, yb - y) - np.vdot(db, b))
    assert err <= 1e-10 * np.abs(g).sum() * (np.abs(yb).max() + np.abs(y).max())


def _assert_adjoint(g, y, x, w, dx, dw, tol):
    """<g, y> == <dx, x> == <dw, w>, up to the contract tolerance ``tol`` (relative to the largest
    magnitude of each array) propagated through the inner products."""
    c = np.complex128
    g, y, x, w, dx, dw = (a.astype(c) for a in (g, y, x, w, dx, dw))
    lhs = np.vdot(g, y)
    bound_y = tol * np.abs(y).max() * np.abs(g).sum()
    err_x = abs(np.vdot(dx, x) - lhs)
    err_w = abs(np.vdot(dw, w) - lhs)
    assert err_x <= bound_y + tol * np.abs(dx).max() * np.abs(x).sum(), (
        f"<dx, x> - <g, y> = {err_x:.3e} (|<g, y>| = {abs(lhs):.3e})")
    assert err_w <= bound_y + tol * np.abs(dw).max() * np.abs(w).sum(), (
        f"<dw, w> - <g, y> = {err_w:.3e} (|<g, y>| = {abs(lhs):.3e})")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("dtype", ["float32", "complex64"])
def test_adjoint_identity_single_precision(dtype, algorithm):
    cfg = CONFIGS[2]
    rng = np.random.default_rng(12)
    x = random_array(rng, cfg["xs"], dtype)
    w = random_array(rng, cfg["ws"], dtype)
    y = fftconv.forward(x, w, algorithm=algorithm, **cfg["kw"])
    g = random_array(rng, y.shape, dtype)
    dx, dw, _ = fftconv.backward(g, x, w, algorithm=algorithm, **cfg["kw"])
    assert y.dtype == dx.dtype == dw.dtype == np.dtype(dtype)
    _assert_adjoint(g, y, x, w, dx, dw, 1e-5)


def _loss(x, w, b, g, algorithm, kw):
    # real scalar loss Re<g, y>; for real data this is sum(g * y)
    y = fftconv.forward(x, w, b, algorithm=algorithm, **kw)
    return float(np.real(np.vdot(g, y)))


def _fd(fun, arr, idx, h, complex_):
    """Central difference of fun w.r.t. arr[idx]; for complex data dL/dRe + i dL/dIm, which is
    PyTorch's gradient convention (gradient with respect to the conjugate)."""
    def at(delta):
        a = arr.copy()
        a[idx] += delta
        return fun(a)
    d = (at(h) - at(-h)) / (2 * h)
    if complex_:
        d = d + 1j * (at(1j * h) - at(-1j * h)) / (2 * h)
    return d


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("dtype", ["float64", "complex128"])
@pytest.mark.parametrize("cfg", CONFIGS[:5], ids=IDS[:5])
def test_finite_differences(cfg, dtype, algorithm):
    complex_ = dtype == "complex128"
    rng = np.random.default_rng(13)
    kw = cfg["kw"]
    x = random_array(rng, cfg["xs"], dtype)
    w = random_array(rng, cfg["ws"], dtype)
    b = random_array(rng, (w.shape[0],), dtype)
    y = fftconv.forward(x, w, b, algorithm=algorithm, **kw)
    g = random_array(rng, y.shape, dtype)
    dx, dw, db = fftconv.backward(g, x, w, algorithm=algorithm, **kw)
    # the loss is linear in each argument separately, so the central difference has no truncation
    # error for any h; h = 1 (the data scale) keeps the rounding error ~ eps * |L| / h tiny
    h = 1.0
    tol = 1e-10
    for name, arr, grad, fun in (
        ("x", x, dx, lambda a: _loss(a, w, b, g, algorithm, kw)),
        ("w", w, dw, lambda a: _loss(x, a, b, g, algorithm, kw)),
        ("b", b, db, lambda a: _loss(x, w, a, g, algorithm, kw)),
    ):
        scale = max(np.abs(grad).max(), 1.0)
        flat = rng.choice(arr.size, size=min(arr.size, 5), replace=False)
        for f in flat:
            idx = np.unravel_index(f, arr.shape)
            num = _fd(fun, arr, idx, h, complex_)
            assert abs(num - grad[idx]) <= tol * scale, (
                f"d{name}{idx}: finite difference {num} vs backward {grad[idx]}")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_finite_differences_stride_leaves_untouched_inputs_at_zero(algorithm):
    # stride > effective kernel: some inputs are never read, so their gradient must be exactly 0
    x = np.random.default_rng(14).standard_normal((1, 1, 10))
    w = np.array([[[1.0, -2.0]]])
    y = fftconv.forward(x, w, stride=4, algorithm=algorithm)  # reads x[0:2], x[4:6], x[8:10]
    dx, _, _ = fftconv.backward(np.ones_like(y), x, w, stride=4, algorithm=algorithm)
    unread = [2, 3, 6, 7]
    assert np.all(np.abs(dx[0, 0, unread]) <= 1e-12)
    np.testing.assert_allclose(dx[0, 0, [0, 1, 4, 5, 8, 9]], [1, -2, 1, -2, 1, -2], atol=1e-12)
