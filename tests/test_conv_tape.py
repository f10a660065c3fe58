"""Issue 22, item 4: ``fftconv.Conv``'s tape.  Evaluation without ``grad=False``
keeps every call's pullback; the layer warns once when the tape reaches
``tape_warning`` calls, naming ``grad=False`` and ``clear_tape()``, and never cuts
the tape itself (the calls on it may still be differentiated)."""
import warnings

import numpy as np
import pytest

import fftconv
from fftconv.nn import TAPE_WARNING, TapeWarning


def small():
    return fftconv.Conv(1, 1, (3,), padding=1, dtype=np.float64, rng=0)


X = np.ones((1, 1, 8))


def test_evaluation_without_grad_false_warns_once_and_says_what_to_do():
    conv = small()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(TAPE_WARNING - 1):
            conv(X)
    with pytest.warns(TapeWarning, match=rf"fftconv\.Conv \(Conv1d\(1, 1, kernel_size=\(3,\)\)\) "
                                         rf"holds {TAPE_WARNING} calls waiting for their backward "
                                         rf"pass, .*grad=False.*conv\.clear_tape\(\)"):
        conv(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")     # once per layer
        for _ in range(10):
            conv(X)
        for _ in range(1000):              # grad=False keeps nothing and never warns
            conv(X, grad=False)
    assert conv.pending == TAPE_WARNING + 10


def test_the_tape_is_never_cut_so_every_call_can_still_be_differentiated():
    """An unrolled recurrence keeps more calls than the warning's threshold: the
    gradients are exact (the layer is linear in x: each backward of ones gives
    the same dx), and the tape empties call by call."""
    conv = small()
    conv.tape_warning = None               # the user says: all of them will be differentiated
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ys = [conv(X * k) for k in range(TAPE_WARNING + 20)]
    assert conv.pending == len(ys)
    dx = [conv.backward(np.ones_like(y)) for y in ys]
    assert conv.pending == 0
    np.testing.assert_allclose(dx[0], dx[-1])
    # dw sums x_k's correlations with ones: sum_k k times that of X
    ref = fftconv.backward(np.ones_like(ys[0]), X, conv.w, padding=1).dw
    np.testing.assert_allclose(conv.dw, ref * sum(range(len(ys))), rtol=1e-12)


def test_clear_tape_drops_the_pending_calls_and_rearms_the_warning():
    conv = small()
    conv.tape_warning = 3
    conv(X), conv(X)
    conv.dw[...] = 7.0
    assert conv.clear_tape() == 2 and conv.pending == 0
    assert (conv.dw == 7.0).all()          # the gradients are left alone
    with pytest.raises(RuntimeError, match=r"fftconv\.Conv\.backward: no call of the layer is "
                                           r"waiting"):
        conv.backward(np.ones((1, 1, 8)))
    conv(X), conv(X)
    with pytest.warns(TapeWarning, match="holds 3 calls"):
        conv(X)


def test_need_dx_false_skips_dx_and_grad_false_keeps_nothing():
    conv = small()
    y = conv(X, grad=False)
    assert conv.pending == 0
    conv(X)
    assert conv.backward(np.ones_like(y), need_dx=False) is None
    assert conv.dw.any() and conv.pending == 0
