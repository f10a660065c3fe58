"""Seed-style training loop: a conv layer fitted to a constant target must converge.

Gradients are batch sums (CONVENTIONS section 3), so the loop divides by N=3 itself.
"""

import numpy as np
import pytest

import fftconv
import oracle
from conftest import ALGORITHMS, rel_err

MAX_STEPS = 25
LR = 0.001


def _data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 3, 28, 28))
    w = rng.standard_normal((4, 3, 3, 3))
    b = np.zeros(4)
    target = np.ones((3, 4, 26, 26))
    return x, w, b, target


def _train(step_fn, max_steps=MAX_STEPS, stop=True):
    """Returns (steps taken, converged, y, w, b)."""
    x, w, b, target = _data()
    y = None
    for step in range(1, max_steps + 1):
        y, (dx, dw, db) = step_fn(x, w, b, target)
        assert y.shape == target.shape
        if stop and np.allclose(y, target):
            return step, True, y, w, b
        assert dx.shape == x.shape and dw.shape == w.shape and db.shape == b.shape
        w = w - LR * dw / 3
        b = b - LR * db / 3
    return max_steps, False, y, w, b


def _fft_step(algorithm):
    def step(x, w, b, target):
        y = fftconv.forward(x, w, b, algorithm=algorithm)
        dy = y - target
        return y, fftconv.backward(dy, x, w, algorithm=algorithm)
    return step


def _assert_converged(steps, converged, y, what):
    assert converged, (f"{what}: no convergence within {steps} steps "
                       f"(max |y - target| = {np.abs(y - 1).max():.3e})")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_training_functions(algorithm):
    steps, converged, y, _, _ = _train(_fft_step(algorithm))
    _assert_converged(steps, converged, y, f"forward/backward ({algorithm})")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_training_plan(algorithm):
    x, w, _, _ = _data()
    p = fftconv.plan(x.shape, w.shape, dtype=np.float64, algorithm=algorithm)

    def step(x, w, b, target):
        y = p.forward(x, w, b)
        return y, p.backward(y - target)

    steps, converged, y, _, _ = _train(step)
    _assert_converged(steps, converged, y, f"plan ({algorithm})")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_training_trajectory_matches_oracle(algorithm):
    """Ten steps with the engine land on the same weights as ten steps with the oracle."""
    def oracle_step(x, w, b, target):
        y = oracle.oracle_forward(x, w, b)
        return y, oracle.oracle_backward(y - target, x, w)

    _, _, _, w_ref, b_ref = _train(oracle_step, max_steps=10, stop=False)
    _, _, _, w, b = _train(_fft_step(algorithm), max_steps=10, stop=False)
    assert rel_err(w, w_ref) <= 1e-10
    assert rel_err(b, b_ref) <= 1e-10
