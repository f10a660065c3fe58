"""Transform buffers are reused across calls: no call may see a previous call's data.

A :class:`fftconv.transforms.ForwardTransform` zeroes its buffer once and then
writes only its operand's placement; a call with fewer rows than the last one
zeroes the placement of the rows the last one filled (the last chunk of a
batch).  These tests change the operand and its row count between calls, on
both FFT libraries of numpy arrays, and compare with spectra and layers
computed from scratch (numpy's FFT of an explicitly zero-padded array; the
float64 direct oracle).
"""
import numpy as np
import pytest

import fftconv
from fftconv import backends, transforms
from fftconv.algorithms import fft as fftpath
from conftest import assert_close
from oracle import oracle_backward, oracle_forward

BACKENDS = ("pyfftw", "scipy")


def _padded_spectrum(operand, rows, fft_shape, placement):
    """numpy's spectrum of ``operand`` placed at ``placement`` in zeros, ``rows`` rows."""
    signal = np.zeros((rows,) + operand.shape[1:2] + fft_shape)
    signal[(slice(0, operand.shape[0]), slice(None)) + placement] = operand
    return np.fft.rfftn(signal, axes=(-2, -1))


@pytest.mark.parametrize("backend", BACKENDS)
def test_forward_transform_keeps_no_rows_of_an_earlier_call(backend, rng):
    """Full, short, shorter, full again and short again: each spectrum is that of
    the operand alone, the rows it leaves out transform to zero."""
    fft_shape, placement = (9, 8), (slice(2, 7), slice(1, 5))
    with fftconv.using(backend=backend, threads=1):
        t = transforms.ForwardTransform((3, 2), fft_shape, np.float64, fftconv.get_settings(),
                                        backends.host())
        for rows in (3, 2, 1, 3, 2):
            operand = rng.standard_normal((rows, 2, 5, 4))
            got = np.array(t(operand, placement))
            assert np.allclose(got, _padded_spectrum(operand, 3, fft_shape, placement),
                               rtol=0, atol=1e-12), rows


@pytest.mark.parametrize("backend", BACKENDS)
def test_forward_transform_with_a_new_placement_clears_the_old_one(backend, rng):
    """A transform given another placement after a short call holds nothing of the
    old placement (the engines never do this; the transform stays correct)."""
    fft_shape = (9, 8)
    with fftconv.using(backend=backend, threads=1):
        t = transforms.ForwardTransform((3, 2), fft_shape, np.float64, fftconv.get_settings(),
                                        backends.host())
        t(rng.standard_normal((3, 2, 5, 4)), (slice(0, 5), slice(0, 4)))
        t(rng.standard_normal((1, 2, 5, 4)), (slice(0, 5), slice(0, 4)))
        operand, placement = rng.standard_normal((2, 2, 5, 4)), (slice(3, 8), slice(4, 8))
        got = np.array(t(operand, placement))
        assert np.allclose(got, _padded_spectrum(operand, 3, fft_shape, placement),
                           rtol=0, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_chunked_plan_gives_each_call_its_own_results(backend, dtype, rng):
    """A plan whose batch runs in chunks of unequal size (the last one short) gives,
    call after call with new data, the oracle's results for that call's data."""
    kw = dict(padding="same", stride=(2, 1))
    x_shape, w_shape = (5, 3, 13, 11), (4, 3, 3, 4)
    with fftconv.using(backend=backend, threads=1):
        whole = fftconv.plan(x_shape, w_shape, algorithm="fft", dtype=dtype, **kw)
        budget = fftpath.workspace_bytes(whole._engine.geom, dtype, 3)
        p = fftconv.plan(x_shape, w_shape, algorithm="fft", dtype=dtype,
                         max_workspace_bytes=budget, **kw)
        assert p.chunk == 3  # chunks of 3 and 2 samples
        for scale in (1.0, -3.0, 0.5):
            x = (scale * rng.standard_normal(x_shape)).astype(dtype)
            w = rng.standard_normal(w_shape).astype(dtype)
            b = rng.standard_normal(4).astype(dtype)
            y = p.forward(x, w, b)
            assert_close(y, oracle_forward(x, w, b, **kw), dtype, "y")
            dy = rng.standard_normal(y.shape).astype(dtype)
            dx, dw, db = p.backward(dy)
            rdx, rdw, rdb = oracle_backward(dy, x, w, **kw)
            assert_close(dx, rdx, dtype, "dx")
            assert_close(dw, rdw, dtype, "dw")
            assert_close(db, rdb, dtype, "db")
