"""The scripts in benchmarks/ import only names vlmtune has: each ``from vlmtune... import name`` (at any depth,
inside functions too) resolves, so a renamed function breaks this test rather than a benchmark run."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def missing_names(script: Path) -> list[str]:
    """``module.name`` for every name a script imports from vlmtune that does not exist."""
    missing = []
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "vlmtune":
            module = importlib.import_module(node.module)
            for alias in node.names:
                if not hasattr(module, alias.name):
                    try:
                        importlib.import_module(f"{node.module}.{alias.name}")
                    except ImportError:
                        missing.append(f"{script.name}:{node.lineno} {node.module}.{alias.name}")
    return missing


def test_every_benchmark_imports_names_that_exist():
    scripts = sorted(BENCHMARKS.glob("*.py"))
    assert len(scripts) >= 5
    assert [m for script in scripts for m in missing_names(script)] == []


def test_a_renamed_name_is_reported(tmp_path):
    script = tmp_path / "old.py"
    script.write_text("def main():\n    from vlmtune.models import family_of, spec_for\n")
    assert missing_names(script) == ["old.py:2 vlmtune.models.family_of"]
