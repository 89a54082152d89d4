"""rlhf is a pure library: no django, celery or service packages, no settings, no environment."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import rlhf

FORBIDDEN = {"django", "celery", "annotate", "worker", "config", "frontend", "kombu", "rest_framework"}
PACKAGE = Path(rlhf.__file__).parent


def test_source_imports_nothing_forbidden_and_reads_no_environment():
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            problems += [f"{path.name}:{node.lineno} imports {n}" for n in names if n.split(".")[0] in FORBIDDEN]
            if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv"):
                problems.append(f"{path.name}:{node.lineno} reads os.{node.attr}")
    assert not problems, problems


def test_importing_every_module_loads_no_service_package():
    modules = sorted(f"rlhf.{p.stem}" for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__"))
    code = ("import importlib, json, sys\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            "print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=PACKAGE.parent, env={"PATH": "/usr/bin:/bin"})
    loaded = {m.split(".")[0] for m in json.loads(out.stdout.strip().splitlines()[-1])}
    assert not loaded & FORBIDDEN, loaded & FORBIDDEN
    assert "rlhf" in loaded and "torch" in loaded
