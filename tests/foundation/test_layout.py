"""The dependency direction of ARCHITECTURE.md, checked on the source: who may import whom, no
import cycles between modules, and modules that stay small."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SERVICE = ("annotate", "training", "registry", "serving", "ops", "frontend", "config")
HEAVY = {"torch", "transformers", "peft", "accelerate", "trl"}


def _sources(*packages: str) -> list[Path]:
    return sorted(p for package in packages for p in (REPO / package).rglob("*.py") if "migrations" not in p.parts)


def _imports(path: Path, *, top_level_only: bool = False) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    nodes = tree.body if top_level_only else ast.walk(tree)
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("path", _sources("annotate"), ids=str)
def test_annotate_never_imports_torch_rlhf_or_the_training_side(path):
    assert not _imports(path) & (HEAVY | {"rlhf", "training", "registry", "serving", "ops"})


@pytest.mark.parametrize("path", _sources("training", "registry", "serving", "ops", "frontend", "config"), ids=str)
def test_the_web_side_imports_torch_and_rlhf_only_inside_functions(path):
    # so the web process, which imports these apps' views and models, stays light
    assert not _imports(path, top_level_only=True) & (HEAVY | {"rlhf"})


@pytest.mark.parametrize("path", _sources("rlhf"), ids=str)
def test_rlhf_never_imports_the_service(path):
    assert not _imports(path) & {"django", "celery", *SERVICE}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level_edges(path: Path, modules: set[str]) -> set[str]:
    """Modules of ours that `path` imports at its top level (relative imports resolved)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    edges = set()
    for node in ast.parse(path.read_text()).body:
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                edges.add(target)
    return edges


def test_no_import_cycles():
    paths = _sources(*SERVICE, "rlhf")
    modules = {_module_name(p) for p in paths}
    graph = {_module_name(p): _top_level_edges(p, modules) for p in paths}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt.startswith(node + "."):
                continue  # a package importing its own submodules is how packages are built
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)


@pytest.mark.parametrize("path", _sources(*SERVICE, "rlhf"), ids=str)
def test_modules_stay_small(path):
    assert len(path.read_text().splitlines()) <= 420, "split it by what its parts are about"
