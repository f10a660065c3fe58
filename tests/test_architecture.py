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


# -- the array-namespace seam: generic modules never call numpy on operands ------------------

#: numpy names a generic module may use: dtypes and host scalars (shapes, sizes), never
#: an operation on an operand (issue 19: ``fftconv.backends`` provides those, on the
#: operands' library and device).  ``errstate`` is not among them (``Arrays.quiet()``).
NUMPY_ALLOWED = frozenset({
    "dtype", "float16", "float32", "float64", "complex64", "complex128", "int64", "intp",
    "result_type", "can_cast", "finfo", "iinfo", "integer", "floating", "bool_", "generic",
    "ndindex", "prod",
})
#: allowed in annotations (and ``if TYPE_CHECKING:`` blocks) only
NUMPY_TYPING_ONLY = frozenset({"ndarray"})
#: allowed in one module only
NUMPY_ALLOWED_IN = {"ma": {"fftconv/checks.py"},
                    # fftconv.Conv seeds its initial weights on the host, as PyTorch's
                    # bounds say, then moves them to its library once
                    "random": {"fftconv/nn.py"}}
#: modules that are host-side or library-specific by design: the backends, the torch and
#: Dask integrations, the cost model and auto's timing, the wisdom file and the direct
#: algorithm (strided views; unavailable on namespaces without them)
NUMPY_EXEMPT = ("fftconv/backends/", "fftconv/torch/", "fftconv/costs.py",
                "fftconv/autoselect.py", "fftconv/wisdom.py",
                "fftconv/compiled.py")   # numba kernels: numpy arrays by design


def _numpy_aliases(tree) -> tuple:
    """Names bound to the numpy module (``import numpy as np``) and to names imported
    from it (``from numpy import pad``: ``{local name: numpy name}``)."""
    modules, names = set(), {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "numpy":
                    modules.add(alias.asname or "numpy")
                elif alias.name.startswith("numpy.") and alias.asname:
                    names[alias.asname] = alias.name.split(".")[1]
                elif alias.name.startswith("numpy."):
                    modules.add("numpy")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and (
                node.module == "numpy" or node.module.startswith("numpy.")):
            for alias in node.names:
                if node.module == "numpy.typing":
                    continue                                     # typing names only
                first = alias.name if node.module == "numpy" else node.module.split(".")[1]
                names[alias.asname or alias.name] = first
    return modules, names


_TYPING_FORMS = {"Tuple", "Optional", "Union", "List", "Dict", "Callable", "Sequence",
                 "Type", "tuple", "list", "dict", "type"}


def _is_type_alias(value) -> bool:
    """``Pair = Tuple[Optional[np.ndarray], ...]``: a subscripted typing form."""
    if not isinstance(value, ast.Subscript):
        return False
    base = value.value
    name = base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", "")
    return name in _TYPING_FORMS


def _typing_nodes(tree) -> set:
    """ids of the nodes inside annotations, type aliases, ``cast``'s type and
    ``if TYPE_CHECKING:`` blocks."""
    roots = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and _is_type_alias(node.value):
            roots.append(node.value)
        if isinstance(node, ast.Call) and node.args and (
                getattr(node.func, "id", None) == "cast"
                or getattr(node.func, "attr", None) == "cast"):
            roots.append(node.args[0])
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args
            for a in args.posonlyargs + args.args + args.kwonlyargs + [args.vararg, args.kwarg]:
                if a is not None and a.annotation is not None:
                    roots.append(a.annotation)
            if node.returns is not None:
                roots.append(node.returns)
        elif isinstance(node, ast.AnnAssign):
            roots.append(node.annotation)
        elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            roots.extend(node.body)
    return {id(n) for root in roots for n in ast.walk(root)}


def numpy_uses(path: Path) -> list:
    """``(line, name, in_typing)`` for each use of a numpy name in ``path``:
    ``np.<name>`` / ``numpy.<name>`` attributes and names imported from numpy."""
    tree = ast.parse(path.read_text())
    modules, names = _numpy_aliases(tree)
    typing = _typing_nodes(tree)
    uses = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and node.value.id in modules:
            uses.append((node.lineno, node.attr, id(node) in typing))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and (
                node.module == "numpy" or node.module.startswith("numpy.")) \
                and node.module != "numpy.typing":
            for alias in node.names:
                uses.append((node.lineno, names[alias.asname or alias.name], False))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("numpy."):
                    uses.append((node.lineno, alias.name.split(".")[1], False))
        elif isinstance(node, ast.Name) and node.id in names and isinstance(node.ctx, ast.Load):
            uses.append((node.lineno, names[node.id], id(node) in typing))
    return uses


def numpy_offences() -> list:
    """``module:line:np.name`` for each numpy use outside the rule."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(NUMPY_EXEMPT):
            continue
        for line, name, in_typing in numpy_uses(path):
            if name in NUMPY_ALLOWED or rel in NUMPY_ALLOWED_IN.get(name, ()):
                continue
            if name in NUMPY_TYPING_ONLY and in_typing:
                continue
            found.append(f"{rel}:{line}: np.{name}")
    return sorted(set(found), key=lambda s: (s.split(":")[0], int(s.split(":")[1]), s))


def test_generic_modules_do_not_call_numpy_on_operands():
    """Issue 19: outside the backends (and the host-side modules listed in
    ``NUMPY_EXEMPT``) fftconv uses numpy for dtypes and host scalars only; every
    operation on an operand goes through ``fftconv.backends`` (``Arrays``), so a CuPy
    array or a tensor never meets numpy."""
    offences = numpy_offences()
    assert not offences, (f"{len(offences)} numpy uses outside the array-namespace seam "
                          f"(module:line: name):\n" + "\n".join(offences))


def test_the_numpy_rule_sees_what_it_should(tmp_path):
    """The scanner itself, on a made-up module."""
    module = tmp_path / "m.py"
    module.write_text(
        "from __future__ import annotations\n"
        "import numpy as np\n"
        "import numpy\n"
        "from numpy import pad, float32 as f32\n"
        "from numpy.typing import ArrayLike\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    T = np.ndarray\n"
        "Pair = Tuple[Optional[np.ndarray], np.ndarray]\n"
        "def f(a: np.ndarray, b: ArrayLike) -> np.ndarray:\n"
        "    x: np.ndarray = np.empty(3, np.float64)\n"
        "    with np.errstate(invalid='ignore'):\n"
        "        y = numpy.fft.rfft(cast(np.ndarray, x))\n"
        "    isinstance(a, np.ndarray)\n"
        "    return pad(y, 1).astype(f32)\n")
    uses = numpy_uses(module)
    flagged = sorted((line, name) for line, name, typing in uses
                     if name not in NUMPY_ALLOWED and not (name in NUMPY_TYPING_ONLY and typing))
    assert flagged == [(4, "pad"), (11, "empty"), (12, "errstate"), (13, "fft"),
                       (14, "ndarray"), (15, "pad")], flagged
