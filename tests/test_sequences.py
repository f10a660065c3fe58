"""Nested sequences take the kind of the arrays beside them (CONVENTIONS §1): a
list passed with tensors, to a plan made ``like=`` a tensor or to a pullback of
tensors is read as that library's array, and the result is of that kind."""
import numpy as np
import pytest

import fftconv
from conftest import assert_close
from kinds import KINDS, Kind


@pytest.mark.parametrize("name", KINDS)
def test_a_list_takes_the_kind_of_the_other_operands(name, rng):
    kind = Kind(name)
    x, w, b = rng.standard_normal((2, 3, 16)), rng.standard_normal((4, 3, 5)), rng.standard_normal(4)
    ref = fftconv.forward(x, w, b, padding="same")
    y = fftconv.forward(kind.asarray(x), kind.asarray(w), b.tolist(), padding="same")
    assert kind.is_kind(y)
    assert_close(kind.to_numpy(y), ref, "float64", "y")


@pytest.mark.parametrize("name", KINDS)
def test_plans_and_pullbacks_read_lists_as_their_kind(name, rng):
    kind = Kind(name)
    x, w = rng.standard_normal((2, 3, 16)), rng.standard_normal((4, 3, 5))
    p = fftconv.plan(x.shape, w.shape, dtype=np.float64, like=kind.like())
    ref = fftconv.forward(x, w)
    for xs, ws in ((x.tolist(), kind.asarray(w)), (kind.asarray(x), w.tolist())):
        y = p.forward(xs, ws)
        assert kind.is_kind(y)
        assert_close(kind.to_numpy(y), ref, "float64", "y")
    y, pullback = fftconv.vjp(kind.asarray(x), kind.asarray(w))
    dy = rng.standard_normal(ref.shape)
    got = pullback(dy.tolist())
    want = fftconv.backward(dy, x, w)
    for a, b, what in zip(got, want, ("dx", "dw", "db")):
        assert kind.is_kind(a)
        assert_close(kind.to_numpy(a), b, "float64", what)
