"""The package's layers: every import of every module under ``src/vlmtune`` (at any depth: inside functions and
``TYPE_CHECKING`` blocks too, relative imports resolved) keeps to the layer rules.

- ``core`` imports no other vlmtune package or module: it is the ground floor of plain types.
- ``config`` imports only ``core``.
- ``models`` imports none of ``data``, ``train``, ``evaluate``, ``cli``, ``serve``, ``ui``, ``export``, ``perf``.
- ``data`` imports none of ``train``, ``evaluate``, ``cli``, ``serve``, ``ui``, ``export``, ``perf``.
- nothing but ``cli`` imports ``cli``.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

ONLY = {"core": {"core"}, "config": {"core", "config"}}
"""Layers that may import nothing of vlmtune but these."""
FORBIDDEN = {
    "models": {"data", "train", "evaluate", "cli", "serve", "ui", "export", "perf"},
    "data": {"train", "evaluate", "cli", "serve", "ui", "export", "perf"},
}
"""Layers and what each may not import; besides these, only ``cli`` imports ``cli``."""

KNOWN_CLI_IMPORTS = {
    "vlmtune.serve.loading -> vlmtune.cli.settings",
    "vlmtune.ui.data -> vlmtune.cli.commands",
    "vlmtune.ui.data -> vlmtune.cli.main",
}
"""Imports of ``cli`` from outside it that predate the rule (the run-settings resolver and the inference loader
still live in ``cli``); the list may only shrink: :func:`test_the_known_cli_imports_still_exist` fails for an
entry that is gone, so it is deleted with the import."""


def module_name(src: Path, path: Path) -> tuple[str, bool]:
    """The dotted name of the module at ``path`` under ``src``, and whether it is a package's ``__init__``."""
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def imports(src: Path, path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every import in the module at ``path``, relative ones resolved; ``from P import x``
    counts as an import of ``P.x`` where that is a module or package under ``src``, else of ``P``."""
    name, is_package = module_name(src, path)
    package = name.split(".") if is_package else name.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                is_module = (src / Path(*sub.split("."))).with_suffix(".py").is_file() or \
                    (src / Path(*sub.split("."))).is_dir()
                found.append((node.lineno, sub if is_module else target))
    return list(dict.fromkeys(found))  # one entry for the names of one ``from P import a, b``


def layer(module: str) -> str | None:
    """``models`` for ``vlmtune.models.load``, ``files`` for ``vlmtune.files``; None outside vlmtune and for the
    top package itself."""
    parts = module.split(".")
    return parts[1] if parts[0] == "vlmtune" and len(parts) > 1 else ("" if module == "vlmtune" else None)


def offences(src: Path) -> list[str]:
    """``module:line -> imported (rule)`` for every import under ``src/vlmtune`` that breaks a layer rule."""
    found = []
    for path in sorted((src / "vlmtune").rglob("*.py")):
        name, _ = module_name(src, path)
        here = layer(name)
        for line, target in imports(src, path):
            there = layer(target)
            if there is None or there == here:
                continue
            if here in ONLY and there not in ONLY[here]:
                rule = f"{here} imports only {', '.join(sorted(ONLY[here]))}"
            elif there in FORBIDDEN.get(here, ()):
                rule = f"{here} may not import {there}"
            elif there == "cli" and f"{name} -> {target}" not in KNOWN_CLI_IMPORTS:
                rule = "only cli imports cli"
            else:
                continue
            found.append(f"{name}:{line} -> {target} ({rule})")
    return found


def test_every_module_keeps_to_the_layer_rules():
    found = offences(SRC)
    assert not found, "imports that break the layer rules:\n" + "\n".join(found)


def test_the_known_cli_imports_still_exist():
    present = {f"{module_name(SRC, path)[0]} -> {target}" for path in (SRC / "vlmtune").rglob("*.py")
               for _, target in imports(SRC, path)}
    assert KNOWN_CLI_IMPORTS <= present, f"gone, delete from KNOWN_CLI_IMPORTS: {KNOWN_CLI_IMPORTS - present}"


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "vlmtune" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


CLEAN = {
    "__init__.py": "",
    "files.py": "",
    "core/__init__.py": "",
    "core/sample.py": "from dataclasses import dataclass\n",
    "core/errors.py": "from . import sample\n",
    "config/__init__.py": "from ..core.errors import *\n",
    "models/__init__.py": "from ..core import sample\nfrom .. import files\nimport vlmtune.config\n",
    "data/__init__.py": "from ..models import get_family\nfrom ..config import Config\n",
    "train/__init__.py": "from ..data import x\nfrom ..evaluate import y\n",
    "evaluate/__init__.py": "",
    "cli/__init__.py": "",
    "cli/main.py": "from . import commands\nfrom ..train import z\n",
}


def test_a_tree_that_keeps_to_the_rules_has_no_offence(tmp_path):
    assert offences(_tree(tmp_path, CLEAN)) == []


def test_planted_bad_imports_are_each_named_with_module_line_and_target(tmp_path):
    planted = {
        "core/errors.py": "from . import sample\n\n\ndef f():\n    from .. import files\n",
        "config/schema.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..models import spec\n",
        "models/grounding.py": "import json\nfrom vlmtune.data.sample import Sample\n",
        "models/load.py": "def load():\n    from ..train import run\n",
        "data/render.py": "class R:\n    def m(self):\n        from ..evaluate import metrics\n",
        "train/run.py": "from ..cli.main import main\n",
    }
    assert offences(_tree(tmp_path, {**CLEAN, **planted})) == [
        "vlmtune.config.schema:3 -> vlmtune.models (config imports only config, core)",
        "vlmtune.core.errors:5 -> vlmtune.files (core imports only core)",
        "vlmtune.data.render:3 -> vlmtune.evaluate (data may not import evaluate)",
        "vlmtune.models.grounding:2 -> vlmtune.data.sample (models may not import data)",
        "vlmtune.models.load:2 -> vlmtune.train.run (models may not import train)",
        "vlmtune.train.run:1 -> vlmtune.cli.main (only cli imports cli)",
    ]
