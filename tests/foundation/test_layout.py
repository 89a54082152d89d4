"""The dependency direction of ARCHITECTURE.md, checked on the source."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


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


@pytest.mark.parametrize("path", sorted((REPO / "annotate").rglob("*.py")), ids=str)
def test_annotate_never_imports_torch_rlhf_or_worker(path):
    assert not _imports(path) & {"torch", "transformers", "rlhf", "worker"}


@pytest.mark.parametrize("path", sorted((REPO / "worker").rglob("*.py")), ids=str)
def test_worker_imports_torch_and_rlhf_only_inside_functions(path):
    # so the web process, which imports worker's views and models, stays light
    assert not _imports(path, top_level_only=True) & {"torch", "transformers", "rlhf"}


@pytest.mark.parametrize("path", sorted((REPO / "rlhf").rglob("*.py")), ids=str)
def test_rlhf_never_imports_the_service(path):
    assert not _imports(path) & {"django", "celery", "annotate", "worker", "config", "frontend"}
