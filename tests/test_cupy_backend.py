"""The CuPy backend's own code, run in CI on a numpy stand-in for CuPy
(``fake_cupy``): arrays in are the stand-in's, arrays out are too, the FFTs go
through ``cupy.fft``, memory through CuPy's queries, and the results equal
numpy's.  On a GPU, ``tests/test_gpu.py`` runs the same layers on real CuPy."""

import numpy as np
import pytest

import fftconv
from fftconv import backends

import fake_cupy
from conftest import assert_close


@pytest.fixture
def cupy(monkeypatch):
    cp = fake_cupy.use(monkeypatch)
    fftconv.clear_caches()
    yield cp
    fftconv.clear_caches()


LAYERS = [
    ((2, 4, 20, 18), (6, 2, 3, 4), dict(padding="same", groups=2), "fft"),
    ((2, 3, 33), (4, 3, 5), dict(padding=(2, 1), stride=2, dilation=2), "fft"),
    ((1, 4, 40), (4, 1, 40), dict(padding="causal", groups=4, flip_kernel=True), "fft"),
    ((2, 2, 9, 9), (3, 2, 3, 3), dict(padding="same", padding_mode="circular"), "fft"),
    ((2, 2, 9, 10), (3, 2, 3, 3), dict(padding=1, padding_mode="reflect"), "overlap_add"),
    ((2, 3, 7, 6), (3, 2, 3, 3), dict(padding=1, stride=2, output_padding=1, transposed=True),
     "fft"),
]


@pytest.mark.parametrize("dtype", ["float32", "float64", "complex64"])
@pytest.mark.parametrize("x_shape, w_shape, kw, algorithm", LAYERS)
def test_cupy_backend_equals_numpy(cupy, x_shape, w_shape, kw, algorithm, dtype, rng):
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    y_ref = fftconv.forward(x, w, algorithm=algorithm, **kw)
    dy = rng.standard_normal(y_ref.shape).astype(dtype)
    ref = fftconv.backward(dy, x, w, algorithm=algorithm, **kw)
    xc, wc, dyc = cupy.asarray(x), cupy.asarray(w), cupy.asarray(dy)
    assert isinstance(backends.arrays_of(xc), backends.CupyArrays)
    y, pullback = fftconv.vjp(xc, wc, algorithm=algorithm, **kw)
    grads = pullback(dyc)
    for got in (y, *grads):
        assert isinstance(got, fake_cupy.ndarray)
    assert_close(y.get(), y_ref, dtype, "y")
    for name, got, want in zip("dx dw db".split(), grads, ref):
        assert_close(got.get(), want, dtype, name)


def test_cupy_plans_run_on_the_device_and_refuse_numpy(cupy, rng):
    x = cupy.asarray(rng.standard_normal((2, 3, 16, 16)).astype(np.float32))
    w = cupy.asarray(rng.standard_normal((4, 3, 3, 3)).astype(np.float32))
    p = fftconv.plan(x.shape, w.shape, dtype=np.float32, padding="same", like=x)
    assert isinstance(p.arrays, backends.CupyArrays)
    assert "CuPy array on cuda:0" in repr(p)
    y = p.forward(x, w)
    assert isinstance(y, fake_cupy.ndarray)
    with pytest.raises(TypeError, match=r"^Plan\.forward: x is a numpy array but this runs on "
                                        r"a CuPy array on cuda:0"):
        p.forward(x.get(), w)
    assert p.arrays.device_memory() == (1 << 34) + (1 << 20)   # free + CuPy's pool


def test_cupy_and_numpy_operands_do_not_mix(cupy, rng):
    x = cupy.asarray(rng.standard_normal((1, 1, 8)))
    with pytest.raises(TypeError, match=r"^fftconv\.forward: x is a CuPy array on cuda:0 but "
                                        r"w is a numpy array"):
        fftconv.forward(x, np.ones((1, 1, 3)))
