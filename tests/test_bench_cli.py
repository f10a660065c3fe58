"""The bench's command line (``python -m bench SUBCOMMAND``) and its step timer."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.__main__ import SUBCOMMANDS, build_parser, command_line, main
from bench.timing import MIN_SAMPLES, alternating, time_step

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("argv, expected", [
    ([], ["run"]),
    (["--quick"], ["run", "--quick"]),
    (["--suite", "perf", "--no-plot"], ["run", "--suite", "perf", "--no-plot"]),
    (["profile", "N=1,C=1,size=8,k=3"], ["profile", "N=1,C=1,size=8,k=3"]),
    (["--suite", "dask", "--size", "64"], ["experiment", "dask", "--size", "64"]),
    (["run", "--suite=dask"], ["experiment", "dask"]),
])
def test_arguments_without_a_subcommand_are_run_s(argv, expected):
    assert command_line(argv) == expected


@pytest.mark.parametrize("command", [[name] for name in SUBCOMMANDS if name not in
                                     ("compare", "experiment")]
                         + [["compare", "precision"], ["compare", "torch"],
                            ["experiment", "threads"], ["experiment", "dask"]])
def test_every_subcommand_has_its_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(command + ["--help"])
    assert exit_.value.code == 0
    assert f"python -m bench {' '.join(command)}" in capsys.readouterr().out


def test_bad_arguments_are_usage_errors(capsys):
    with pytest.raises(SystemExit):
        main(["profile", "N=1,C=1,size=8"])
    assert "lacks k" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["experiment", "dask", "--kernel", "4"])
    assert "--kernel must be odd" in capsys.readouterr().err


def test_profile_subcommand_prints_the_parts(capsys):
    assert main(["profile", "N=1,C=2,size=16x16,k=3", "--steps", "2", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "transforms" in out and "step/floor" in out


def test_quick_runs_from_the_command_line_without_a_subcommand():
    out = subprocess.run([sys.executable, "-m", "bench", "--quick", "--no-plot", "--threads", "1",
                          "--dims", "1"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "suite quick" in out.stdout and "fft/floor" in out.stdout


def test_time_step_keeps_the_warm_up_outputs_and_moves_the_weights_untimed():
    calls = []
    w = np.zeros(1)
    taken, outputs = time_step(lambda w: calls.append(w[0]) or w[0], w, repeat=5)
    assert len(taken) == 5 and len(calls) == 6          # one warm-up, five samples
    assert outputs == calls[0] and calls == sorted(calls) and calls[0] > 0


def test_time_step_takes_at_least_min_samples_and_counts_a_long_first_call():
    w = np.zeros(1)
    assert len(time_step(lambda w: None, w, repeat=10, budget=1e9)[0]) == 10
    assert len(time_step(lambda w: None, w, repeat=1, budget=0.0)[0]) == 1
    assert len(time_step(lambda w: None, w, repeat=10, budget=0.0)[0]) == MIN_SAMPLES
    calls = []
    taken, _ = time_step(lambda w: calls.append(1), w, repeat=10, budget=0.0,
                         first_call_counts=True)
    assert len(taken) == MIN_SAMPLES and len(calls) == MIN_SAMPLES   # the warm-up counted


def test_alternating_reverses_the_order_every_round():
    assert [k for _, k in alternating("ab", 3)] == ["a", "b", "b", "a", "a", "b"]


def test_calibrate_fits_copies_of_the_rates_and_leaves_the_library_s_alone():
    from bench import calibrate
    from fftconv import costs
    before = dict(costs.RATES)
    rates = calibrate.current_rates()
    units = [{"a": 1.0, "b": 0.0}, {"a": 0.0, "b": 2.0}, {"a": 1.0, "b": 1.0}]
    rows = [("fft", u, 3.0 * u["a"] + 5.0 * u["b"], None) for u in units]
    fitted = calibrate.fit(rows, {"a": 0.0, "b": 0.0})
    assert fitted == pytest.approx({"a": 3.0, "b": 5.0})
    assert calibrate.price("fft", {"a": 2.0}, {"fftconv": fitted}) == pytest.approx(6.0)
    rates["fftconv"].clear()
    assert costs.RATES == before


def test_decide_prices_every_algorithm_at_the_partition_it_estimates():
    """The kernel sweep's and the decisions suite's model figures (the sweep crashed when
    overlap-add's work took a Tiling and was given the estimate's tile)."""
    from bench import runner
    from bench.cases import parse_case
    decision = runner.decide(parse_case("N=2,C=4,size=64x64,k=5"), "float32")
    assert set(decision.work) == set(decision.estimates) >= {"fft", "direct", "overlap_add"}
    assert all(units for units in decision.work.values())
