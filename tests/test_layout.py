"""The package's shape: modules small enough to hold one job each."""

from pathlib import Path

SRC = Path(__file__).parents[1] / "src" / "vlmtune"
MAX_LINES = 300


def test_no_module_is_over_300_lines():
    lengths = {str(path.relative_to(SRC)): len(path.read_text().splitlines()) for path in sorted(SRC.rglob("*.py"))}
    over = {name: n for name, n in lengths.items() if n > MAX_LINES}
    assert len(lengths) > 100  # the whole package was read
    assert over == {}, f"split these modules by job (over {MAX_LINES} lines): {over}"
