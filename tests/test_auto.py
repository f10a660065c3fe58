"""algorithm="auto": cost-model choices, measured choices persisted beside the
FFTW wisdom, and a corrupt or foreign choices file ignored with a warning."""
import json
import re

import numpy as np
import pytest

import fftconv
from fftconv import autoselect, costs, registry
from fftconv.checks import check_layer
from oracle import oracle_backward, oracle_forward


def geometry(x_shape, w_shape, **kw):
    opts = dict(padding="valid", stride=1, dilation=1, groups=1, flip_kernel=False)
    opts.update(kw)
    return check_layer("t", x_shape, w_shape, real=True, **opts).conv


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FFTCONV_CACHE_DIR", str(tmp_path))
    return tmp_path / autoselect.FILE_NAME


def test_plan_says_what_it_chose_and_why():
    p = fftconv.plan((2, 3, 40, 40), (4, 3, 5, 5), dtype=np.float32)
    assert p.algorithm in registry.NAMES
    assert p.explain.startswith(f"auto chose {p.algorithm!r} by the cost model")
    for name in ("direct", "fft", "overlap_add"):
        assert f"{name} " in p.explain and " ms" in p.explain
    # only overlap-add and fft_tiles have a tile, shown as a tuple of ints
    assert p.explain.count("(tile (") == 2
    assert re.search(r"overlap_add [0-9.e+-]+ ms \(tile \(\d+, \d+\)\)", p.explain), p.explain
    assert re.search(r"fft_tiles [0-9.e+-]+ ms \(tile \(\d+, \d+\)\)", p.explain), p.explain
    q = fftconv.plan((2, 3, 40, 40), (4, 3, 5, 5), dtype=np.float32, algorithm="fft")
    assert q.algorithm == "fft" and q.explain == "algorithm 'fft' was requested"


def test_cost_model_choices_are_sensible():
    def choice(*shapes):
        est = registry.estimates(geometry(*shapes), np.float32)
        return min(est, key=lambda name: est[name][0])
    assert choice((8, 16, 64, 64), (16, 16, 1, 1)) == "direct"        # 1x1 convolution
    assert choice((8, 16, 128, 128), (16, 16, 31, 31)) != "direct"    # big kernel
    assert choice((4, 16, 16384), (16, 16, 1023)) != "direct"
    assert choice((1, 4, 1 << 20), (4, 4, 65)) == "overlap_add"      # long input, small kernel


def test_auto_results_match_the_oracle_whatever_it_picks():
    rng = np.random.default_rng(3)
    for xs, ws in [((2, 3, 30), (4, 3, 1)), ((2, 3, 300), (4, 3, 41)), ((1, 2, 2000), (2, 2, 9))]:
        x, w = rng.standard_normal(xs), rng.standard_normal(ws)
        y = fftconv.forward(x, w, padding="same")
        dy = rng.standard_normal(y.shape)
        got = fftconv.backward(dy, x, w, padding="same")
        kw = dict(padding="same", stride=1, dilation=1, groups=1, flip_kernel=False)
        for a, ref in zip((y,) + tuple(got), (oracle_forward(x, w, None, **kw),)
                          + tuple(oracle_backward(dy, x, w, **kw))):
            assert np.abs(a - ref).max() <= 1e-10 * np.abs(ref).max()


def test_measured_choice_is_persisted_and_reused(cache, monkeypatch):
    shapes = ((2, 2, 48), (3, 2, 5))
    p = fftconv.plan(*shapes, dtype=np.float64, measure=True)
    assert p.explain.startswith(f"auto chose {p.algorithm!r} by measurement;")
    data = json.loads(cache.read_text())
    assert data["format"] == autoselect.FORMAT_VERSION and data["fftconv"] == fftconv.__version__
    (entry,) = data["choices"].values()
    assert entry["algorithm"] == p.algorithm
    assert set(entry["seconds"]) == set(registry.candidates(p.geometry, np.float64))
    assert p.algorithm == min(entry["seconds"], key=entry["seconds"].get)

    def no_timing(*args, **kwargs):
        raise AssertionError("a stored choice must not be measured again")
    monkeypatch.setattr(autoselect, "_time_step", no_timing)
    autoselect.STORE = autoselect.ChoiceStore()  # a new process: nothing in memory
    q = fftconv.plan(*shapes, dtype=np.float64, measure=True)
    assert q.algorithm == p.algorithm and "(stored)" in q.explain
    with fftconv.using(measure=True):  # the global setting takes the same path
        x = np.ones(shapes[0])
        np.testing.assert_allclose(fftconv.forward(x, np.ones(shapes[1])), 10.0)


@pytest.mark.parametrize("content", [
    "{broken",
    json.dumps({"format": autoselect.FORMAT_VERSION, "fftconv": "0.0.0-other", "choices": {}}),
    json.dumps({"format": autoselect.FORMAT_VERSION, "fftconv": fftconv.__version__,
                "choices": {"k": {"algorithm": "magic"}}}),
])
def test_corrupt_or_foreign_choices_are_ignored_with_a_warning(cache, content):
    cache.write_text(content)
    autoselect.STORE = autoselect.ChoiceStore()
    with pytest.warns(autoselect.ChoiceCacheWarning, match="ignoring .*algorithm choices file"):
        p = fftconv.plan((1, 1, 32), (1, 1, 3), dtype=np.float64, measure=True)
    assert p.algorithm in ("direct", "fft", "overlap_add")
    assert json.loads(cache.read_text())["fftconv"] == fftconv.__version__  # rewritten
