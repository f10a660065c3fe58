"""Pure integer geometry: padding, output sizes, FFT sizes, placements and crops."""
import itertools
import math

import pytest

from fftconv.geometry import (LENGTH_SLACK, effective_kernel, fast_fft_shape, fft_length, is_smooth,
                              length_penalty, make_geometry,
                              next_fast_length, output_length, resolve_padding, same_padding)


@pytest.mark.parametrize("n, k, s, d", list(itertools.product(range(1, 12), range(1, 6), range(1, 4),
                                                              range(1, 3))))
@pytest.mark.parametrize("flip", [False, True])
def test_same_padding_gives_ceil_n_over_s(n, k, s, d, flip):
    lo, hi = same_padding(n, k, s, d, flip)
    assert lo >= 0 and hi >= 0
    assert output_length(n, lo, hi, k, s, d) == math.ceil(n / s)
    total = max((math.ceil(n / s) - 1) * s + effective_kernel(k, d) - n, 0)
    assert lo + hi == total
    # correlation puts the odd element after the input, convolution before it
    assert lo == (total - total // 2 if flip else total // 2)


def test_same_padding_even_kernel_hand_values():
    assert same_padding(10, 4, 1, 1, flip_kernel=False) == (1, 2)  # torch / TF SAME
    assert same_padding(10, 4, 1, 1, flip_kernel=True) == (2, 1)   # scipy.signal.convolve same
    assert same_padding(10, 3, 2, 1, False) == (0, 1)              # out 5: (5-1)*2+3-10 = 1
    assert same_padding(3, 5, 1, 2, False) == (4, 4)               # ke = 9


def test_resolve_padding_forms():
    n, k, s, d = (10, 8), (3, 4), (1, 1), (1, 2)
    assert resolve_padding("valid", n, k, s, d, False) == ((0, 0), (0, 0))
    assert resolve_padding("full", n, k, s, d, False) == ((2, 2), (6, 6))
    assert resolve_padding(2, n, k, s, d, False) == ((2, 2), (2, 2))
    assert resolve_padding((1, 3), n, k, s, d, False) == ((1, 1), (3, 3))
    assert resolve_padding(((1, 0), (0, 2)), n, k, s, d, False) == ((1, 0), (0, 2))
    assert resolve_padding("same", n, k, s, d, False) == ((1, 1), (3, 3))


def test_output_length_table():
    # (n + lo + hi - ke) // s + 1
    assert output_length(10, 0, 0, 3, 1, 1) == 8
    assert output_length(10, 2, 2, 3, 1, 1) == 12      # full
    assert output_length(10, 0, 0, 3, 2, 1) == 4
    assert output_length(10, 0, 0, 3, 1, 3) == 4       # ke = 7
    assert output_length(3, 0, 0, 5, 1, 1) < 1


def test_next_fast_length_is_smallest_7_smooth():
    for n in range(1, 600):
        m = next_fast_length(n)
        assert m >= n and is_smooth(m)
        assert all(not is_smooth(v) for v in range(n, m))
        e = next_fast_length(n, even=True)
        assert e % 2 == 0 and is_smooth(e) and e >= n
        assert all(not (is_smooth(v) and v % 2 == 0) for v in range(n, e))


def test_valid_fft_size_is_padded_input_not_input_plus_kernel():
    g = make_geometry((2, 3, 128, 100), (4, 3, 31, 31), "valid", (1, 1), (1, 1), 1, False, True)
    assert g.fft_shape == (128, 100)
    assert g.spectrum_shape == (128, 51)
    g = make_geometry((2, 3, 128), (4, 3, 31), "full", (1,), (1,), 1, False, True)
    assert g.fft_shape == (fft_length(128 + 60, even=True),)


def test_placements_and_crops():
    g = make_geometry((1, 1, 10), (1, 1, 3), ((2, 1),), (2,), (3,), 1, False, True)
    assert g.padded_size == (13,)
    assert g.effective_kernel == (7,)
    assert g.out_size == ((13 - 7) // 2 + 1,) == (4,)
    # L is a multiple of lcm(s, d) = 6 and even (real last axis): 6 * 3 = 18 >= 13
    assert g.fft_shape == (18,)
    assert g.stride_fft_shape == (9,) and g.dilation_fft_shape == (6,)
    assert g.x_placement == (slice(2, 12),)
    assert g.w_placement == (slice(0, 3),)   # on the dilation grid: no zeros
    assert g.dy_placement == (slice(0, 4),)  # on the stride grid: no zeros
    assert g.y_crop == g.dy_placement and g.dx_crop == g.x_placement and g.dw_crop == g.w_placement
    # everything fits on its grid
    assert g.out_size[0] <= g.stride_fft_shape[0] and g.kernel[0] <= g.dilation_fft_shape[0]


@pytest.mark.parametrize("padded, unit, even", [(p, u, e) for p in (1, 7, 13, 100, 127, 1000)
                                                for u in (1, 2, 3, 4, 6, 11) for e in (False, True)])
def test_fft_length_is_a_fast_multiple_of_the_unit(padded, unit, even):
    n = fft_length(padded, even=even, unit=unit)
    assert n >= padded and n % unit == 0 and is_smooth(n // unit)
    assert not even or n % 2 == 0
    smaller = [m for m in range(unit, n, unit) if m >= padded and is_smooth(m // unit)
               and (not even or m % 2 == 0)]
    assert smaller == []


def test_geometry_is_hashable_and_complete():
    a = make_geometry((2, 4, 9, 9), (4, 2, 3, 3), "same", (2, 1), (1, 2), 2, True, True)
    b = make_geometry((2, 4, 9, 9), (4, 2, 3, 3), "same", (2, 1), (1, 2), 2, True, True)
    c = make_geometry((2, 4, 9, 9), (4, 2, 3, 3), "same", (2, 1), (1, 2), 2, False, True)
    assert a == b and hash(a) == hash(b) and a != c
    assert a.x_shape == (2, 4, 9, 9) and a.w_shape == (4, 2, 3, 3)
    assert a.y_shape == (2, 4, 5, 9)


@pytest.mark.parametrize("padded", [1, 2, 7, 13, 60, 113, 134, 250, 1000, 4099])
@pytest.mark.parametrize("unit", [1, 2, 3])
@pytest.mark.parametrize("even", [False, True])
def test_fast_fft_shape_keeps_the_length_rules(padded, unit, even):
    (n,) = fast_fft_shape((padded,), (even,), (unit,))
    assert n >= padded and n % unit == 0 and is_smooth(n // unit)
    assert not (even and n % 2)
    assert n <= LENGTH_SLACK * fft_length(padded, even, unit)


def test_fast_fft_shape_prefers_fast_lengths_to_small_ones():
    # "same" k7 on 128x128 pads to 134: 135 = 3**3 * 5 is odd and slow, 144 = 2**4 * 3**2 fast
    assert fft_length(134) == 135
    assert fast_fft_shape((134, 134), (False, True), (1, 1)) == (144, 144)
    # small gains keep the smallest shape (memory): 60 stays 60, not 64
    assert fast_fft_shape((100, 60), (False, True), (1, 1)) == (100, 60)
    assert length_penalty(128) == 0 and length_penalty(135) > length_penalty(144) > 0
