"""The demo's LoRA config has one source: the package's ``demo.yaml``, which ``configs/demo.yaml`` links to."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from vlmtune.config import load_config
from vlmtune.demo import demo_config

REPO = Path(__file__).parents[1]


def test_the_repository_config_is_the_file_the_package_ships():
    shipped = REPO / "src" / "vlmtune" / "demo.yaml"
    assert (REPO / "configs" / "demo.yaml").resolve() == shipped.resolve()
    assert load_config(shipped) == demo_config(".")
    # Under another root, with overrides, as `vlmtune demo` runs it.
    cfg = demo_config("/runs/here", ["train.lr=1e-3"])
    assert (cfg.model.path, cfg.data.train, cfg.data.val, cfg.train.output_dir) == (
        "/runs/here/demo/base/model", "/runs/here/demo/data/train.jsonl", "/runs/here/demo/data/val.jsonl",
        "/runs/here/demo/run")
    assert (cfg.train.lr, cfg.train.epochs, cfg.lora.r, cfg.eval.metrics) == (1e-3, 10, 8, ["exact_match"])


@pytest.mark.slow  # builds the wheel with setuptools: about 10 s on 2 CPU cores
def test_an_installed_wheel_reads_the_demo_config(tmp_path):
    source = tmp_path / "source"
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist")], check=True, capture_output=True)
    installed = tmp_path / "site"
    with zipfile.ZipFile(next((tmp_path / "dist").glob("vlmtune-*.whl"))) as wheel:
        assert "vlmtune/demo.yaml" in wheel.namelist()
        wheel.extractall(installed)
    # Run where no repository is: the installed package alone must carry the config.
    code = "from vlmtune.demo import demo_config; cfg = demo_config('r'); print(cfg.model.path, cfg.train.lr)"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={"PYTHONPATH": str(installed)},
                         check=True, capture_output=True, text=True).stdout
    assert out.split() == ["r/demo/base/model", "0.002"]
