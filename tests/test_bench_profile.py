"""The bench's per-part profile (``python -m bench --profile``) and padded cases."""
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
    with pytest.raises(ValueError, match="padding must be valid, same or full"):
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
