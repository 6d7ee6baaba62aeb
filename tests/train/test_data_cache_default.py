"""The rendered-sample cache is on without a setting in a run that reads its samples more than once: a plain
two-epoch config caches every sample under RUN/cache and reads it back in its second epoch, a second run into the
folder (--overwrite) reads them all and renders none; a one-pass run (one epoch) caches nothing, and
data.cache_dir: null turns the cache off."""

import json

import pytest

from vlmtune.cli.main import main
from vlmtune.config import load_config
from vlmtune.data.demo import make_demo_data
from vlmtune.data.settings import renderer_for
from vlmtune.train.trainer_inputs import data_cache, several_passes


def _entries(run_dir) -> dict[str, int]:
    return {str(p.relative_to(run_dir)): p.stat().st_mtime_ns for p in (run_dir / "cache").rglob("*.safetensors")}


@pytest.mark.slow  # three short training runs
def test_a_plain_config_caches_under_the_run_folder_and_a_second_run_reads_it(tmp_path, tiny_dir):
    data = make_demo_data(tmp_path / "data", n_train=10, n_val=2, seed=1)
    config = tmp_path / "run.yaml"
    config.write_text(json.dumps({
        "model": {"path": str(tiny_dir("qwen2_vl"))}, "data": {"train": str(data["train"])},
        "lora": {"r": 4}, "train": {"output_dir": str(tmp_path / "run"), "batch_size": 2, "progress": False,
                                    "report_to": "none", "epochs": 2}, "eval": {"at_end": False}}))
    run = tmp_path / "run"

    assert main(["train", str(config)]) == 0
    first = _entries(run)
    assert len(first) == 10  # every training sample, once
    log = (run / "train.log").read_text()
    assert "data cache %s: 10 samples read, 10 rendered" % (run / "cache") in log  # epoch 2 read epoch 1's
    assert "plan: rendering: in the training loop; cached in %s" % (run / "cache") in log  # CPU: no thread

    assert main(["train", str(config), "--overwrite", "train.lr=1e-3"]) == 0
    assert _entries(run) == first  # kept by --overwrite, nothing written again
    assert "data cache %s: 20 samples read, 0 rendered" % (run / "cache") in (run / "train.log").read_text()

    one_pass = tmp_path / "one-pass"
    assert main(["train", str(config), "train.epochs=1", f"train.output_dir={one_pass}"]) == 0
    assert not (one_pass / "cache").exists()
    log = (one_pass / "train.log").read_text()
    assert "data cache: off (data.cache_dir: auto caches runs of more than one epoch" in log
    assert "plan: rendering: in the training loop; not cached" in log


@pytest.mark.parametrize(("overrides", "cached"), [
    ([], False), (["train.epochs=1.5"], True), (["train.max_steps=30"], True), (["train.epochs=3"], True),
    (["train.epochs=3", "data.cache_dir=null"], False), (["data.cache_dir=shared"], True)])
def test_which_runs_cache(overrides, cached, tmp_path, tiny_dir):
    model = tiny_dir("qwen2_vl")
    cfg = load_config(None, [f"model.path={model}", "data.train=t.jsonl", f"train.output_dir={tmp_path / 'run'}",
                             *overrides])
    cache = data_cache(cfg, renderer_for(str(model), cfg.data))
    assert (cache is not None) == cached
    if cache is not None and cfg.data.cache_dir == "auto":
        assert several_passes(cfg) and cache.root == tmp_path / "run" / "cache"
