"""The pruned transforms of weights and weight gradients (``transforms.PrunedForward``,
``transforms.PrunedInverse``).

They transform one axis at a time over only the lines that hold data (forward) or
that the crop keeps (inverse).  These tests compare them with numpy's whole FFT of
the zero-padded operand, or numpy's whole inverse FFT cropped, for real and complex
dtypes, 2-D and 3-D grids and corners of few or many points, call after call with
new data (their stage buffers are reused).
"""
import numpy as np
import pytest

import fftconv
from fftconv import backends, transforms

CASES = [((4, 3), (16, 12), (5, 4)), ((2, 3), (10, 9, 8), (3, 4, 2)), ((6,), (32, 30), (15, 30)),
         ((2, 2), (12, 12, 12), (1, 1, 1))]


def _settings():
    return fftconv.get_settings()


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex64, np.complex128])
@pytest.mark.parametrize("batch, grid, kept", CASES)
def test_pruned_inverse_equals_the_whole_inverse_cropped(dtype, batch, grid, kept, rng):
    with fftconv.using(backend="pyfftw", threads=1):
        crop = tuple(slice(0, k) for k in kept)
        if not transforms.prunable(batch, grid, crop, dtype, _settings(), backends.host()):
            pytest.skip("the crop keeps too much to prune")
        t = transforms.PrunedInverse(batch, grid, dtype, _settings(), backends.host(), crop)
        real = np.dtype(dtype).kind == "f"
        axes = tuple(range(len(batch), len(batch) + len(grid)))
        for _ in range(3):
            spec = rng.standard_normal(t.spectrum.shape) + 1j * rng.standard_normal(t.spectrum.shape)
            t.spectrum[...] = spec
            want = (np.fft.irfftn(spec, s=grid, axes=axes) if real
                    else np.fft.ifftn(spec, axes=axes))[(Ellipsis,) + crop]
            got = t(crop)
            assert got.dtype == np.dtype(dtype) and got.shape == want.shape
            tol = 1e-5 if np.dtype(dtype) in (np.float32, np.complex64) else 1e-12
            assert np.abs(got - want).max() <= tol * np.abs(want).max()


def test_pruned_inverse_takes_the_bytes_of_the_whole_one():
    """Its stages live in the signal buffer of the whole transform: the same bytes."""
    with fftconv.using(backend="pyfftw", threads=1):
        crop = (slice(0, 5), slice(0, 4))
        t = transforms.PrunedInverse((4, 3), (16, 12), np.float32, _settings(), backends.host(), crop)
        whole = transforms.InverseTransform((4, 3), (16, 12), np.float32, _settings(),
                                            backends.host(), frequency_major=False)
        assert t.nbytes == whole.nbytes
        assert t.signal.nbytes == whole.signal.nbytes
        for stage in t.stages + [t.result]:
            assert np.shares_memory(stage, t.signal)


def test_only_fftw_and_small_crops_prune():
    host = backends.host()
    with fftconv.using(backend="scipy"):
        assert not transforms.prunable((4,), (16, 16), (slice(0, 3),) * 2, np.float32, _settings(), host)
    with fftconv.using(backend="pyfftw"):
        s = _settings()
        assert transforms.prunable((4,), (16, 16), (slice(0, 3),) * 2, np.float32, s, host)
        assert not transforms.prunable((4,), (64,), (slice(0, 3),), np.float32, s, host)  # 1-D
        assert not transforms.prunable((4,), (16, 16), (slice(0, 12), slice(0, 3)), np.float32, s, host)
        assert not transforms.prunable((4,), (16, 16), ([0, 5, 9], slice(0, 3)), np.float32, s, host)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex64, np.complex128])
@pytest.mark.parametrize("batch, grid, kept", CASES)
def test_pruned_forward_equals_the_whole_transform(dtype, batch, grid, kept, rng):
    """The pruned forward transform of a corner operand (a kernel), call after call
    with new operands, equals numpy's transform of it zero-padded to the grid."""
    with fftconv.using(backend="pyfftw", threads=1):
        placement = tuple(slice(0, k) for k in kept)
        if not transforms.prunable_forward(batch, grid, placement, dtype, _settings(),
                                           backends.host()):
            pytest.skip("the operand fills too much to prune")
        t = transforms.PrunedForward(batch, grid, dtype, _settings(), backends.host(), placement)
        real = np.dtype(dtype).kind == "f"
        axes = tuple(range(len(batch), len(batch) + len(grid)))
        for _ in range(3):
            operand = rng.standard_normal(batch + tuple(kept))
            if not real:
                operand = operand + 1j * rng.standard_normal(operand.shape)
            operand = operand.astype(dtype)
            padded = np.zeros(batch + tuple(grid), dtype)
            padded[(Ellipsis,) + placement] = operand
            want = np.fft.rfftn(padded, axes=axes) if real else np.fft.fftn(padded, axes=axes)
            got = np.array(t(operand, placement))
            tol = 1e-5 if np.dtype(dtype) in (np.float32, np.complex64) else 1e-12
            assert np.abs(got - want).max() <= tol * np.abs(want).max()


def _lines_transformed(grid, kept):
    """Oracle for the pruned work: follow which points hold data, axis by axis from
    the last (the forward order), and count each axis's 1-D transforms of a line
    that holds any, times ``n log2 n`` for that axis's length ``n``."""
    filled = np.zeros(grid, bool)
    filled[tuple(slice(0, k) for k in kept)] = True
    work = 0.0
    for axis in reversed(range(len(grid))):
        lines = filled.any(axis=axis)
        work += lines.sum() * grid[axis] * np.log2(grid[axis])
        filled = np.broadcast_to(np.expand_dims(lines, axis), grid).copy()
    return work


@pytest.mark.parametrize("grid, kept", [((16, 12), (5, 4)), ((10, 9, 8), (3, 4, 2)),
                                        ((32, 30), (32, 30)), ((12, 12, 12), (1, 1, 1))])
def test_pruned_work_counts_the_lines_that_hold_data(grid, kept):
    """``costs.pruned_transform_work`` is the whole transform's work scaled by the
    share of 1-D line transforms a pruned transform runs (complex data: no halving)."""
    from fftconv import costs
    whole = sum(costs.transform_work(3, grid, real=False).values())
    pruned = sum(costs.pruned_transform_work(3, grid, kept, real=False).values())
    share = _lines_transformed(grid, kept) / _lines_transformed(grid, grid)
    assert pruned == pytest.approx(whole * share, rel=1e-12)


def test_the_cost_model_prices_weight_transforms_pruned_where_the_engine_prunes():
    """The FFT path's weight transforms cost less in the model exactly when FFTW
    plans run them pruned (a small kernel in a large grid, two or more axes)."""
    from fftconv import costs
    from fftconv.algorithms import fft
    for x_shape, w_shape, prunes in [((2, 4, 64, 64), (4, 4, 5, 5), True),
                                     ((2, 4, 256), (4, 4, 5), False),
                                     ((2, 4, 12, 12), (4, 4, 9, 9), False)]:
        geom = fftconv.plan(x_shape, w_shape, dtype=np.float32, algorithm="fft").geometry
        rows, grid = geom.out_channels * geom.in_channels, geom.dilation_fft_shape
        whole = 2 * sum(costs.transform_work(rows, grid, geom.real).values())
        with fftconv.using(backend="pyfftw"):
            engine_prunes = transforms.prunable_forward(
                (geom.out_channels, geom.in_channels), grid, geom.w_placement, np.float32,
                _settings(), backends.host())
            fftw = sum(fft.weight_transform_work(geom, np.float32).values())
        with fftconv.using(backend="scipy"):
            scipy = sum(fft.weight_transform_work(geom, np.float32).values())
        assert engine_prunes == prunes
        assert scipy == pytest.approx(whole)
        assert (fftw < 0.8 * whole) if prunes else fftw == pytest.approx(whole)
