"""``train.method`` is a :class:`Method`: what each method saves, loads and needs is asked of it, the config keeps
reading and writing the plain names, and no code outside config/method.py compares a method with a name."""

import ast
from pathlib import Path

import pytest
import yaml

from vlmtune.config import Method, dump_config, load_config
from vlmtune.core.errors import ConfigError

SRC = Path(__file__).resolve().parents[2] / "src" / "vlmtune"
OWN_MODULE = SRC / "config" / "method.py"


@pytest.mark.parametrize(("name", "adapter", "quantized", "dora", "folder", "unquantized"), [
    ("lora", True, False, False, "adapter", "lora"),
    ("dora", True, False, True, "adapter", "dora"),
    ("qlora", True, True, False, "adapter", "lora"),
    ("full", False, False, False, "model", "full"),
])
def test_each_method_says_what_it_trains_saves_and_needs(name, adapter, quantized, dora, folder, unquantized):
    method = Method(name)
    assert (method.trains_adapter, method.quantized, method.dora) == (adapter, quantized, dora)
    assert method.weights_folder == folder and method.unquantized is Method(unquantized)
    assert method.weights_dir(Path("runs/r")) == Path("runs/r") / folder
    assert method.adapter_dir(Path("runs/r")) == (Path("runs/r/adapter") if adapter else None)
    assert method.separate_base is (not adapter)


def test_the_config_reads_and_writes_the_plain_names(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("model: {path: m}\ndata: {train: t.jsonl}\ntrain: {method: dora}\n")
    cfg = load_config(config, ["train.method=qlora"])
    assert cfg.train.method is Method.QLORA and f"train.method={cfg.train.method}" == "train.method=qlora"
    assert load_config(config).train.method is Method.DORA
    dump_config(cfg, tmp_path / "out.yaml")
    assert yaml.safe_load((tmp_path / "out.yaml").read_text())["train"]["method"] == "qlora"
    assert load_config(tmp_path / "out.yaml").train.method is Method.QLORA


def test_an_unknown_method_names_the_key_and_the_choices(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("model: {path: m}\ndata: {train: t.jsonl}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(config, ["train.method=lorra"])
    assert str(caught.value).splitlines()[-1].strip() == (
        "train.method: Input should be 'lora', 'dora', 'qlora' or 'full' (got 'lorra')")


def _names_a_method(node: ast.expr) -> bool:
    return (isinstance(node, ast.Name) and node.id.endswith("method")) or \
        (isinstance(node, ast.Attribute) and node.attr.endswith("method"))


def _is_a_name(node: ast.expr) -> bool:
    """A string, a collection holding one, a constant of them (``LORA_METHODS``) or a member of Method: what a
    method would be compared with by name."""
    if isinstance(node, ast.Name):
        return node.id.isupper() and "METHOD" in node.id
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return any(_is_a_name(e) for e in node.elts)
    return isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "Method"


def method_name_compares(root: Path = SRC) -> list[str]:
    """``path:line: source`` of every comparison of a method with a name in the package, outside config/method.py."""
    found = []
    for path in sorted(root.rglob("*.py")):
        if path == OWN_MODULE:
            continue
        source = path.read_text(encoding="utf-8")
        compares = sorted((n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Compare)),
                          key=lambda n: n.lineno)
        for node in compares:
            operands = [node.left, *node.comparators]
            if any(_names_a_method(o) for o in operands) and any(_is_a_name(o) for o in operands):
                found.append(f"{path.relative_to(root.parent)}:{node.lineno}: {ast.get_source_segment(source, node)}")
    return found


def test_no_code_compares_a_method_with_a_name_outside_its_type():
    assert method_name_compares() == [], "ask the Method (trains_adapter, quantized, dora, ...) instead"


def test_the_scan_finds_each_kind_of_name_compare(tmp_path):
    """The scan above is only as good as what it recognises: each way the package used to compare is caught."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.py").write_text(
        'def f(cfg, t, method):\n'
        '    a = cfg.train.method == "full"\n'
        '    b = t.method != "full"\n'
        '    c = method in ("lora", "dora")\n'
        '    d = "qlora" == method\n'
        '    e = method is Method.FULL\n'
        '    g = cfg.train.method not in LORA_METHODS\n'
        '    for method in ("lora", "full"):\n'  # iterating over names is no compare
        '        pass\n'
        '    return cfg.train.method.trains_adapter\n')
    assert [line.split(": ", 1)[0] for line in method_name_compares(tmp_path / "pkg")] == [
        f"pkg/m.py:{n}" for n in (2, 3, 4, 5, 6, 7)]
