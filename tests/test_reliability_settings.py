"""Reliability of what surrounds the engines (issue 13): persisted caches, environment
variables, argument checking, non-finite inputs, and a property over all arguments.

* Caches: corrupt, malformed, read-only and concurrently written ``choices.json`` and
  wisdom files never break a computation; a bad entry is dropped with one warning and the
  file rewritten; processes writing at once lose nothing.
* Environment: every bad value of every variable is ignored with one warning naming the
  variable (``import fftconv`` runs in a subprocess with it set), and the default is used.
* Checks: wrong arguments are a ``TypeError``/``ValueError`` naming function and
  argument, raised before any engine is built or run, else the result equals the oracle.
"""
import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

import fftconv  # noqa: E402
import oracle  # noqa: E402
from conftest import rel_err  # noqa: E402
from fftconv import autoselect, cachefile, config, wisdom  # noqa: E402

try:
    import pyfftw
except ImportError:  # pragma: no cover - the scipy-only install
    pyfftw = None
needs_pyfftw = pytest.mark.skipif(pyfftw is None, reason="the wisdom cache is pyFFTW's")

ROOT = Path(__file__).resolve().parent.parent
CHILD_TIMEOUT = 120  # seconds; a hung child fails its test instead of hanging CI


def run_python(code: str, env: dict = None, flags=()) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter at the repository root (fftconv from this
    checkout), with ``env`` added to the environment."""
    return subprocess.run([sys.executable, *flags, "-c", textwrap.dedent(code)], cwd=ROOT,
                          env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=CHILD_TIMEOUT)


def start_together(code: str, args: list, cache: Path) -> list:
    """Run ``code`` in one fresh interpreter per entry of ``args`` (its ``sys.argv[1]``),
    all writing to ``cache``; ``code`` calls ``wait()`` (defined for it) to start the
    work when every child has imported fftconv.  Returns each child's stdout."""
    barrier = textwrap.dedent(f"""
        import pathlib, sys, time
        def wait():
            here = pathlib.Path({str(cache)!r})
            (here / f"ready-{{sys.argv[2]}}").touch()
            deadline = time.time() + 60
            while len(list(here.glob("ready-*"))) < {len(args)} and time.time() < deadline:
                time.sleep(0.001)
    """)
    children = [subprocess.Popen([sys.executable, "-c", barrier + textwrap.dedent(code), arg,
                                  str(k)], cwd=ROOT,
                                 env=dict(os.environ, FFTCONV_CACHE_DIR=str(cache)),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for k, arg in enumerate(args)]
    outputs = []
    for child in children:
        out, err = child.communicate(timeout=CHILD_TIMEOUT)
        assert child.returncode == 0, err
        outputs.append(out)
    return outputs


# -- caches ------------------------------------------------------------------------------------
@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A private cache directory; a fresh choices store and wisdom state around the test."""
    monkeypatch.setenv("FFTCONV_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(autoselect, "STORE", autoselect.ChoiceStore())
    wisdom.forget_loaded_state()
    yield tmp_path
    wisdom.forget_loaded_state()


FAKE_SECONDS = {"direct": 1e-3, "fft": 2e-3, "overlap_add": 3e-3, "winograd": 4e-3,
                "fft_tiles": 5e-3}


@pytest.fixture
def fake_timing(monkeypatch):
    """Measuring returns fixed timings (the store's behaviour, not the timing, is tested);
    records how many candidates were timed."""
    timed = []

    def time_step(plan_factory, geom, dtype, repeats=3):
        timed.append(plan_factory().algorithm)
        return FAKE_SECONDS[timed[-1]]
    monkeypatch.setattr(autoselect, "_time_step", time_step)
    return timed


LAYER = ((1, 2, 40), (2, 2, 5))


def measured_plan():
    return fftconv.plan(*LAYER, dtype=np.float64, measure=True)


def choices_file(cache_dir: Path) -> dict:
    return json.loads((cache_dir / autoselect.FILE_NAME).read_text())


def fresh_process(monkeypatch):
    """What a new process would see: nothing in memory."""
    monkeypatch.setattr(autoselect, "STORE", autoselect.ChoiceStore())


@pytest.mark.parametrize("damage, why", [
    (lambda e: e.pop("seconds"), "malformed seconds None"),
    (lambda e: e.update(seconds={"direct": "fast"}), "malformed seconds"),
    (lambda e: e.update(seconds={"direct": float("nan")}), "malformed seconds"),
    (lambda e: e.update(algorithm="overlap_add", tile=[0]), "malformed tile"),
    (lambda e: e.update(algorithm="overlap_add", tile="64"), "malformed tile"),
    (lambda e: e.update(algorithm="overlap_add", tile=[8, 8]), "tile \\[8, 8\\] for a 1-d layer"),
    (lambda e: e.update(algorithm="direct", tile=[8]), "malformed tile"),
    (lambda e: e.update(algorithm="magic"), "unknown algorithm 'magic'"),
    (lambda e: e.clear(), "unknown algorithm None"),
])
def test_a_malformed_choice_is_dropped_with_one_warning_and_rewritten(cache, fake_timing,
                                                                     monkeypatch, damage, why):
    measured_plan()
    data = choices_file(cache)
    (key,) = data["choices"]
    data["choices"]["other layer"] = {"algorithm": "fft", "tile": None, "seconds": {"fft": 1.0}}
    damage(data["choices"][key])
    (cache / autoselect.FILE_NAME).write_text(json.dumps(data))
    fresh_process(monkeypatch)
    fake_timing.clear()
    with pytest.warns(autoselect.ChoiceCacheWarning, match=f"malformed entry .*{why}") as caught:
        p = measured_plan()
    assert len(caught) == 1
    assert p.algorithm == "direct" and sorted(fake_timing) == sorted(FAKE_SECONDS)  # re-measured
    repaired = choices_file(cache)["choices"]
    assert repaired[key]["seconds"] == FAKE_SECONDS
    assert repaired["other layer"]["algorithm"] == "fft"  # the good entry is kept
    fresh_process(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # repaired: no warning, no measuring
        assert "(stored)" in measured_plan().explain


@pytest.mark.parametrize("content", [b"{broken", b"\xff\xfe\x00binary", b"[1, 2]",
                                     b'{"format": 1, "fftconv": "0.0.0-other", "choices": {}}'])
def test_a_corrupt_choices_file_is_ignored_and_replaced(cache, fake_timing, monkeypatch, content):
    (cache / autoselect.FILE_NAME).write_bytes(content)
    with pytest.warns(autoselect.ChoiceCacheWarning, match="ignoring algorithm choices file") as caught:
        measured_plan()
    assert len(caught) == 1
    data = choices_file(cache)
    assert data["fftconv"] == fftconv.__version__ and len(data["choices"]) == 1


def test_the_torch_bridge_choices_are_validated_too(cache, monkeypatch):
    ts = pytest.importorskip("fftconv.torch.autoselect")
    good = {"algorithm": "native", "engine": "fft", "explain": "'native' by measurement",
            "seconds": {"native": 1e-3, "fft": 2e-3}}
    choices = {"a": good, "b": {**good, "explain": None}, "c": {**good, "seconds": {}},
               "d": {**good, "algorithm": "fftconv", "engine": "magic"}}
    monkeypatch.setattr(ts, "STORE", ts.new_store())
    path = cache / ts.STORE.file_name
    path.write_text(json.dumps({"format": autoselect.FORMAT_VERSION, "fftconv": fftconv.__version__,
                                "choices": choices}))
    with pytest.warns(autoselect.ChoiceCacheWarning, match="ignoring 3 malformed entries") as caught:
        assert ts.STORE.get("a") == good and ts.STORE.get("b") is None
    assert len(caught) == 1 and list(json.loads(path.read_text())["choices"]) == ["a"]


def failing_write(path, data):
    """What a read-only cache does to a write: the error names the temporary file."""
    raise PermissionError(13, "Permission denied", str(path.parent / ".choices-x8f3k2.tmp"))


def test_a_read_only_choices_file_warns_once_without_temporary_names(cache, fake_timing,
                                                                     monkeypatch):
    monkeypatch.setattr(cachefile, "_write_json", failing_write)
    with pytest.warns(autoselect.ChoiceCacheWarning) as caught:
        p = measured_plan()
    (message,) = [str(w.message) for w in caught]
    assert message.endswith("could not save algorithm choices to "
                            f"{cache / autoselect.FILE_NAME}: Permission denied")
    y = p.forward(np.ones(LAYER[0]), np.ones(LAYER[1]))
    np.testing.assert_allclose(y, 10.0)
    assert "(stored)" in measured_plan().explain  # kept in memory for this process


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="file permissions do not bind root")
def test_a_read_only_cache_directory_works(cache, fake_timing):
    measured_plan()
    os.chmod(cache, 0o555)
    try:
        with pytest.warns(autoselect.ChoiceCacheWarning, match="could not save"):
            fftconv.plan((1, 2, 41), (2, 2, 5), dtype=np.float64, measure=True)
    finally:
        os.chmod(cache, 0o755)


def test_concurrent_processes_lose_no_choices(cache):
    """Three processes store 50 choices each at the same moment: all 150 are in the file."""
    code = """
        from fftconv import autoselect
        wait()
        for i in range(50):
            autoselect.STORE.put(f"layer {sys.argv[1]}-{i}", {"algorithm": "fft", "tile": None,
                                                            "seconds": {"fft": 1e-3 * i}})
    """
    start_together(code, ["a", "b", "c"], cache)
    stored = choices_file(cache)["choices"]
    assert sorted(stored) == sorted(f"layer {k}-{i}" for k in "abc" for i in range(50))


WISDOM_SHAPES = [(1, 2, 36), (1, 2, 44), (1, 2, 50), (1, 2, 54), (1, 2, 60), (1, 2, 66)]


def problems_in(strings) -> set:
    """The problems FFTW's wisdom strings hold plans for: each record's four-word hash."""
    return {m for s in strings for m in re.findall(r"^\s+\(.* (#x\w+ #x\w+ #x\w+ #x\w+)\)$", s,
                                                   re.MULTILINE)}


@needs_pyfftw
def test_concurrent_processes_lose_no_wisdom(cache):
    """Three processes plan different FFTs with FFTW_MEASURE at the same moment: the file
    ends up with the wisdom of every one of them."""
    code = """
        import json, numpy as np, pyfftw, fftconv
        wait()
        with fftconv.using(backend="pyfftw", planner_effort="FFTW_MEASURE",
                           planning_timelimit=0.5, threads=1):
            for shape in eval(sys.argv[1]):
                p = fftconv.plan(shape, (2, 2, 3), dtype=np.float64, algorithm="fft")
                p.backward(p.forward(np.ones(shape), np.ones((2, 2, 3))))
        print(json.dumps([w.decode() for w in pyfftw.export_wisdom()]))
    """
    outputs = start_together(code, [repr(WISDOM_SHAPES[k::3]) for k in range(3)], cache)
    planned = [problems_in(json.loads(out)) for out in outputs]
    stored = problems_in(json.loads((cache / wisdom.FILE_NAME).read_text())["wisdom"])
    for own in planned:
        assert own and own <= stored, f"{len(own - stored)} of {len(own)} plans lost"


def plan_fft(shape=(1, 3, 10, 9)):
    with fftconv.using(backend="pyfftw", planner_effort="FFTW_MEASURE", planning_timelimit=0.2):
        p = fftconv.plan(shape, (4, 3, 3, 3), algorithm="fft", dtype=np.float32)
        return p.forward(np.ones(shape, np.float32), np.ones((4, 3, 3, 3), np.float32))


@needs_pyfftw
def test_wisdom_that_fftw_rejects_is_dropped_and_rewritten(cache):
    plan_fft()
    path = cache / wisdom.FILE_NAME
    data = json.loads(path.read_text())
    data["wisdom"][1] = "(fftw-3 garbage"
    data["wisdom"][2] = 42
    path.write_text(json.dumps(data))
    wisdom.forget_loaded_state()
    with pytest.warns(wisdom.WisdomWarning, match="dropped the single, long double precision") as w:
        np.testing.assert_allclose(plan_fft((1, 3, 11, 9)), 27.0, rtol=1e-5)
    assert len(w) == 1
    repaired = json.loads(path.read_text())["wisdom"]
    assert all(isinstance(s, str) and s.startswith("(fftw-") for s in repaired)
    wisdom.forget_loaded_state()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert wisdom.load_once() is True


@needs_pyfftw
def test_an_unwritable_wisdom_cache_warns_once_per_kind():
    """The issue's probe: one warning per FFTW plan.  Python's default filter must now
    show each kind once, however many plans hit it."""
    code = """
        import tempfile, pathlib, os, numpy as np, fftconv
        blocker = pathlib.Path(tempfile.mkdtemp()) / "file"
        blocker.write_text("")
        os.environ["FFTCONV_CACHE_DIR"] = str(blocker / "cache")   # its parent is a file
        with fftconv.using(backend="pyfftw", planner_effort="FFTW_MEASURE",
                           planning_timelimit=0.05):
            for n in (24, 28, 30, 32, 36):
                p = fftconv.plan((1, 2, n), (2, 2, 3), dtype=np.float32, algorithm="fft")
                p.backward(p.forward(np.ones((1, 2, n), np.float32), np.ones((2, 2, 3), np.float32)))
    """
    out = run_python(code)
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stderr.splitlines() if "WisdomWarning: " in line]
    assert len(lines) == 2, out.stderr  # one "ignoring", one "could not save"
    assert "ignoring FFTW wisdom file" in lines[0] and "Not a directory" in lines[0]
    assert "could not save FFTW wisdom" in lines[1] and ".tmp" not in lines[1]


def test_cache_lock_excludes_a_second_holder(tmp_path):
    path = tmp_path / "f.json"
    with cachefile.locked(path):
        with pytest.raises(TimeoutError, match="waiting for the lock of f.json"):
            with cachefile.locked(path, timeout=0.05):
                pass
    with cachefile.locked(path, timeout=0.05):  # released
        pass


# -- environment variables ---------------------------------------------------------------------
CORES = config.available_cores()
DEFAULTS = config.Settings(**config._defaults())
BAD_ENVIRONMENT = [
    ("FFTCONV_THREADS", "abc"), ("FFTCONV_THREADS", "1.5"), ("FFTCONV_THREADS", "0"),
    ("FFTCONV_THREADS", "-2"), ("FFTCONV_THREADS", "1e400"),
    ("FFTCONV_PLANNING_TIME", "abc"), ("FFTCONV_PLANNING_TIME", "0"),
    ("FFTCONV_PLANNING_TIME", "nan"), ("FFTCONV_PLANNING_TIME", "inf"),
    ("FFTCONV_MAX_WORKSPACE", "lots"), ("FFTCONV_MAX_WORKSPACE", "0"),
    ("FFTCONV_MAX_WORKSPACE", "1.5e0"), ("FFTCONV_MEASURE", "maybe"), ("FFTCONV_MEASURE", "2"),
    ("FFTCONV_BACKEND", "mkl"), ("FFTCONV_PLANNER_EFFORT", "FFTW_FAST"),
    ("FFTCONV_COMPILED", "perhaps"),
]
SETTING_OF = {variable: name for name, (variable, _, _) in config.ENVIRONMENT.items()}


@pytest.mark.parametrize("variable, value", BAD_ENVIRONMENT)
def test_a_bad_environment_value_warns_and_falls_back(variable, value):
    with pytest.warns(config.SettingsWarning) as caught:
        settings = config._from_environment({variable: value})
    (message,) = [str(w.message) for w in caught]
    name = SETTING_OF[variable]
    assert message.startswith(f"fftconv: ignoring {variable}={value!r} ({name} must be ")
    assert message.endswith(f"using the default {name}={getattr(DEFAULTS, name)!r}")
    assert settings == DEFAULTS


@pytest.mark.parametrize("environment", [
    {"FFTCONV_THREADS": "abc", "FFTCONV_PLANNING_TIME": "abc", "FFTCONV_MAX_WORKSPACE": "lots",
     "FFTCONV_MEASURE": "maybe", "FFTCONV_BACKEND": "mkl", "FFTCONV_PLANNER_EFFORT": "FFTW_FAST",
     "FFTCONV_COMPILED": "perhaps"},
    {"FFTCONV_THREADS": "1.5", "FFTCONV_PLANNING_TIME": "nan", "FFTCONV_MAX_WORKSPACE": "1.5e0",
     "FFTCONV_MEASURE": "2", "FFTCONV_BACKEND": "", "FFTCONV_PLANNER_EFFORT": " ",
     "FFTCONV_COMPILED": "2"},
])
def test_import_never_fails_because_of_the_environment(environment):
    """A fresh interpreter with bad values in every variable imports fftconv, warns once per
    variable it could not use (an empty one counts as unset) and runs on the defaults."""
    out = run_python("import fftconv; print(repr(fftconv.get_settings()))", environment)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == repr(DEFAULTS)
    warned = [line for line in out.stderr.splitlines() if "SettingsWarning: " in line]
    assert len(warned) == sum(1 for v in environment.values() if v.strip())
    for variable, value in environment.items():
        assert sum(f"ignoring {variable}=" in line for line in warned) == bool(value.strip())


def test_import_clamps_threads_and_reads_good_values():
    out = run_python("import fftconv; s = fftconv.get_settings(); "
                     "print(s.threads, s.max_workspace_bytes, s.measure)",
                     {"FFTCONV_THREADS": "99999", "FFTCONV_MAX_WORKSPACE": "1e9",
                      "FFTCONV_MEASURE": "Off"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(CORES), "1000000000", "False"]
    assert out.stderr.count("SettingsWarning: fftconv: FFTCONV_THREADS=99999 asks for more") == 1


@pytest.mark.parametrize("text, value", [
    ("1", True), ("0", False), ("true", True), ("False", False), ("YES", True), ("no", False),
    ("On", True), ("off", False), (" yes ", True), ("", False)])
def test_boolean_variables_accept_the_usual_words(text, value):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert config._from_environment({"FFTCONV_MEASURE": text}).measure is value


@pytest.mark.parametrize("variable, text, name, value", [
    ("FFTCONV_MAX_WORKSPACE", "1e9", "max_workspace_bytes", 10 ** 9),
    ("FFTCONV_MAX_WORKSPACE", "4096", "max_workspace_bytes", 4096),
    ("FFTCONV_THREADS", "1", "threads", 1),
    ("FFTCONV_PLANNING_TIME", "0.5", "planning_timelimit", 0.5),
    ("FFTCONV_PLANNER_EFFORT", "fftw_estimate", "planner_effort", "FFTW_ESTIMATE"),
    ("FFTCONV_BACKEND", "SciPy", "backend", "scipy"),
])
def test_good_environment_values(variable, text, name, value):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert getattr(config._from_environment({variable: text}), name) == value


def test_threads_above_the_available_cores_are_clamped():
    with pytest.warns(config.SettingsWarning, match=f"FFTCONV_THREADS=99999 asks for more threads "
                                                    f"than the {CORES} cores"):
        assert config._from_environment({"FFTCONV_THREADS": "99999"}).threads == CORES
    with pytest.warns(config.SettingsWarning, match=r"fftconv\.using: threads=99999 asks for more"):
        with fftconv.using(threads=99999) as settings:
            assert settings.threads == CORES == fftconv.get_settings().threads
    before = fftconv.get_settings()
    with pytest.warns(config.SettingsWarning, match=r"fftconv\.configure: threads=512"):
        previous = fftconv.configure(threads=512)
    try:
        assert fftconv.get_settings().threads == CORES
    finally:
        fftconv.configure(**{k: getattr(previous, k) for k in config.NAMES})
    assert fftconv.get_settings() == before


# -- checking hygiene --------------------------------------------------------------------------
@pytest.mark.parametrize("changes, exc, pattern", [
    (dict(threads="2"), TypeError, r"threads must be an int >= 1, got threads='2'"),
    (dict(threads=1.0), TypeError, r"threads must be an int >= 1, got threads=1\.0"),
    (dict(threads=True), TypeError, r"threads must be an int >= 1, got threads=True"),
    (dict(threads=0), ValueError, r"threads must be an int >= 1, got threads=0"),
    (dict(backend=None), TypeError, r"backend must be one of \('pyfftw', 'scipy'\), got backend=None"),
    (dict(backend="mkl"), ValueError, r"backend must be one of"),
    (dict(planner_effort=1), TypeError, r"planner_effort must be one of"),
    (dict(planning_timelimit="1"), TypeError, r"planning_timelimit must be a number of seconds"),
    (dict(planning_timelimit=float("inf")), ValueError, r"planning_timelimit must be a finite"),
    (dict(max_workspace_bytes=1e6), TypeError, r"max_workspace_bytes must be None or an int"),
    (dict(max_workspace_bytes=-1), ValueError, r"max_workspace_bytes must be None or an int"),
    (dict(measure="yes"), TypeError, r"measure must be a bool, got measure='yes'"),
    (dict(bogus=1), TypeError, r"got unexpected keyword argument\(s\) bogus; the settings are "
                               r"backend, threads, planner_effort, planning_timelimit, "
                               r"max_workspace_bytes, measure"),
])
@pytest.mark.parametrize("func", ["configure", "using"])
def test_settings_errors_name_their_function(func, changes, exc, pattern):
    before = fftconv.get_settings()
    with pytest.raises(exc, match=rf"^fftconv\.{func}: {pattern}"):
        if func == "configure":
            fftconv.configure(**changes)
        else:
            with fftconv.using(**changes):
                pass
    assert fftconv.get_settings() == before  # nothing changed


def test_plan_errors_name_its_parameters():
    with pytest.raises(ValueError, match=r"^fftconv\.plan: x_shape must be \(N, C_in, \*spatial\) "
                                         r"with at least one spatial axis, got x_shape=\(2, 4\)$"):
        fftconv.plan((2, 4), (6, 4), dtype=np.float64)
    with pytest.raises(ValueError, match=r"^fftconv\.plan: w_shape\[1\] must equal C_in // groups = 4, "
                                         r"got w_shape=\(6, 3, 3\) with x_shape=\(2, 4, 8\)"):
        fftconv.plan((2, 4, 8), (6, 3, 3), dtype=np.float64)
    with pytest.raises(ValueError, match=r"^fftconv\.plan: w_shape must have the same number of "
                                         r"dimensions as x_shape"):
        fftconv.plan((2, 4, 8), (6, 4, 3, 3), dtype=np.float64)
    with pytest.raises(ValueError, match=r"kernel axes must have size >= 1, got w_shape=\(6, 4, 0\)"):
        fftconv.plan((2, 4, 8), (6, 4, 0), dtype=np.float64)


def test_plan_with_an_array_does_not_print_it():
    x = np.arange(40000.0).reshape(4, 100, 100)
    for args in [(x, (3, 100, 3)), ((4, 100, 100), x)]:
        with pytest.raises(TypeError) as info:
            fftconv.plan(*args, dtype=np.float64)
        message = str(info.value)
        assert re.match(r"fftconv\.plan: (x|w)_shape must be a tuple of ints \(an array's \.shape, "
                        r"not the array\), got (x|w)_shape=an array of shape \(4, 100, 100\)$", message)
    with pytest.raises(TypeError) as info:
        fftconv.plan([0.5] * 5000, (1, 1, 1), dtype=np.float64)
    assert len(str(info.value)) < 200
    with pytest.raises(TypeError) as info:
        fftconv.plan((1, 1, 8), (1, 1, 3), dtype=x)
    assert "an array of shape" in str(info.value) and len(str(info.value)) < 200


@pytest.mark.parametrize("given, shown", [
    (dict(), "padding='valid', stride=1"),
    (dict(stride=2), "padding='valid', stride=2"),
    (dict(padding="same", dilation=2), "padding='same', stride=1, dilation=2"),
])
def test_backward_says_which_layer_the_dy_shape_assumes(given, shown):
    x, w = np.zeros((2, 3, 16)), np.zeros((4, 3, 5))
    dy = np.zeros((2, 4, 17))  # no layer gives 17 outputs
    with pytest.raises(ValueError, match=rf"fftconv\.backward: dy must have shape \(2, 4, \d+\) "
                                         rf"\(forward's output with {re.escape(shown)}; pass "
                                         rf"backward the layer keywords forward ran with\)"):
        fftconv.backward(dy, x, w, **given)


def test_import_with_docstrings_stripped():
    subpackages = "".join(f", fftconv.{name}" for name in ("torch", "dask")
                          if importlib.util.find_spec(name) is not None)
    out = run_python(f"import fftconv{subpackages}, numpy as np; print(fftconv.forward("
                     "np.ones((1, 1, 4)), np.ones((1, 1, 2))).ravel())", flags=("-OO",))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[2. 2. 2.]"


def test_cited_bench_modules_exist():
    """Docstrings and comments cite ``python -m bench.X`` only for modules that exist."""
    for source in (ROOT / "fftconv").rglob("*.py"):
        for module in re.findall(r"python -m (bench(?:\.\w+)?)", source.read_text()):
            path = ROOT / Path(*module.split("."))
            assert path.with_suffix(".py").exists() or (path / "__init__.py").exists(), \
                f"{source.name} cites python -m {module}, which does not exist"


@pytest.mark.parametrize("module", ["api.py", "config.py"])
def test_argument_checks_live_in_checks(module):
    """CONVENTIONS §6: the public functions and the settings call ``checks``; they raise
    no argument errors of their own."""
    source = (ROOT / "fftconv" / module).read_text()
    assert not re.search(r"raise (TypeError|ValueError)\(f?\"(fftconv|\{func)|\bfail\(", source)


# -- non-finite inputs -------------------------------------------------------------------------
def receptive_field(x_shape, spot, w, **layer):
    """Where an output reads input position ``spot`` (oracle on an indicator, |w| + 1)."""
    marker = np.zeros(x_shape)
    marker[spot] = 1.0
    return oracle.oracle_forward(marker, np.abs(w) + 1.0, **layer) > 0


LAYER_NF = dict(padding=1, groups=2)
SPOT = (1, 1, 20, 7)  # sample 1, input channel 1 (group 0), one pixel


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_fft_spreads_a_non_finite_input_over_its_sample_only(rng, bad):
    x, w = rng.standard_normal((3, 4, 40, 40)), rng.standard_normal((6, 2, 5, 5))
    ref = oracle.oracle_forward(x, w, **LAYER_NF)
    x[SPOT] = bad
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf in the spectra
        y = fftconv.forward(x, w, algorithm="fft", **LAYER_NF)
    # never into another sample, nor into the other group's channels
    for n, o in [(0, slice(None)), (2, slice(None)), (1, slice(3, 6))]:
        assert rel_err(y[n, o], ref[n, o]) <= 1e-10
    # and all over its own sample, in every channel of its group
    assert not np.isfinite(y[1, :3]).any()


def test_overlap_add_spreads_a_non_finite_input_over_its_tiles_only(rng):
    x, w = rng.standard_normal((3, 4, 40, 40)), rng.standard_normal((6, 2, 5, 5))
    ref = oracle.oracle_forward(x, w, **LAYER_NF)
    x[SPOT] = np.nan
    p = fftconv.plan(x.shape, w.shape, dtype=np.float64, algorithm="overlap_add", tile=(8, 8),
                     **LAYER_NF)
    y = p.forward(x, w)
    field = receptive_field(x.shape, SPOT, w, **LAYER_NF)[1, 0]
    tiles = np.zeros_like(field)  # every tile that holds part of the receptive field
    for i, j in np.argwhere(field):
        tiles[i // 8 * 8:(i // 8 + 1) * 8, j // 8 * 8:(j // 8 + 1) * 8] = True
    np.testing.assert_array_equal(~np.isfinite(y[1]), np.broadcast_to(tiles, y[1].shape)
                                  & (np.arange(6) < 3)[:, None, None])
    assert np.isfinite(y[[0, 2]]).all()
    finite = np.isfinite(y)
    assert np.abs(y[finite] - ref[finite]).max() <= 1e-10 * np.abs(ref).max()


def test_direct_keeps_a_non_finite_input_in_its_receptive_field(rng):
    x, w = rng.standard_normal((3, 4, 40, 40)), rng.standard_normal((6, 2, 5, 5))
    ref = oracle.oracle_forward(x, w, **LAYER_NF)
    x[SPOT] = np.nan
    y = fftconv.forward(x, w, algorithm="direct", **LAYER_NF)
    np.testing.assert_array_equal(~np.isfinite(y), receptive_field(x.shape, SPOT, w, **LAYER_NF))
    finite = np.isfinite(y)
    assert np.abs(y[finite] - ref[finite]).max() <= 1e-10 * np.abs(ref).max()


# -- the property over all arguments -----------------------------------------------------------
DTYPES = [np.float64, np.float32, np.complex128, np.complex64, np.float16, np.int32]
TOLERANCE = {np.dtype(np.float64): 1e-10, np.dtype(np.complex128): 1e-10,
             np.dtype(np.float32): 1e-5, np.dtype(np.complex64): 1e-5,
             np.dtype(np.float16): 2e-3}
ARGUMENT = re.compile(r"\b(x|w|b|dy|padding|stride|dilation|groups|flip_kernel|algorithm|transposed|"
                      r"output_padding|padding_mode|layout|C_in|C_out)\b")
WRONG_KINDS = {"stride": [1.5, "2", None, (1, True)], "dilation": [0.5, [None]],
               "groups": [1.0, "1", None], "padding": [1.5, "sam", [(1, 2, 3)], None, -1],
               "flip_kernel": ["yes", 1, None],
               "layout": ["NCHW", None], "padding_mode": ["mirror", 0],
               "transposed": ["no", 0], "output_padding": [0.5, -1, 7]}


@st.composite
def problems(draw):
    """A layer call: mostly valid, sometimes not (zero sizes, wrong channels, a wrong
    kind of value), over every argument."""
    nd = draw(st.integers(1, 3))
    transposed, last = draw(st.booleans()), draw(st.booleans())
    groups, cg, og = draw(st.integers(1, 3)), draw(st.integers(1, 2)), draw(st.integers(1, 2))
    c_in, c_out = groups * cg, groups * og
    kernel = tuple(draw(st.lists(st.integers(1, 3), min_size=nd, max_size=nd)))
    size = tuple(draw(st.lists(st.integers(0, 7), min_size=nd, max_size=nd)))
    layer = dict(
        stride=draw(st.integers(1, 3) | st.tuples(*[st.integers(1, 2)] * nd)),
        dilation=draw(st.integers(1, 2)),
        groups=groups,
        padding=draw(st.sampled_from(["valid", "same", "full"]) | st.integers(0, 2)
                     | st.tuples(*[st.tuples(st.integers(0, 2), st.integers(0, 2))] * nd)),
        flip_kernel=draw(st.booleans()),
        transposed=transposed,
        layout="channels_last" if last else "channels_first",
        padding_mode="zeros" if transposed else draw(
            st.sampled_from(["zeros", "zeros", "circular", "reflect", "replicate"])),
    )
    if transposed:
        layer["output_padding"] = draw(st.integers(0, 1))
    w_cf = (c_in, og) + kernel if transposed else (c_out, cg) + kernel
    if draw(st.integers(0, 9)) == 0:  # the wrong number of weight channels
        w_cf = (w_cf[0], w_cf[1] + 1) + kernel
    if draw(st.integers(0, 5)) == 0:  # a wrong kind of value for one keyword
        name = draw(st.sampled_from(sorted(WRONG_KINDS)))
        layer[name] = draw(st.sampled_from(WRONG_KINDS[name]))
    return dict(x_cf=(draw(st.integers(0, 2)), c_in) + size, w_cf=w_cf, layer=layer,
                dtype=np.dtype(draw(st.sampled_from(DTYPES))),
                bias=draw(st.booleans()), view=draw(st.sampled_from(["contiguous", "strided",
                                                                     "fortran", "reversed"])),
                algorithm=draw(st.sampled_from(["auto", "fft", "direct", "overlap_add"] * 3
                                               + ["fast", None, 3])),
                seed=draw(st.integers(0, 2 ** 16)))


def as_view(a: np.ndarray, view: str) -> np.ndarray:
    """``a``'s values in a non-contiguous (or Fortran-ordered) array."""
    if view == "strided":
        wide = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
        wide[..., ::2] = a
        return wide[..., ::2]
    if view == "fortran":
        return np.asfortranarray(a)
    if view == "reversed":
        return np.ascontiguousarray(a[..., ::-1])[..., ::-1]
    return a


def random_values(rng, shape, dtype):
    a = rng.standard_normal(shape) + (1j * rng.standard_normal(shape) if dtype.kind == "c" else 0)
    return (np.round(a * 4) if dtype.kind == "i" else a).astype(dtype)


def reference(x, w, b, layer):
    """The oracle's ``y`` for a call in the caller's layout."""
    last, kw = layer["layout"] == "channels_last", dict(layer)
    kw.pop("layout")
    x = oracle.from_channels_last(x) if last else x
    w = oracle.weights_from_channels_last(w) if last else w
    if kw.pop("transposed"):
        kw.pop("padding_mode")
        y = oracle.oracle_transposed_forward(x, w, b, **kw)
    else:
        y = oracle.oracle_forward(x, w, b, **kw)
    return oracle.to_channels_last(y) if last else y


def check_call(problem):
    """Either a clear error before any engine work, or the oracle's result."""
    rng = np.random.default_rng(problem["seed"])
    layer, dtype, last = problem["layer"], problem["dtype"], problem["layer"]["layout"] == "channels_last"
    x_cf, w_cf = problem["x_cf"], problem["w_cf"]
    x_shape = x_cf[:1] + x_cf[2:] + x_cf[1:2] if last else x_cf
    w_shape = w_cf[2:] + (w_cf[1], w_cf[0]) if last else w_cf
    x = as_view(random_values(rng, x_shape, dtype), problem["view"])
    w = as_view(random_values(rng, w_shape, dtype), problem["view"])
    b = random_values(rng, (w_cf[1] * layer["groups"] if layer["transposed"] is True else w_cf[0],),
                      dtype) if problem["bias"] and isinstance(layer["groups"], int) else None
    originals = [a.copy() for a in (x, w)]
    work = []
    real_build, real_forward = fftconv.registry.build, fftconv.runner.Runner.forward
    with mock.patch.object(fftconv.registry, "build",
                           lambda *a, **k: work.append("build") or real_build(*a, **k)), \
            mock.patch.object(fftconv.runner.Runner, "forward",
                              lambda *a, **k: work.append("forward") or real_forward(*a, **k)):
        try:
            y = fftconv.forward(x, w, b, algorithm=problem["algorithm"], **layer)
        except (TypeError, ValueError) as exc:
            message = str(exc)
            assert message.startswith("fftconv.forward: "), message
            assert ARGUMENT.search(message.split(": ", 1)[1]), message
            assert not work, f"{message!r} raised after the engine was built or ran"
            return "error"
    for a, original in zip((x, w), originals):
        np.testing.assert_array_equal(a, original)  # inputs untouched
    ref = reference(x, w, b, layer)
    result = np.result_type(x, w) if dtype.kind != "i" else np.dtype(np.float64)
    assert y.dtype == result and y.shape == ref.shape
    assert rel_err(y, ref) <= TOLERANCE.get(y.dtype, 1e-10), (rel_err(y, ref), y.dtype)
    return "result"


#: Found by the slow property: replicate padding of an empty axis reached ``np.pad``.
REPLICATE_EMPTY = dict(x_cf=(1, 1, 0), w_cf=(1, 1, 1), dtype=np.dtype(np.float64), bias=False,
                       layer=dict(stride=1, dilation=1, groups=1, padding=1, flip_kernel=False,
                                  transposed=False, layout="channels_first",
                                  padding_mode="replicate"),
                       view="contiguous", algorithm="auto", seed=0)


@settings(max_examples=80, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(problems())
@hypothesis.example(problem=REPLICATE_EMPTY)
def test_every_call_is_a_clear_error_or_the_oracle(problem):
    hypothesis.event(check_call(problem))


@pytest.mark.slow
@settings(max_examples=3000, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_every_call_is_a_clear_error_or_the_oracle_many(problem):
    hypothesis.event(check_call(problem))
