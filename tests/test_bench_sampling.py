"""The bench's sampling rules (``bench/timing.py``) under an artificial stall.

Every timing here runs on a fake ``time.perf_counter``: a step advances the clock
by a known number of seconds, and a stall is one call that advances it by many
more, so the assertions are about which sample was taken and reported and which
competitor was flagged, never about the machine's real speed.
"""
import dataclasses
import time

import numpy as np
import pytest

import fftconv
from bench import report, runner
from bench.__main__ import run_main
from bench.cases import parse_case
from bench.competitors import COMPETITORS, Prepared
from bench.suites import Suite
from bench.timing import MIN_SAMPLES, OUTLIER, enough, plan_step, spread_out, time_step
from fftconv import transforms

STEP = 1 / 64        # seconds of an ordinary step on the fake clock (exact in binary)
STALL = 5.0          # seconds of the stalled call: far beyond the budget and OUTLIER * STEP


class Clock:
    """A fake ``time.perf_counter``: only :meth:`advance` moves it."""

    def __init__(self):
        self.now = 1024.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float):
        self.now += seconds


@pytest.fixture
def clock(monkeypatch):
    fake = Clock()
    monkeypatch.setattr(time, "perf_counter", fake)   # fftconv.timing reads time.perf_counter
    return fake


def stalling_step(clock, durations):
    """``run(w)`` whose call ``i`` takes ``durations(i)`` fake seconds; the calls' list."""
    calls = []

    def run(w):
        clock.advance(durations(len(calls)))
        calls.append(float(w[0]))
        return len(calls) - 1

    return run, calls


def stall_at(index, step=STEP, stall=STALL):
    return lambda i: stall if i == index else step


def test_the_stalled_sample_is_not_the_figure_and_is_flagged(clock):
    run, calls = stalling_step(clock, stall_at(2))          # call 0 is the warm-up
    taken, first = time_step(run, np.zeros(1), repeat=5, budget=60.0)
    assert len(taken) == 5 and len(calls) == 6 and first == 0
    assert taken[1] == pytest.approx(STALL)                   # the stall is the second sample
    assert min(taken) == pytest.approx(STEP)                  # ... and not the figure
    assert spread_out(taken)


def test_min_samples_are_taken_even_when_a_stall_uses_up_the_budget(clock):
    run, calls = stalling_step(clock, stall_at(1))          # the first timed sample stalls
    taken, _ = time_step(run, np.zeros(1), repeat=5, budget=1.0)
    assert len(taken) == MIN_SAMPLES and taken[0] == pytest.approx(STALL)
    assert min(taken) == pytest.approx(STEP)


def test_a_stalled_first_call_of_a_step_that_builds_nothing_is_not_the_only_sample(clock):
    """direct, torch, scipy: a warm-up over the budget counts as a sample, but sampling
    goes on; here it was a stall, so the usual minimum follows (before, the stalled
    warm-up was returned as the only sample: the issue's direct at k7 slower than k15)."""
    run, calls = stalling_step(clock, stall_at(0))
    taken, _ = time_step(run, np.zeros(1), repeat=5, budget=1.0, first_call_counts=True)
    assert taken[0] == pytest.approx(STALL) and len(taken) == MIN_SAMPLES
    assert min(taken) == pytest.approx(STEP) and spread_out(taken)


@pytest.mark.parametrize("first_call_counts, calls_made", [(True, 3), (False, 4)])
def test_a_long_step_still_takes_min_samples(clock, first_call_counts, calls_made):
    """Every call over the budget: MIN_SAMPLES samples all the same (a step that stalls
    on two calls in a row still gets a third chance); a warm-up that builds nothing
    is the first of them."""
    run, calls = stalling_step(clock, lambda i: 2.0)
    taken, _ = time_step(run, np.zeros(1), repeat=5, budget=1.0,
                         first_call_counts=first_call_counts)
    assert taken == pytest.approx([2.0] * MIN_SAMPLES) and len(calls) == calls_made
    assert not spread_out(taken)


def test_the_warm_up_is_never_a_sample_of_a_step_that_plans(clock):
    run, calls = stalling_step(clock, stall_at(0, stall=9.0))   # 9 s of planning
    taken, _ = time_step(run, np.zeros(1), repeat=5, budget=1.0)
    assert len(calls) == len(taken) + 1 and taken == pytest.approx([STEP] * 5)


@pytest.mark.skipif(fftconv.get_settings().backend != "pyfftw",
                    reason="plans FFTW transforms (the scipy.fft backend plans nothing)")
def test_fftw_planning_happens_in_the_warm_up_only(monkeypatch):
    """A real fftconv plan: every FFTW transform is planned during the untimed first call."""
    fftconv.clear_caches()          # no engine of this layer left from another test
    planned_in = []
    run, w, _ = plan_step(parse_case("N=2,C=2,size=16x16,k=3"), "float32", "fft")
    calls = []
    real_fftw = transforms._fftw

    def counting_fftw(*args, **kwargs):
        planned_in.append(len(calls) - 1)   # the call under way
        return real_fftw(*args, **kwargs)

    monkeypatch.setattr(transforms, "_fftw", counting_fftw)

    def counted(w):
        calls.append(None)
        return run(w)

    taken, _ = time_step(counted, w, repeat=4)
    assert len(taken) == 4 and len(calls) == 5
    assert planned_in and set(planned_in) == {0}     # all during call 0, the warm-up


def test_enough_and_spread_out_rules():
    assert not enough([5.0], repeat=5, budget=1.0)                      # one stall: go on
    assert enough([5.0, 0.01, 0.01], repeat=5, budget=1.0)              # minimum reached
    assert not enough([2.0, 2.0], repeat=5, budget=1.0)                 # a long step too
    assert enough([0.01], repeat=1, budget=None)                        # --repeat 1
    assert not enough([0.01] * 4, repeat=5, budget=None)
    assert not spread_out([1.0]) and not spread_out([1.0, OUTLIER])
    assert spread_out([1.0, OUTLIER * 1.01])


def fake_competitor(key, clock, durations):
    """Competitor ``key`` running its real step, each call taking ``durations(i)`` on
    the fake clock (its real duration does not count)."""
    real = COMPETITORS[key]

    def prepare(case, data, threads):
        prepared = real.prepare(case, data, threads)
        calls = []

        def run(w):
            out = prepared.run(w)
            clock.advance(durations(len(calls)))
            calls.append(None)
            return out

        return Prepared(run, prepared.reset, prepared.choice, prepared.same_as)

    return dataclasses.replace(real, prepare=prepare)


def test_the_outlier_is_flagged_in_the_printed_table(clock, monkeypatch, capsys):
    monkeypatch.setitem(COMPETITORS, "fft", fake_competitor("fft", clock, lambda i: STEP))
    monkeypatch.setitem(COMPETITORS, "direct",
                        fake_competitor("direct", clock, stall_at(3, step=2 * STEP)))
    case = parse_case("N=1,C=2,size=16x16,k=3")
    suite = Suite("stall", (case,), competitors=("fft", "direct"))
    options = runner.Options(threads=1, repeat=5, budget=1.0, memory=False)
    assert run_main(suite, options)
    out = capsys.readouterr().out
    table = out[out.index("case "):]
    row = next(line for line in table.splitlines() if line.startswith(case.name))
    # fft ms, direct ms (flagged), direct/fft
    assert row.split()[-3:] == [report.fmt_ms(STEP), report.fmt_ms(2 * STEP) + "*", "2.00"]
    assert f"{report.OUTLIER_MARK} samples spread out" in table
    assert "rerun on a quiet machine" in table
    assert f"1 marked, the widest {case.name} direct at 160.0x" in table
    assert f"({report.OUTLIER_MARK})" in out[:out.index("case ")]   # explained in the legend
