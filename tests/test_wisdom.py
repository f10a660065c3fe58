"""FFTW wisdom: exported to the per-user cache, imported by the next process,
and a corrupt or foreign file is ignored with a warning, never fatal."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("pyfftw")

import fftconv  # noqa: E402
from fftconv import wisdom  # noqa: E402


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FFTCONV_CACHE_DIR", str(tmp_path))
    wisdom.forget_loaded_state()
    yield tmp_path / wisdom.FILE_NAME
    wisdom.forget_loaded_state()


def plan_and_run(shape=(2, 3, 24, 20)):
    with fftconv.using(backend="pyfftw", planner_effort="FFTW_MEASURE", planning_timelimit=0.2):
        p = fftconv.plan(shape, (4, 3, 3, 3), algorithm="fft", dtype=np.float32)
        x = np.ones(shape, np.float32)
        y = p.forward(x, np.ones((4, 3, 3, 3), np.float32))
        p.backward(y)
    return y


def test_measured_plans_are_saved_as_versioned_json(cache):
    plan_and_run()
    data = json.loads(cache.read_text())
    assert data["format"] == wisdom.FORMAT_VERSION and len(data["wisdom"]) == 3
    assert "fftwf_wisdom" in data["wisdom"][1]  # single precision wisdom is there
    wisdom.forget_loaded_state()
    assert wisdom.load_once() is True


def test_second_process_imports_the_wisdom(cache):
    plan_and_run()
    code = ("import fftconv.wisdom as w, pyfftw; ok = w.load_once(); "
            "print(ok, b'fftwf_rdft2' in pyfftw.export_wisdom()[1])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "FFTCONV_CACHE_DIR": str(cache.parent)})
    assert out.stdout.split() == ["True", "True"]


@pytest.mark.parametrize("content", [
    "not json at all",
    json.dumps({"format": 999, "pyfftw": "x", "wisdom": ["", "", ""]}),
    json.dumps({"format": wisdom.FORMAT_VERSION, "wisdom": 5}),
    b"\xff\xfe\x00binary",
])
def test_corrupt_or_foreign_wisdom_is_ignored_with_a_warning(cache, content):
    if isinstance(content, bytes):
        cache.write_bytes(content)
    else:
        cache.write_text(content)
    with pytest.warns(wisdom.WisdomWarning, match="ignoring FFTW wisdom file"):
        y = plan_and_run((1, 3, 10, 9))
    np.testing.assert_allclose(y, 27.0, rtol=1e-5)
    json.loads(cache.read_text())  # replaced by a good file on the next save


def test_unwritable_cache_dir_warns_but_works(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("FFTCONV_CACHE_DIR", str(blocker / "sub"))  # parent is a file
    wisdom.forget_loaded_state()
    with pytest.warns(wisdom.WisdomWarning) as caught:
        y = plan_and_run((1, 3, 11, 9))
    messages = [str(w.message) for w in caught]
    assert any("ignoring FFTW wisdom file" in m and "Not a directory" in m for m in messages)
    assert any("could not save FFTW wisdom" in m for m in messages)
    np.testing.assert_allclose(y, 27.0, rtol=1e-5)
    wisdom.forget_loaded_state()


def test_new_wisdom_is_saved_in_batches_not_per_plan(cache, monkeypatch):
    """The first new plan saves at once; the next ones wait for the interval, the
    exit or flush(): each save re-reads and merges the whole file."""
    from fftconv import cachefile
    real, saves = cachefile.update, []
    monkeypatch.setattr(cachefile, "update", lambda *a: (saves.append(a[0]), real(*a))[1])
    for n in range(10, 16):       # six shapes, six transforms each
        plan_and_run((1, 3, n, 9))
    assert len(saves) == 1
    before = json.loads(cache.read_text())["wisdom"][1]
    wisdom.flush()
    assert len(saves) == 2 and len(json.loads(cache.read_text())["wisdom"][1]) > len(before)
    wisdom.flush()                # nothing new: no save
    assert len(saves) == 2


def test_what_is_unsaved_reaches_the_file_at_exit(cache):
    code = ("import numpy as np, fftconv\n"
            "with fftconv.using(backend='pyfftw', planner_effort='FFTW_MEASURE', "
            "planning_timelimit=0.2):\n"
            "    for n in (10, 12, 14):\n"
            "        fftconv.forward(np.ones((1, 3, n, 9), np.float32), "
            "np.ones((4, 3, 3, 3), np.float32), algorithm='fft')\n"
            "import fftconv.wisdom as w, pyfftw\n"
            "print(len(pyfftw.export_wisdom()[1]))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "FFTCONV_CACHE_DIR": str(cache.parent)})
    exported = int(out.stdout.split()[-1])
    assert len(json.loads(cache.read_text())["wisdom"][1]) == exported


def test_a_failed_save_keeps_the_batch_pending(cache, monkeypatch):
    from fftconv import cachefile
    real = cachefile.update

    def refuse(*args):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(cachefile, "update", refuse)
    with pytest.warns(wisdom.WisdomWarning, match="could not save FFTW wisdom"):
        plan_and_run((1, 3, 17, 9))
    assert wisdom._unsaved
    monkeypatch.setattr(cachefile, "update", real)
    wisdom.flush()
    assert not wisdom._unsaved and "fftwf" in json.loads(cache.read_text())["wisdom"][1]
