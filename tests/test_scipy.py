"""flip_kernel=True against scipy.signal.convolve, flip_kernel=False against
scipy.signal.correlate.

scipy's correlate(mode="same") centres an even kernel the other way round from torch; the
contract (CONVENTIONS section 2) follows torch for correlation, so for even kernels the "same"
correlation is compared with scipy's *full* correlation cropped at the torch offset
``lo = total // 2`` (and it is asserted that this is scipy's "same" shifted by one sample).
"""

import itertools

import numpy as np
import pytest
import scipy.signal as ss

import fftconv
from conftest import ALGORITHMS, assert_close

SHAPES = {1: [(13,), (8,)], 2: [(9, 8), (6, 7)], 3: [(6, 5, 7)]}
KERNELS = {1: [(3,), (4,), (1,), (2,)], 2: [(3, 3), (2, 4), (4, 1), (3, 2)],
           3: [(3, 3, 3), (2, 2, 4), (1, 3, 2)]}
CASES = [(nd, xs, ks) for nd in (1, 2, 3) for xs in SHAPES[nd] for ks in KERNELS[nd]]
CASE_IDS = [f"{nd}d-x{'x'.join(map(str, xs))}-k{'x'.join(map(str, ks))}" for nd, xs, ks in CASES]


def _corr_same_torch(x, w):
    """Correlation with CONVENTIONS "same" (lo = total // 2) from scipy's full correlation."""
    full = ss.correlate(x, w, mode="full", method="direct")
    sl = tuple(slice((k - 1) - (k - 1) // 2, (k - 1) - (k - 1) // 2 + n)
               for n, k in zip(x.shape, w.shape))
    return full[sl]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("mode", ["valid", "same", "full"])
@pytest.mark.parametrize("nd,xs,ks", CASES, ids=CASE_IDS)
def test_convolve_single_channel(nd, xs, ks, mode, algorithm):
    rng = np.random.default_rng(sum(xs) * 7 + sum(ks))
    x, w = rng.standard_normal(xs), rng.standard_normal(ks)
    y = fftconv.forward(x[None, None], w[None, None], padding=mode, flip_kernel=True,
                        algorithm=algorithm)
    ref = ss.convolve(x, w, mode=mode, method="direct")
    assert_close(y[0, 0], ref, np.float64, f"convolve {mode}")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("mode", ["valid", "same", "full"])
@pytest.mark.parametrize("nd,xs,ks", CASES, ids=CASE_IDS)
def test_correlate_single_channel(nd, xs, ks, mode, algorithm):
    rng = np.random.default_rng(sum(xs) * 5 + sum(ks))
    x, w = rng.standard_normal(xs), rng.standard_normal(ks)
    y = fftconv.forward(x[None, None], w[None, None], padding=mode, flip_kernel=False,
                        algorithm=algorithm)[0, 0]
    if mode == "same":
        ref = _corr_same_torch(x, w)
        if all(k % 2 for k in ks):
            # odd kernels: the conventions agree with scipy exactly
            assert_close(y, ss.correlate(x, w, mode="same", method="direct"), np.float64,
                         "correlate same (odd)")
    else:
        ref = ss.correlate(x, w, mode=mode, method="direct")
    assert_close(y, ref, np.float64, f"correlate {mode}")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_even_kernel_same_correlation_is_scipy_shifted_by_one(algorithm):
    x = np.arange(1.0, 9.0)
    w = np.array([1.0, -2.0, 0.5, 3.0])
    y = fftconv.forward(x[None, None], w[None, None], padding="same", algorithm=algorithm)[0, 0]
    scipy_same = ss.correlate(x, w, mode="same", method="direct")
    full = ss.correlate(x, w, mode="full", method="direct")
    # total = 3: torch/conventions lo = 1, scipy lo = 2 -> ours is scipy's shifted left by one
    assert_close(y[:-1], scipy_same[1:], np.float64, "shifted")
    assert_close(y, full[2:10], np.float64, "cropped full")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("mode", ["valid", "same", "full"])
@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("nd,groups", [(1, 1), (2, 1), (2, 2), (3, 1)])
def test_multichannel_sums(nd, groups, flip, mode, algorithm):
    rng = np.random.default_rng(nd * 10 + groups)
    n_batch, c_in, c_out = 2, 4, 6
    xs = (9, 8, 6)[:nd]
    ks = (3, 2, 4)[:nd]
    x = rng.standard_normal((n_batch, c_in) + xs)
    w = rng.standard_normal((c_out, c_in // groups) + ks)
    b = rng.standard_normal(c_out)
    y = fftconv.forward(x, w, b, padding=mode, groups=groups, flip_kernel=flip,
                        algorithm=algorithm)
    cg, og = c_in // groups, c_out // groups
    ref = None
    for n, o in itertools.product(range(n_batch), range(c_out)):
        g = o // og
        acc = b[o]
        for c in range(cg):
            xc, wc = x[n, g * cg + c], w[o, c]
            if flip:
                acc = acc + ss.convolve(xc, wc, mode=mode, method="direct")
            elif mode == "same":
                acc = acc + _corr_same_torch(xc, wc)
            else:
                acc = acc + ss.correlate(xc, wc, mode=mode, method="direct")
        if ref is None:
            ref = np.zeros((n_batch, c_out) + acc.shape)
        ref[n, o] = acc
    assert_close(y, ref, np.float64, "multichannel")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("mode", ["valid", "same", "full"])
def test_complex_convolve_2d(mode, algorithm):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((8, 7)) + 1j * rng.standard_normal((8, 7))
    w = rng.standard_normal((3, 2)) + 1j * rng.standard_normal((3, 2))
    y = fftconv.forward(x[None, None], w[None, None], padding=mode, flip_kernel=True,
                        algorithm=algorithm)[0, 0]
    assert_close(y, ss.convolve(x, w, mode=mode, method="direct"), np.complex128, "convolve")
    # scipy.correlate conjugates its second argument, fftconv (like torch) does not
    y = fftconv.forward(x[None, None], w[None, None], padding="valid", algorithm=algorithm)[0, 0]
    assert_close(y, ss.correlate(x, np.conj(w), mode="valid", method="direct"),
                 np.complex128, "correlate")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_float32_against_scipy(algorithm):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((20, 17)).astype(np.float32)
    w = rng.standard_normal((5, 4)).astype(np.float32)
    y = fftconv.forward(x[None, None], w[None, None], padding="same", flip_kernel=True,
                        algorithm=algorithm)[0, 0]
    assert y.dtype == np.float32
    ref = ss.convolve(x.astype(np.float64), w.astype(np.float64), mode="same", method="direct")
    assert_close(y, ref, np.float32, "float32 convolve")
