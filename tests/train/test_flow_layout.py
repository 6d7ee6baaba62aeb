"""The training flow stays readable on one screen: ``train()`` is a recipe of named steps, the modules under
``train/`` stay short, the Trainer is built from values computed beforehand, and ``perf/`` builds on the public
functions of ``train/``'s modules."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import vlmtune
from vlmtune.train import run

SRC = Path(vlmtune.__file__).parent


def test_the_training_entry_point_fits_on_one_screen():
    lines, _ = inspect.getsourcelines(run.train)
    assert len(lines) <= 60, f"train() is {len(lines)} lines"


def test_no_module_of_the_training_package_is_over_300_lines():
    sizes = {path.name: len(path.read_text().splitlines()) for path in (SRC / "train").glob("*.py")}
    assert "run.py" in sizes and {name: n for name, n in sizes.items() if n > 300} == {}


def test_the_trainer_call_holds_no_inline_conditional():
    [function] = [node for node in ast.parse(inspect.getsource(run)).body
                  if isinstance(node, ast.FunctionDef) and node.name == "train"]
    [call] = [node for node in ast.walk(function) if isinstance(node, ast.Call)
              and getattr(node.func, "id", None) == "VlmTrainer"]
    assert [ast.unparse(n) for n in ast.walk(call) if isinstance(n, ast.IfExp | ast.BoolOp)] == []


def test_perf_imports_only_public_names_of_the_training_modules():
    private = []
    for path in sorted((SRC / "perf").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("train"):
                private += [f"{path.name}: {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    assert private == []
