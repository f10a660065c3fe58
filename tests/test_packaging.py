"""Packaging (issue 22, item 8): the ``torch`` extra is a range, so installing
``fftconv[torch]`` keeps a user's own PyTorch; the project's own install lines
(README, docs, CI) pin the CPU build on the command line, before any range could
pull another build."""
import configparser
import re
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PIN = "torch==2.13.0"


def torch_extra() -> Requirement:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    lines = [line.strip() for line in config["options.extras_require"]["torch"].splitlines()]
    (torch,) = [Requirement(line) for line in lines if line]
    return torch


def test_torch_extra_is_a_range_not_a_pin():
    torch = torch_extra()
    assert torch.name == "torch"
    assert not any(spec.operator in ("==", "===", "~=") for spec in torch.specifier), torch
    # a lower bound only: any later PyTorch (a CUDA build, say) satisfies it
    assert all(spec.operator == ">=" for spec in torch.specifier), torch
    assert torch.specifier.contains(Version("2.13.0"))
    assert torch.specifier.contains(Version("3.0"))


def install_lines(text: str) -> list:
    return [line for line in text.splitlines() if re.match(r"\s*pip install .*\.\[.*torch", line)]


def test_project_install_lines_pin_the_cpu_build_first():
    for name in ("README.md", "docs/index.md", ".ci/run"):
        lines = install_lines((ROOT / name).read_text())
        assert lines, f"{name} has no install line with the torch extra"
        for line in lines:
            assert PIN in line, f"{name}: {line!r} does not pin {PIN}"
            assert line.index(PIN) < line.index(".["), f"{name}: the pin must come first: {line!r}"


def test_readme_says_how_to_keep_an_existing_pytorch():
    for name in ("README.md", "docs/index.md"):
        text = (ROOT / name).read_text()
        assert re.search(r"keep\w*\s+a\s+PyTorch\s+you\s+already\s+have", text), name
        assert "torch>=2.3" in text, name


def test_the_gpu_extra_names_cupy_and_stays_out_of_the_install_everything_lines():
    """CuPy needs a CUDA GPU: the ``gpu`` extra names its CUDA 12 wheel (and says which
    one CUDA 13 takes), and no install-everything line asks for it."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    lines = [line.strip() for line in config["options.extras_require"]["gpu"].splitlines()]
    assert [Requirement(line).name for line in lines if line] == ["cupy-cuda12x"]
    assert "cupy-cuda13x" in (ROOT / "setup.cfg").read_text()
    for name in ("README.md", "docs/index.md", ".ci/run"):
        for line in install_lines((ROOT / name).read_text()):
            assert "gpu" not in line, f"{name}: {line!r}"
