"""The rendered-sample cache is on without a setting: a plain config caches every sample under RUN/cache, a second
run into the folder (--overwrite) reads them all back and renders none, and data.cache_dir: null turns it off."""

import json

import pytest

from vlmtune.cli.main import main
from vlmtune.data.demo import make_demo_data

pytestmark = pytest.mark.slow  # three short training runs


def _entries(run_dir) -> dict[str, int]:
    return {str(p.relative_to(run_dir)): p.stat().st_mtime_ns for p in (run_dir / "cache").rglob("*.safetensors")}


def test_a_plain_config_caches_under_the_run_folder_and_a_second_run_reads_it(tmp_path, tiny_dir):
    data = make_demo_data(tmp_path / "data", n_train=10, n_val=2, seed=1)
    config = tmp_path / "run.yaml"
    config.write_text(json.dumps({
        "model": {"path": str(tiny_dir("qwen2_vl"))}, "data": {"train": str(data["train"])},
        "lora": {"r": 4}, "train": {"output_dir": str(tmp_path / "run"), "batch_size": 2, "progress": False,
                                    "report_to": "none"}, "eval": {"at_end": False}}))
    run = tmp_path / "run"

    assert main(["train", str(config)]) == 0
    first = _entries(run)
    assert len(first) == 10  # every training sample, once
    assert "data cache %s: 0 samples read, 10 rendered" % (run / "cache") in (run / "train.log").read_text()

    assert main(["train", str(config), "--overwrite", "train.lr=1e-3"]) == 0
    assert _entries(run) == first  # kept by --overwrite, nothing written again
    assert "data cache %s: 10 samples read, 0 rendered" % (run / "cache") in (run / "train.log").read_text()

    assert main(["train", str(config), "data.cache_dir=null", f"train.output_dir={tmp_path / 'off'}"]) == 0
    assert not (tmp_path / "off" / "cache").exists()
    assert "data cache" not in (tmp_path / "off" / "train.log").read_text()
