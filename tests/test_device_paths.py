"""The code a GPU backend runs, run here on the CPU.

CuPy arrays and CUDA tensors are backends whose ``host`` is false
(``fftconv.backends``): their scaling exponents stay 0-d arrays on the device
(``fftconv.scaling``), the channel products run as one batched GEMM over every
frequency (``fftconv.contraction``), work is not split over threads, and no
value is read back inside a pass.  CuPy's backend is numpy's class
(``NumpyLike``) with another library; the torch backend is one class for CPU
and CUDA.  These tests run numpy and CPU tensors with ``host`` switched off,
so that every one of those branches runs in CI, against the oracle, and check
that nothing inside a pass reads a value back (``Arrays.to_float``).
"""
import numpy as np
import pytest

import fftconv
from fftconv.backends import numpy_arrays, torch_tensors
from oracle import oracle_backward, oracle_forward

from conftest import assert_close

torch = pytest.importorskip("torch")

#: (x shape, w shape, layer keywords): the branches a device backend takes.
LAYERS = [
    ((2, 4, 20, 18), (6, 2, 3, 4), dict(padding="same", groups=2)),
    ((2, 3, 33), (4, 3, 5), dict(padding=(2, 1), stride=2, dilation=2)),
    ((1, 4, 40), (4, 1, 40), dict(padding="causal", groups=4, flip_kernel=True)),
    ((2, 2, 9, 9), (3, 2, 3, 3), dict(padding="same", padding_mode="circular")),
    ((2, 2, 9, 10), (3, 2, 3, 3), dict(padding=1, padding_mode="reflect",
                                       layout="channels_last")),
    ((2, 3, 7, 6), (3, 2, 3, 3), dict(padding=1, stride=2, output_padding=1, transposed=True)),
]


@pytest.fixture(params=["numpy", "torch"])
def device_like(request, monkeypatch):
    """A backend as a GPU's: ``host`` false; reading a value back fails the test."""
    kind = numpy_arrays.NumpyArrays if request.param == "numpy" else torch_tensors.TorchArrays
    monkeypatch.setattr(kind, "host", False)

    def no_read(self, a):
        raise AssertionError("a value was read back to the host inside a pass")
    monkeypatch.setattr(kind, "to_float", no_read)
    fftconv.clear_caches()
    yield (lambda a: a) if request.param == "numpy" else torch.from_numpy
    fftconv.clear_caches()


def _host(a):
    return a.numpy() if hasattr(a, "numpy") else np.asarray(a)


@pytest.mark.parametrize("algorithm", ["fft", "overlap_add"])
@pytest.mark.parametrize("x_shape, w_shape, kw", LAYERS)
@pytest.mark.parametrize("dtype", ["float32", "complex128"])
def test_device_paths_match_the_oracle(device_like, x_shape, w_shape, kw, dtype, algorithm, rng):
    as_kind = device_like
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    if np.dtype(dtype).kind == "c":
        x = x + 1j * rng.standard_normal(x_shape)
        w = w + 1j * rng.standard_normal(w_shape)
    x, w = x.astype(dtype), w.astype(dtype)
    if kw.get("layout") == "channels_last":
        x_cl, w_cl = np.moveaxis(x, 1, -1).copy(), np.moveaxis(w, (0, 1), (-1, -2)).copy()
    else:
        x_cl, w_cl = x, w
    y, pullback = fftconv.vjp(as_kind(x_cl), as_kind(w_cl), algorithm=algorithm, **kw)
    ref_kw = {k: v for k, v in kw.items() if k != "layout"}
    y_ref = fftconv.forward(x, w, algorithm="direct", **ref_kw)
    y_cf = np.moveaxis(_host(y), -1, 1) if kw.get("layout") == "channels_last" else _host(y)
    assert_close(y_cf, y_ref, dtype, "y")
    dy = rng.standard_normal(y_ref.shape).astype(dtype)
    dy_kind = np.moveaxis(dy, 1, -1).copy() if kw.get("layout") == "channels_last" else dy
    dx, dw, db = pullback(as_kind(dy_kind))
    ref = fftconv.backward(dy, x, w, algorithm="direct", **ref_kw)
    dx_cf = np.moveaxis(_host(dx), -1, 1) if kw.get("layout") == "channels_last" else _host(dx)
    dw_cf = (np.moveaxis(_host(dw), (-1, -2), (0, 1)) if kw.get("layout") == "channels_last"
             else _host(dw))
    assert_close(dx_cf, ref.dx, dtype, "dx")
    assert_close(dw_cf, ref.dw, dtype, "dw")
    assert_close(_host(db), ref.db, dtype, "db")


def test_the_oracle_agrees_with_the_direct_reference(rng):
    """The reference above is direct on numpy; it equals the independent oracle."""
    x, w = rng.standard_normal((2, 4, 20, 18)), rng.standard_normal((6, 2, 3, 4))
    y = fftconv.forward(x, w, padding="same", groups=2, algorithm="direct")
    assert_close(y, oracle_forward(x, w, padding="same", groups=2), "float64", "y")
    dy = rng.standard_normal(y.shape)
    dx, dw, db = fftconv.backward(dy, x, w, padding="same", groups=2, algorithm="direct")
    rdx, rdw, rdb = oracle_backward(dy, x, w, padding="same", groups=2)
    assert_close(dx, rdx, "float64", "dx")
    assert_close(dw, rdw, "float64", "dw")


@pytest.mark.parametrize("scale", [3e36, 1e-36])
def test_device_scaling_keeps_extreme_values_exact(device_like, scale, rng):
    """Exponents that stay on the device scale by exact powers of two: operands near
    either end of float32's range, whose exact results are in range, give the
    float64 result to float32's accuracy, without overflow."""
    as_kind = device_like
    x = (rng.standard_normal((2, 3, 24, 24)) * scale).astype(np.float32)
    w = rng.standard_normal((4, 3, 5, 5)).astype(np.float32)
    y, pullback = fftconv.vjp(as_kind(x), as_kind(w), padding="same", algorithm="fft")
    ref = oracle_forward(x.astype(np.float64), w.astype(np.float64), padding="same")
    assert_close(_host(y), ref, "float32", "y")
    dy = (rng.standard_normal(ref.shape) / scale).astype(np.float32)  # dw = x * dy: in range
    dx, dw, _ = pullback(as_kind(dy))
    rdx, rdw, _ = oracle_backward(dy.astype(np.float64), x.astype(np.float64),
                                  w.astype(np.float64), padding="same")
    assert_close(_host(dx), rdx, "float32", "dx")
    assert_close(_host(dw), rdw, "float32", "dw")


def test_weight_spectrum_reused_on_a_device(device_like, rng):
    """Unchanged weights are compared on the device and their spectrum reused: a
    second step transforms x, dy and the results only (five transforms, not six)."""
    as_kind = device_like
    x, w = rng.standard_normal((2, 3, 16, 16)), rng.standard_normal((4, 3, 3, 3))
    p = fftconv.plan(x.shape, w.shape, dtype=np.float64, padding="same", algorithm="fft",
                     like=as_kind(x))
    x, w = as_kind(x), as_kind(w)
    y, pb = p.vjp(x, w)
    pb(y)
    before = dict(p.transform_counts)
    y, pb = p.vjp(x, w)
    pb(y)
    after = p.transform_counts
    assert after["forward"] - before["forward"] == 2      # x and dy, not w
    assert after["inverse"] - before["inverse"] == 3      # y, dx, dw
    w[0, 0, 0, 0] += 1.0                                  # changed in place: noticed
    p.vjp(x, w)
    assert p.transform_counts["forward"] - after["forward"] == 2   # x and w
