"""Hand-computed exact cases; expected arrays are written out literally."""

import numpy as np
import pytest

import fftconv
from conftest import ALGORITHMS

A = np.array


def _fwd(x, w, b=None, algorithm="fft", **kw):
    return fftconv.forward(A(x, dtype=float), A(w, dtype=float),
                           None if b is None else A(b, dtype=float), algorithm=algorithm, **kw)


def _eq(got, expected):
    # integer-valued data: float64 results must be exact up to FFT rounding (~1e-15)
    np.testing.assert_allclose(got, A(expected, dtype=float), rtol=0, atol=1e-12)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
class TestExact:
    def test_valid_1d(self, algorithm):
        y = _fwd([[[1, 2, 3, 4]]], [[[1, 0, -1]]], algorithm=algorithm)
        _eq(y, [[[-2, -2]]])

    def test_full_1d(self, algorithm):
        # xpad = [0, 1, 2, 3, 0]
        y = _fwd([[[1, 2, 3]]], [[[1, 1]]], padding="full", algorithm=algorithm)
        _eq(y, [[[1, 3, 5, 3]]])

    def test_same_even_kernel_correlation(self, algorithm):
        # total = 1, correlation: lo = 0, hi = 1 -> xpad = [1, 2, 3, 4, 0]
        y = _fwd([[[1, 2, 3, 4]]], [[[1, 2]]], padding="same", algorithm=algorithm)
        _eq(y, [[[5, 8, 11, 4]]])

    def test_same_even_kernel_flip(self, algorithm):
        # flip_kernel: lo = 1, hi = 0, w -> [2, 1]; equals scipy.signal.convolve(x, w, "same")
        y = _fwd([[[1, 2, 3, 4]]], [[[1, 2]]], padding="same", flip_kernel=True,
                 algorithm=algorithm)
        _eq(y, [[[1, 4, 7, 10]]])

    def test_same_even_kernel_2d(self, algorithm):
        x = [[[[1, 2, 3], [4, 5, 6], [7, 8, 9]]]]
        w = [[[[0, 1], [0, 0]]]]
        # correlation, lo = (0, 0): y[i, j] = x[i, j + 1]
        _eq(_fwd(x, w, padding="same", algorithm=algorithm),
            [[[[2, 3, 0], [5, 6, 0], [8, 9, 0]]]])
        # convolution, lo = (1, 1), flipped w = [[0, 0], [1, 0]]: y[i, j] = x[i, j - 1]
        _eq(_fwd(x, w, padding="same", flip_kernel=True, algorithm=algorithm),
            [[[[0, 1, 2], [0, 4, 5], [0, 7, 8]]]])

    def test_same_stride_even_kernel(self, algorithm):
        # n=5, s=2 -> out=3, total = 2*2 + 2 - 5 = 1
        x, w = [[[1, 2, 3, 4, 5]]], [[[1, 1]]]
        _eq(_fwd(x, w, padding="same", stride=2, algorithm=algorithm), [[[3, 7, 5]]])
        _eq(_fwd(x, w, padding="same", stride=2, flip_kernel=True, algorithm=algorithm),
            [[[1, 5, 9]]])

    def test_stride(self, algorithm):
        y = _fwd([[[1, 2, 3, 4, 5, 6, 7]]], [[[1, 1, 1]]], stride=2, algorithm=algorithm)
        _eq(y, [[[6, 12, 18]]])

    def test_stride_2d_per_axis(self, algorithm):
        x = np.arange(20.0).reshape(1, 1, 4, 5)
        w = [[[[1]]]]
        y = _fwd(x, w, stride=(2, 3), algorithm=algorithm)
        _eq(y, [[[[0, 3], [10, 13]]]])

    def test_dilation(self, algorithm):
        # ke = 4: y[i] = 2 x[i] - x[i + 3]
        y = _fwd([[[1, 2, 3, 4, 5, 6]]], [[[2, -1]]], dilation=3, algorithm=algorithm)
        _eq(y, [[[-2, -1, 0]]])

    def test_padding_pairs(self, algorithm):
        # xpad = [0, 0, 1, 2, 3]
        y = _fwd([[[1, 2, 3]]], [[[1, 2]]], padding=[(2, 0)], algorithm=algorithm)
        _eq(y, [[[0, 2, 5, 8]]])

    def test_padding_int_per_axis(self, algorithm):
        x = [[[[1, 2], [3, 4]]]]
        w = [[[[1]]]]
        # pad 1 row on each side of axis 0, nothing on axis 1
        y = _fwd(x, w, padding=(1, 0), algorithm=algorithm)
        _eq(y, [[[[0, 0], [1, 2], [3, 4], [0, 0]]]])

    def test_channel_sum(self, algorithm):
        y = _fwd([[[1, 2], [3, 4]]], [[[2], [3]]], algorithm=algorithm)
        _eq(y, [[[11, 16]]])

    def test_groups(self, algorithm):
        x = [[[1, 2, 3], [4, 5, 6]]]
        w = [[[1, 1]], [[1, -1]]]
        _eq(_fwd(x, w, groups=2, algorithm=algorithm), [[[3, 5], [-1, -1]]])
        # groups=1 mixes both channels: w (1, 2, 2)
        _eq(_fwd(x, [[[1, 1], [1, -1]]], algorithm=algorithm), [[[2, 4]]])

    def test_groups_two_outputs_per_group(self, algorithm):
        x = [[[1, 2], [10, 20]]]
        w = [[[1]], [[2]], [[3]], [[-1]]]  # outputs 0, 1 read channel 0; 2, 3 read channel 1
        _eq(_fwd(x, w, groups=2, algorithm=algorithm),
            [[[1, 2], [2, 4], [30, 60], [-10, -20]]])

    def test_bias(self, algorithm):
        y = _fwd([[[1, 2, 3, 4]], [[0, 0, 0, 0]]], [[[1, 0, -1]], [[1, 1, 1]]], [10, -1],
                 algorithm=algorithm)
        _eq(y, [[[8, 8], [5, 8]], [[10, 10], [-1, -1]]])

    def test_backward_1d(self, algorithm):
        dx, dw, db = fftconv.backward(A([[[1., 1]]]), A([[[1., 2, 3, 4]]]), A([[[1., 0, -1]]]),
                                      algorithm=algorithm)
        _eq(dx, [[[1, 1, -1, -1]]])
        _eq(dw, [[[3, 5, 7]]])
        _eq(db, [2])

    def test_backward_batch_sums_not_means(self, algorithm):
        dy = A([[[1.]], [[2.]]])
        x = A([[[1., 2]], [[3., 4]]])
        w = A([[[1., 1]]])
        dx, dw, db = fftconv.backward(dy, x, w, algorithm=algorithm)
        _eq(dx, [[[1, 1]], [[2, 2]]])
        _eq(dw, [[[1 + 6, 2 + 8]]])
        _eq(db, [3])

    def test_backward_flip(self, algorithm):
        # y0 = w1*x0 + w0*x1, y1 = w1*x1 + w0*x2
        x, w = A([[[1., 2, 3]]]), A([[[1., 2]]])
        _eq(fftconv.forward(x, w, flip_kernel=True, algorithm=algorithm), [[[4, 7]]])
        dx, dw, db = fftconv.backward(A([[[1., 0]]]), x, w, flip_kernel=True,
                                      algorithm=algorithm)
        _eq(dw, [[[2, 1]]])
        _eq(dx, [[[2, 1, 0]]])
        _eq(db, [1])

    def test_backward_stride(self, algorithm):
        # y = [x0 + x1 + x2, x2 + x3 + x4]
        dx, dw, db = fftconv.backward(A([[[1., 10]]]), A([[[1., 2, 3, 4, 5]]]),
                                      A([[[1., 1, 1]]]), stride=2, algorithm=algorithm)
        _eq(dx, [[[1, 1, 11, 10, 10]]])
        _eq(dw, [[[1 + 30, 2 + 40, 3 + 50]]])
        _eq(db, [11])

    def test_complex(self, algorithm):
        # no conjugation in forward; dx = conj(w) dy, dw = sum conj(x) dy (PyTorch convention)
        x = A([[[1j, 2]]])
        w = A([[[1 + 1j]]])
        y = fftconv.forward(x, w, algorithm=algorithm)
        np.testing.assert_allclose(y, [[[-1 + 1j, 2 + 2j]]], rtol=0, atol=1e-12)
        dx, dw, db = fftconv.backward(A([[[1 + 0j, 1]]]), x, w, algorithm=algorithm)
        np.testing.assert_allclose(dx, [[[1 - 1j, 1 - 1j]]], rtol=0, atol=1e-12)
        np.testing.assert_allclose(dw, [[[2 - 1j]]], rtol=0, atol=1e-12)
        np.testing.assert_allclose(db, [2], rtol=0, atol=1e-12)

    def test_3d_box(self, algorithm):
        x = np.ones((1, 1, 3, 3, 3))
        w = np.ones((1, 1, 2, 2, 2))
        y = fftconv.forward(x, w, padding="full", algorithm=algorithm)
        # count of kernel cells overlapping the box: product over axes of [1, 2, 2, 1]
        c = A([1, 2, 2, 1])
        _eq(y, (c[:, None, None] * c[None, :, None] * c[None, None, :])[None, None])
