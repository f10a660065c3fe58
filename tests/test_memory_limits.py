"""Memory limits that the machine's MemAvailable does not show: cgroups and RLIMIT_AS.

A process in a container, a Kubernetes pod or a Slurm job may allocate far less than the
machine has; fftconv refuses a workspace beyond what the process may allocate before any
allocation, and names the layer when an allocation fails all the same.
"""
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from fftconv import runtime

ROOT = Path(__file__).resolve().parents[1]
GiB = 1 << 30


def _tree(tmp_path, cgroup_line, files):
    """A fake ``/proc/self/cgroup`` and ``/sys/fs/cgroup`` under ``tmp_path``."""
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/cgroup").write_text(cgroup_line)
    for rel, text in files.items():
        path = tmp_path / "sys/fs/cgroup" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_cgroup_v2_room_is_the_least_over_the_lineage(tmp_path):
    root = _tree(tmp_path, "0::/job/step\n", {
        "job/memory.max": str(6 * GiB), "job/memory.current": str(1 * GiB),
        "job/step/memory.max": "max", "job/step/memory.current": str(GiB // 2)})
    assert runtime.cgroup_memory(root) == 5 * GiB


def test_cgroup_v1_room_and_no_limit(tmp_path):
    root = _tree(tmp_path, "4:memory:/pod\n3:cpu:/pod\n", {
        "memory/pod/memory.limit_in_bytes": str(2 * GiB),
        "memory/pod/memory.usage_in_bytes": str(GiB // 4),
        "memory/memory.limit_in_bytes": "9223372036854771712"})
    assert runtime.cgroup_memory(root) == 2 * GiB - GiB // 4
    unlimited = _tree(tmp_path / "free", "4:memory:/\n", {
        "memory/memory.limit_in_bytes": "9223372036854771712",
        "memory/memory.usage_in_bytes": "123"})
    assert runtime.cgroup_memory(unlimited) is None
    assert runtime.cgroup_memory(tmp_path / "nowhere") is None


def test_available_memory_is_the_least_of_every_limit(monkeypatch):
    monkeypatch.setattr(runtime, "machine_memory", lambda: 20 * GiB)
    monkeypatch.setattr(runtime, "cgroup_memory", lambda: 3 * GiB)
    monkeypatch.setattr(runtime, "address_space_room", lambda: 5 * GiB)
    assert runtime.available_memory() == 3 * GiB
    monkeypatch.setattr(runtime, "cgroup_memory", lambda: None)
    assert runtime.available_memory() == 5 * GiB


# A layer whose FFT workspace is about 4.3 GB (x 8x16x512x512, 16 output channels).
LIMITED = """
import resource, sys
import numpy as np
sys.path.insert(0, {root!r})
import fftconv
from fftconv import runtime
if {rlimit}:
    size = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (size + {room}, resource.RLIM_INFINITY))
shape, w_shape = (8, 16, 512, 512), (16, 16, 31, 31)
room = runtime.available_memory()
assert room is not None and room <= {room}, room
try:
    fftconv.plan(shape, w_shape, dtype=np.float64, algorithm="fft")
except MemoryError as exc:
    print("refused:", exc)
if not {rlimit}:
    sys.exit(0)   # under a cgroup the kernel kills a process that overruns; it never sees an error
runtime.available_memory = lambda: None   # a limit no query shows: the allocation fails
x = np.ones(shape)
try:
    fftconv.forward(x, np.ones(w_shape), algorithm="fft")
except MemoryError as exc:
    print("failed:", exc)
"""


def _run(script, tmp_path, **popen):
    path = tmp_path / "limited.py"
    path.write_text(textwrap.dedent(script))
    env = dict(os.environ, FFTCONV_PLANNER_EFFORT="FFTW_ESTIMATE")
    return subprocess.run([sys.executable, str(path)], capture_output=True, text=True,
                          timeout=240, env=env, **popen)


def _check(done, allocation=True):
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == (2 if allocation else 1), lines
    refused = lines[0]
    assert refused.startswith("refused: fftconv.plan: the workspace of the layer "
                              "x(8, 16, 512, 512) * w(16, 16, 31, 31) (algorithm='fft') needs ")
    assert "bytes of memory are available; bound it with max_workspace_bytes=" in refused
    if not allocation:
        return
    failed = lines[1]
    assert failed.startswith("failed: fftconv.forward: the layer x(8, 16, 512, 512) * "
                             "w(16, 16, 31, 31) ran out of memory with a workspace of ")
    assert "overlap_add" in failed


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_rlimit_as_bounds_the_workspace_and_a_failed_allocation_is_named(tmp_path):
    _check(_run(LIMITED.format(root=str(ROOT), rlimit=True, room=3 * GiB), tmp_path))


def _memory_cgroup():
    """This process's cgroup v1 memory directory, if it can hold a child we may write."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            base = Path("/sys/fs/cgroup/memory") / path.lstrip("/")
            return base if os.access(base, os.W_OK) else None
    return None


@pytest.mark.skipif(not Path("/proc/self/cgroup").exists() or _memory_cgroup() is None,
                    reason="needs a writable cgroup v1 memory controller")
def test_a_cgroup_limit_bounds_the_workspace(tmp_path):
    child = _memory_cgroup() / f"fftconv-test-{uuid.uuid4().hex[:8]}"
    try:
        child.mkdir()
        (child / "memory.limit_in_bytes").write_text(str(3 * GiB))
    except OSError as exc:
        pytest.skip(f"cannot make a memory cgroup: {exc}")
    try:
        def enter():
            (child / "cgroup.procs").write_text(str(os.getpid()))
        _check(_run(LIMITED.format(root=str(ROOT), rlimit=False, room=3 * GiB), tmp_path,
                    preexec_fn=enter), allocation=False)
    finally:
        child.rmdir()
