"""The long-convolution rows of the perf suite (issue 21): the ``torch.fft``
reference agrees with fftconv's causal depthwise layer, and a plan that does not
fit the row's workspace budget is reported as an unmet target, not a crash."""
import pytest

pytest.importorskip("torch")

from bench.cases import Case, parse_case  # noqa: E402
from bench.competitors import COMPETITORS, available, long_convolution  # noqa: E402
from bench.runner import Options, run_case  # noqa: E402
from bench.suites import LONG_CASES, SUITES, Target, check_targets  # noqa: E402
from bench.timing import Progress  # noqa: E402


def _long(budget=None, n=512, h=4):
    return Case(2, h, h, (n,), (n,), "causal", (("flip_kernel", True), ("groups", h)),
                max_workspace_bytes=budget)


def _run(case):
    comps = [COMPETITORS[k] for k in ("fft", "auto", "torchfft")]
    with Progress(len(comps), "test") as progress:
        return run_case(case, comps, Options(repeat=1, budget=0.01, memory=False), progress)


def test_long_rows_in_perf_suite():
    perf = SUITES["perf"]
    assert set(LONG_CASES) <= set(perf.cases)
    assert [c.size[0] for c in LONG_CASES] == [8192, 16384, 2 ** 20]
    assert LONG_CASES[2].max_workspace_bytes == 256 << 20
    assert all(long_convolution(c) for c in LONG_CASES)
    assert "torchfft" in perf.competitors and "torchfft" not in [c.key for c in available()]
    assert parse_case("N=4,C=64,size=8192,k=8192,padding=causal,groups=64,"
                      "flip_kernel=true") == LONG_CASES[0]


def test_torchfft_reference_matches_fftconv():
    result = _run(_long())
    assert not result.failed
    assert max(result.errors["torchfft"].values()) < 1e-5


def test_plan_over_budget_is_an_unmet_target():
    result = _run(_long(budget=1))
    assert "fft" in result.failed and "auto" in result.failed
    assert "torchfft" in result.seconds
    (check,) = check_targets((Target("torchfft", "auto", 1.5, cases=(result.case,)),), [result])
    assert check.ratio is None
    assert check.verdict.startswith("NO: auto failed: ")
