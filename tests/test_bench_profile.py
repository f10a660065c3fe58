"""The bench's per-part profile (``python -m bench profile``), cases, runner and comparisons."""
import numpy as np
import pytest

from bench.cases import parse_case
from bench.profile import PARTS, profile, profile_text
from fftconv import contraction, transforms


def test_parse_case_takes_padding():
    case = parse_case("N=2,C=3,O=4,size=20x18,k=5,padding=same")
    assert case.padding == "same" and case.out_size == (20, 18) and case.y_shape == (2, 4, 20, 18)
    assert parse_case("N=1,C=1,size=20,k=5,padding=full").out_size == (24,)
    assert parse_case("N=1,C=1,size=20,k=5").out_size == (16,)
    with pytest.raises(ValueError, match="padding must be valid, same, full, causal or ints"):
        parse_case("N=1,C=1,size=20,k=5,padding=reflect")


def test_profile_parts_add_up_and_wrappers_are_removed():
    before = (transforms.ForwardTransform.__call__, contraction.forward_product,
              transforms._fftw)
    case = parse_case("N=2,C=3,O=4,size=24x20,k=5,padding=same")
    result = profile(case, "float32", threads=1, steps=3)
    assert set(result["parts"]) == set(PARTS)
    parts = result["parts"]
    assert all(v >= 0 for k, v in parts.items() if k != "other")
    assert parts["transforms"] > 0 and parts["products"] > 0 and parts["placement"] > 0
    assert result["floor"][0] > 0 and result["step"][0] > 0
    assert result["fft_shape"] is not None and result["algorithm"] == "fft"
    assert (transforms.ForwardTransform.__call__, contraction.forward_product,
            transforms._fftw) == before
    text = profile_text(case, result)
    assert "transforms" in text and "step/floor" in text


def test_profile_counts_the_pruned_transforms_copies_as_placement_and_crops():
    """The pruned weight transform's stage copies are placement and the pruned inverse's
    cuts are crops, with their FFT executions as transforms; nothing left to "other"."""
    from bench.profile import PartTimer, instrumented
    import fftconv
    from fftconv import backends
    grid, kept = (32, 30), (slice(0, 5), slice(0, 4))
    with fftconv.using(backend="pyfftw", threads=1):
        settings, host = fftconv.get_settings(), backends.host()
        timer = PartTimer()
        with instrumented(timer):
            fwd = transforms.PrunedForward((6,), grid, np.float32, settings, host, kept)
            inv = transforms.PrunedInverse((6,), grid, np.float32, settings, host, kept)
            fwd(np.ones((6, 5, 4), np.float32), kept)
            inv(kept)
    seconds = timer.seconds
    assert seconds["placement"] > 0 and seconds["crops"] > 0 and seconds["transforms"] > 0
    assert all(seconds[p] == 0 for p in PARTS if p not in ("placement", "crops", "transforms"))


def test_sweep_plot_shows_spread_and_busy_warning(tmp_path):
    pytest.importorskip("matplotlib")
    from bench.report import plot_sweep
    from bench.runner import CaseResult
    results = []
    for k in (1, 3, 5):
        r = CaseResult(parse_case(f"N=1,C=1,size=16x16,k={k}"))
        r.seconds = {"fft": 1e-3 * k, "direct": 2e-4 * k * k}
        r.medians = {"fft": 2e-3 * k, "direct": 3e-4 * k * k}
        r.choice = "fft"
        results.append(r)
    path = plot_sweep(results, str(tmp_path / "sweep.png"), "t", warning="machine busy")
    assert (tmp_path / "sweep.png").stat().st_size > 0 and path.endswith("sweep.png")


def test_parse_case_takes_a_whole_layer():
    case = parse_case("N=2,C=4,O=6,size=20,k=3,transposed=true,stride=2,padding=1,"
                      "layout=channels_last,dtype=float64")
    assert case.layer == {"padding": 1, "stride": 2, "transposed": True,
                          "layout": "channels_last"}
    assert case.x_shape == (2, 20, 4) and case.w_shape == (3, 6, 4) and case.dtype == "float64"
    assert case.y_shape == (2, 39, 6)  # (20 - 1) * 2 - 2 * 1 + 3, as conv_transpose1d
    grouped = parse_case("N=2,C=4,O=6,size=20x18,k=3,stride=2x1,groups=2,padding=same")
    assert grouped.w_shape == (6, 2, 3, 3) and grouped.y_shape == (2, 6, 10, 18)
    with pytest.raises(ValueError, match="groups must divide"):
        parse_case("N=1,C=3,size=16,k=3,groups=2")
    with pytest.raises(ValueError, match="transposed must be true or false"):
        parse_case("N=1,C=2,size=16,k=3,transposed=maybe")


def test_whole_layer_case_runs_every_competitor_that_has_its_layer():
    from bench.competitors import available
    from bench.timing import Progress
    from bench.runner import Options, run_case
    case = parse_case("N=2,C=4,O=6,size=16x12,k=3,padding=same,groups=2,dilation=2,"
                      "layout=channels_last")
    comps = available(["fft", "floor", "direct", "overlap_add", "torch", "scipy"])
    with Progress(len(comps), "t") as progress:
        result = run_case(case, comps, Options(repeat=1, budget=0.0, memory=False), progress)
    assert "scipy" in result.skipped and "fft" in result.seconds and "direct" in result.seconds
    for key, errors in result.errors.items():
        assert max(errors.values()) < 1e-5, key
    assert {"direct", "overlap_add"} <= set(result.errors)


def test_rounds_alternate_the_order_and_keep_each_competitor_best(monkeypatch):
    """``--rounds``: every competitor measured once per round, in alternating order,
    its best and the median of all its samples kept; skipped ones never run."""
    import io
    from bench import runner
    from bench.competitors import COMPETITORS, Prepared
    from bench.timing import Progress
    order, times = [], {"fft": iter([[0.3, 0.5], [0.2, 0.4]]),
                        "direct": iter([[0.6], [0.7]])}
    out = runner.Outputs(np.zeros(1), np.zeros(1), np.zeros(1))

    def fake_measure(comp, case, data, options):
        order.append(comp.key)
        return next(times[comp.key]), out, Prepared(lambda w: None)

    monkeypatch.setattr(runner, "measure", fake_measure)
    comps = [COMPETITORS["fft"], COMPETITORS["direct"], COMPETITORS["torch"]]
    options = runner.Options(rounds=2, memory=False, skip_limits={"torch": -1.0})
    case = parse_case("N=1,C=1,size=8,k=3")
    with Progress(len(comps) * 2, stream=io.StringIO()) as progress:
        result = runner.run_case(case, comps, options, progress)
        assert progress.done == progress.total
    assert order == ["fft", "direct", "direct", "fft"]
    assert result.seconds == {"fft": 0.2, "direct": 0.6}
    assert result.medians == pytest.approx({"fft": 0.35, "direct": 0.65})
    assert set(result.skipped) == {"torch"}


def test_a_single_overlap_add_tile_is_not_ranked_against_the_fft_path_it_runs():
    """It runs the FFT engine: the fastest of fftconv's own is chosen without it."""
    from bench.competitors import BEST, COMPETITORS
    from bench.runner import CaseResult, Options, run_case
    from bench.timing import Progress
    import io
    case = parse_case("N=1,C=2,size=24x24,k=5")
    with Progress(2, stream=io.StringIO()) as progress:
        result = run_case(case, [COMPETITORS["fft"], COMPETITORS["overlap_add"]],
                          Options(repeat=1, memory=False), progress)
    assert result.same_as == {"overlap_add": "fft"}
    result.seconds = {"fft": 2.0, "overlap_add": 1.0, "direct": 3.0}
    assert result.fastest_own() == "fft" and result.time(BEST) == 2.0
    del result.seconds["fft"]       # without the FFT path, its stand-in counts
    assert result.fastest_own() == "overlap_add"
    assert CaseResult(case).same_as == {}


def test_compare_precision_runs_a_case(capsys):
    from bench.__main__ import main
    assert main(["compare", "precision", "--case", "N=1,C=2,O=3,size=12x10,k=3", "--rounds",
                 "2", "--steps", "1", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "2d N1 2>3 12x10 k3" in out and "f64/f32" in out
