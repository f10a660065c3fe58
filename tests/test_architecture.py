"""The package's import graph: layered as pyproject.toml's import contract says, no cycles.

CI also runs ``lint-imports`` on the same contract; this test keeps the rule in the
README's test command, with a graph built from the source alone.
"""
import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "fftconv"


def _modules() -> dict:
    """``{dotted module name: path}`` of every module of the package."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(name: str, path: Path, modules: dict) -> set:
    """The package modules ``name`` imports (a submodule counts as itself, a
    subpackage's ``__init__`` as the subpackage)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(base + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            candidates = [f"{base}.{alias.name}" for alias in node.names] + [base]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        for target in candidates:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                targets.add(target)
    return targets


GRAPH = {name: _imports(name, path, _modules()) for name, path in _modules().items()}


def _layer_of(module: str, layers: list) -> int:
    """Index of the layer (0 = top) that holds ``module`` or its top-level subpackage."""
    top = module.split(".")[1] if "." in module else ""
    for i, layer in enumerate(layers):
        if top in [m.strip() for m in layer.split("|")]:
            return i
    raise AssertionError(f"{module} is in no layer of the import contract")


def test_the_import_graph_has_no_cycle():
    state = {}

    def visit(module, path):
        state[module] = "open"
        for target in sorted(GRAPH[module]):
            if state.get(target) == "open":
                raise AssertionError("import cycle: " + " -> ".join(path + [target]))
            if target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])


@pytest.mark.skipif(sys.version_info < (3, 11), reason="reads pyproject.toml with tomllib")
def test_every_module_imports_only_from_layers_below_it():
    import tomllib
    contract = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = contract["contracts"][0]["layers"]
    upward = [f"{module} (layer {_layer_of(module, layers)}) imports {target} "
              f"(layer {_layer_of(target, layers)})"
              for module, targets in GRAPH.items() if module != "fftconv"
              for target in targets if target != "fftconv"
              and _layer_of(target, layers) <= _layer_of(module, layers)
              and target.split(".")[1] != module.split(".")[1]]
    assert not upward, "\n".join(upward)


def test_no_module_imports_the_package_root():
    """A module importing ``fftconv`` itself would close a cycle through ``__init__``."""
    assert not [m for m, targets in GRAPH.items() if m != "fftconv" and "fftconv" in targets]
