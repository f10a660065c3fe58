"""The one-time ``fftconv.PlanningNotice`` before FFTW plans a large transform.

The tests run with FFTW_ESTIMATE (root ``conftest.py``), which never notifies; these
select FFTW_MEASURE with a short time limit and lower the size threshold, so the
transforms stay small and quick to plan.  FFTW's wisdom lives for the whole test
process, so each test plans shapes no other test plans (odd, prime-ish lengths).
"""
import warnings

import numpy as np
import pytest

import fftconv
from fftconv import transforms
from fftconv.backends import host

pytest.importorskip("pyfftw")

MEASURE = dict(backend="pyfftw", planner_effort="FFTW_MEASURE", planning_timelimit=0.5)


@pytest.fixture
def small_threshold(monkeypatch):
    """Every transform counts as large; no notice given yet in this process."""
    monkeypatch.setattr(transforms, "PLANNING_NOTICE_ELEMENTS", 1)
    monkeypatch.setattr(transforms, "_noticed", False)


def plan_transform(fft_shape, batch=(1, 2)):
    return transforms.ForwardTransform(batch, fft_shape, np.float32, fftconv.get_settings(),
                                       host())


def notices(fn):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn()
    return [w for w in caught if issubclass(w.category, fftconv.PlanningNotice)]


def test_the_notice_says_how_long_and_how_to_make_it_cheaper_once_per_process(small_threshold):
    assert issubclass(fftconv.PlanningNotice, UserWarning)
    assert "PlanningNotice" in fftconv.__all__
    with fftconv.using(**MEASURE):
        first = notices(lambda: plan_transform((53, 47)))
        later = notices(lambda: [plan_transform((59, 43)), plan_transform((61,), (3,))])
    assert len(first) == 1 and later == []
    message = str(first[0].message)
    for words in ("up to 0.5 s per transform", "FFTW_MEASURE", "saved as FFTW wisdom",
                  'fftconv.configure(planner_effort="FFTW_ESTIMATE")', "planning_timelimit",
                  "FFTCONV_PLANNER_EFFORT", "FFTCONV_PLANNING_TIME", "1x2x53x47"):
        assert words in message
    assert first[0].filename == __file__          # points at the call that planned


def test_no_notice_when_the_wisdom_already_holds_the_transform(small_threshold, monkeypatch):
    """Planned once (no notice owed), planned again over the same buffers (FFTW's wisdom
    depends on their alignment too) with the notice owed: the wisdom has it, no notice."""
    with fftconv.using(**dict(MEASURE, planning_timelimit=30.0)):   # never cut short
        monkeypatch.setattr(transforms, "_noticed", True)
        t = plan_transform((67, 41))
        monkeypatch.setattr(transforms, "_noticed", False)
        assert notices(t._plan_fftw) == []
        assert not transforms._noticed               # still owed for a shape it lacks
    x = np.random.default_rng(0).standard_normal((1, 2, 67, 41)).astype(np.float32)
    spectrum = t(x, (slice(None),) * 2)              # the plan taken from the wisdom works
    np.testing.assert_allclose(np.asarray(spectrum), np.fft.rfftn(x, axes=(-2, -1)),
                               rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("settings", [dict(MEASURE, planner_effort="FFTW_ESTIMATE"),
                                      dict(MEASURE, planning_timelimit=0.01)])
def test_no_notice_when_planning_cannot_take_seconds(small_threshold, settings):
    with fftconv.using(**settings):
        assert notices(lambda: plan_transform((71, 37))) == []


def test_the_tests_own_settings_never_notify():
    """The suite's FFTW_ESTIMATE (root conftest.py) plans even a large transform silently."""
    big = transforms.PLANNING_NOTICE_ELEMENTS
    assert fftconv.get_settings().planner_effort == "FFTW_ESTIMATE"
    with fftconv.using(backend="pyfftw"):
        assert notices(lambda: plan_transform((big // 2 + 2,), (2,))) == []
