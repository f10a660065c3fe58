"""``python -m bench --suite gpu`` (issue 19): listed, its rows build, and without CUDA
it says so in one line and exits 0.  The runner itself is driven here on the CPU with
a fake event clock (what a CUDA machine runs with ``torch.cuda.Event``)."""
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import fftconv
from bench import gpu
from bench.__main__ import build_parser, main
from bench.cases import Case, parse_case
from bench.competitors import long_convolution
from bench.suites import (GPU_CASES, GPU_CONV_CASES, GPU_LONG_CASES, GPU_QUICK_CASES,
                          GPU_SMALL_CASES, GPU_TARGETS, SUITES, check_targets, gpu_targets)

ROOT = Path(__file__).resolve().parents[1]


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def test_the_gpu_suite_is_listed():
    assert SUITES["gpu"].mode == "gpu" and SUITES["gpu"].cases == GPU_CASES
    args = build_parser().parse_args(["run", "--suite", "gpu", "--quick", "--json", "x.json"])
    assert (args.suite, args.quick, args.json) == ("gpu", True, "x.json")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--suite", "nope"])


def test_its_rows_build_and_every_target_has_rows():
    for case in GPU_CASES:
        p = fftconv.plan(case.x_shape, case.w_shape, dtype=np.float32, algorithm="fft",
                         **case.layer)
        assert p.geometry.y_shape == case.y_shape, case.name
        keys = gpu.columns(case, cupy=True)
        assert {"fft", "floor", "cupy"} <= set(keys), case.name
        if case in GPU_LONG_CASES:
            assert long_convolution(case) and "torchfft" in keys and "cudnn" not in keys
        else:
            assert {"cudnn", "auto", "cudnn_tf32", "fft_tf32", "auto_tf32"} <= set(keys)
    assert "cupy" not in gpu.columns(GPU_CASES[0], cupy=False)
    assert set(GPU_QUICK_CASES) <= set(GPU_CASES)
    assert {c.ndim for c in GPU_QUICK_CASES} == {1, 2, 3}
    for target in GPU_TARGETS:
        assert any(target.applies_to(c) for c in GPU_CASES), target.figure
    # the rows: 1-D k >= 255, 2-D k >= 15, 3-D k >= 9, Hyena's (B, H, L)
    assert {(c.ndim, c.kernel_size >= {1: 255, 2: 15, 3: 9}[c.ndim])
            for c in GPU_CONV_CASES} == {(1, True), (2, True), (3, True)}
    assert [(c.batch, c.in_channels, c.size[0]) for c in GPU_LONG_CASES] == \
        [(4, 768, 8192), (2, 768, 65536)]
    assert all(c.kernel_size <= 9 for c in GPU_SMALL_CASES)


@pytest.mark.skipif(_has_cuda(), reason="this machine has CUDA: the suite would run")
def test_without_cuda_it_exits_cleanly_with_one_line():
    out = subprocess.run([sys.executable, "-m", "bench", "--suite", "gpu", "--quick"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("python -m bench --suite gpu: skipped, "), \
        out.stdout
    assert "Traceback" not in out.stderr


@pytest.mark.skipif(_has_cuda(), reason="this machine has CUDA: the suite would run")
def test_main_returns_zero_without_cuda(capsys):
    assert main(["--suite", "gpu"]) == 0
    assert "no CUDA device" in capsys.readouterr().out


class _Event:
    def __init__(self):
        self.at = None

    def record(self):
        self.at = time.perf_counter()

    def synchronize(self):
        pass


def _fake_clock():
    return gpu.Clock(_Event, lambda a, b: (b.at - a.at) * 1e3, lambda: None)


def test_device_samples_warm_up_prepare_and_keep_the_first_outputs():
    log = []
    calls = iter(range(100))

    def step():
        n = next(calls)
        log.append(("step", n))
        return n
    taken, first = gpu.device_samples(step, _fake_clock(), repeat=4, warmups=2,
                                      prepare=lambda: log.append("prepare"))
    assert len(taken) == 4 and all(t >= 0 for t in taken)
    assert first == 0
    assert log[:4] == ["prepare", ("step", 0), "prepare", ("step", 1)]
    assert log.count("prepare") == 6
    taken, first = gpu.device_samples(step, _fake_clock(), repeat=10, warmups=0, budget=0.0)
    assert len(taken) == 3 and first is not None          # MIN_SAMPLES, however short


def test_a_row_runs_end_to_end_on_the_cpu_with_a_fake_clock(monkeypatch, tmp_path):
    """The whole row protocol (every column but CuPy, TF32 off and on, accuracy against
    the reference, ``auto``'s pick, the tables, the targets and the JSON), on CPU
    tensors and a wall-clock stand-in for CUDA events."""
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(gpu, "torch_clock", _fake_clock)
    monkeypatch.setenv("FFTCONV_CACHE_DIR", str(tmp_path))
    conv = parse_case("N=2,C=4,size=128,k=31")
    small = parse_case("N=2,C=4,size=16x16,k=3,padding=same")
    long = Case(1, 8, 8, (64,), (64,), "causal", (("flip_kernel", True), ("groups", 8)))
    results = [gpu.run_row(c, gpu.columns(c, cupy=False), 3, 1, None, torch.device("cpu"))
               for c in (conv, small, long)]
    for r in results:
        assert not r.failed, r.failed
        assert all(e <= gpu.TOLERANCE for e in r.errors.values()), r.errors
    assert set(results[0].times) == {"cudnn", "fft", "auto", "floor", "cudnn_tf32", "fft_tf32",
                                     "auto_tf32"}
    assert results[0].reference == "cudnn" and set(results[0].errors) == {"fft", "auto"}
    assert results[0].picks["auto"] in ("native",) + fftconv.registry.NAMES
    assert set(results[2].times) == {"fft", "floor", "torchfft"}
    assert results[2].reference == "torchfft" and set(results[2].errors) == {"fft"}
    text = gpu.tables(results)
    assert "TF32 off" in text and "TF32 on" in text and "torchfft/fft" in text
    checks = check_targets(gpu_targets((conv,), (small,), (long,)), results)
    assert {c.target.figure for c in checks} == {"auto/cudnn", "auto_tf32/cudnn_tf32",
                                                 "torchfft/fft", "fft/floor"}
    assert all(c.ratio is not None and c.verdict in ("yes", "NO") for c in checks)
    dumped = json.loads(json.dumps(gpu.to_json(results, checks, "device: fake")))
    assert [row["case"] for row in dumped["rows"]] == [c.name for c in (conv, small, long)]


def test_a_failing_column_is_reported_and_the_row_goes_on(monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(gpu, "torch_clock", _fake_clock)

    def broken(case, data):
        raise RuntimeError("CUDA out of memory.\nTried to allocate 2 GiB")
    monkeypatch.setitem(gpu.PREPARE, "floor", broken)
    case = parse_case("N=1,C=2,size=64,k=9")
    r = gpu.run_row(case, ("cudnn", "fft", "floor"), 3, 1, None, torch.device("cpu"))
    assert r.failed == {"floor": "RuntimeError: CUDA out of memory. Tried to allocate 2 GiB"}
    assert set(r.times) == {"cudnn", "fft"}
    checks = check_targets(gpu_targets((case,), (), ()), [r])
    assert [c.verdict for c in checks if c.target.figure == "fft/floor"] == \
        ["NO: floor failed: RuntimeError: CUDA out of memory. Tried to allocate 2 GiB"]
