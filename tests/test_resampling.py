"""Stride and dilation as spectrum identities: tiling = zero-upsampling,
folding = decimation, on full and half (real) spectra, in 1-3 D."""
import numpy as np
import pytest

from fftconv.backends import host
from fftconv.resampling import fold, tile

HOST = host()

CASES = [((12,), (3,)), ((10,), (5,)), ((9,), (3,)), ((12, 10), (2, 5)), ((9, 15), (3, 3)),
         ((6, 14), (3, 2)), ((10, 9), (5, 3)), ((8, 7), (1, 1)), ((4, 6, 8), (2, 3, 4)),
         ((6, 4, 9), (1, 2, 3))]


def transforms(real, nd):
    axes = tuple(range(-nd, 0))
    if real:
        return (lambda a: np.fft.rfftn(a, axes=axes)), (lambda a, s: np.fft.irfftn(a, s, axes=axes))
    return (lambda a: np.fft.fftn(a, axes=axes)), (lambda a, s: np.fft.ifftn(a, s, axes=axes))


@pytest.mark.parametrize("real", [False, True])
@pytest.mark.parametrize("fine, factors", CASES)
def test_tile_is_zero_upsampling(fine, factors, real):
    rng = np.random.default_rng(0)
    coarse = tuple(n // f for n, f in zip(fine, factors))
    v = rng.standard_normal((2, 3) + coarse)
    if not real:
        v = v + 1j * rng.standard_normal(v.shape)
    u = np.zeros((2, 3) + fine, v.dtype)
    u[(Ellipsis,) + tuple(slice(None, None, f) for f in factors)] = v
    fwd, _ = transforms(real, len(fine))
    np.testing.assert_allclose(tile(HOST, fwd(v), coarse, fine, real, axis0=2), fwd(u), rtol=0, atol=1e-12)


@pytest.mark.parametrize("real", [False, True])
@pytest.mark.parametrize("fine, factors", CASES)
def test_fold_is_decimation(fine, factors, real):
    rng = np.random.default_rng(1)
    coarse = tuple(n // f for n, f in zip(fine, factors))
    y = rng.standard_normal((3,) + fine)
    if not real:
        y = y + 1j * rng.standard_normal(y.shape)
    fwd, inv = transforms(real, len(fine))
    frequency_major = np.moveaxis(fwd(y), 0, -1)  # (*freq, batch), as the engine keeps it
    folded = np.moveaxis(fold(HOST, frequency_major, fine, coarse, real, axis0=0), -1, 0)
    z = inv(folded, coarse)
    np.testing.assert_allclose(z, y[(Ellipsis,) + tuple(slice(None, None, f) for f in factors)],
                               rtol=0, atol=1e-12)
