"""README's Layout section names every module of the package under its own folder, so the map a newcomer reads is
the tree."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "vlmtune"


def layout_sections(readme: str) -> dict[str, str]:
    """The Layout block of README.md, by top-level folder ("" for the package's own modules)."""
    block = readme.split("```\nsrc/vlmtune/\n", 1)[1].split("```", 1)[0]
    sections: dict[str, str] = {}
    current = ""
    for line in block.splitlines():
        head = line[2:].split(" ", 1)[0]
        if line.startswith("  ") and not line.startswith("   "):  # a new folder's first line, or the package's files
            current = head[:-1] if head.endswith("/") else ""
        sections[current] = sections.get(current, "") + line + "\n"
    return sections


def test_the_readme_layout_names_every_module_under_its_folder():
    sections = layout_sections((ROOT / "README.md").read_text())
    unnamed = []
    for path in sorted(SRC.rglob("*.py")):
        if path.name == "__init__.py":
            continue
        parts = path.relative_to(SRC).parts
        folder = parts[0] if len(parts) > 1 else ""
        if path.name not in sections.get(folder, ""):
            unnamed.append(str(path.relative_to(SRC)))
    assert len(sections) > 10  # the block was found and split
    assert unnamed == [], f"README's Layout does not name these modules: {unnamed}"


def test_every_folder_the_layout_names_exists():
    sections = layout_sections((ROOT / "README.md").read_text())
    assert sorted(name for name in sections if name) == sorted(
        p.name for p in SRC.iterdir() if p.is_dir() and p.name != "__pycache__")
