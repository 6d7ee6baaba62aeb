"""Everything vlmtune writes is readable by group and others under umask 022 (a server running as another user
reads an export): run folder with checkpoints, rendered-sample cache, exported adapter, merged folder, tiny model."""

import json
import os
import stat

import pytest

from vlmtune.cli.main import main
from vlmtune.data.demo import make_demo_data

FAMILY = "qwen2_vl"


@pytest.fixture
def umask_022():
    before = os.umask(0o022)
    yield
    os.umask(before)


def _unreadable(*folders) -> list[str]:
    """Files under ``folders`` that group or others cannot read, with their modes."""
    found = [p for folder in folders for p in folder.rglob("*") if p.is_file()]
    assert found, folders
    return [f"{p} {oct(stat.S_IMODE(p.stat().st_mode))}" for p in found if p.stat().st_mode & 0o044 != 0o044]


def test_runs_caches_and_exports_are_readable_by_group_and_others(umask_022, tmp_path, tiny_dir):
    data = make_demo_data(tmp_path / "data", n_train=6, n_val=2, seed=1)
    run, cache = tmp_path / "run", tmp_path / "cache"
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({
        "model": {"path": str(tiny_dir(FAMILY))},
        "data": {"train": str(data["train"]), "cache_dir": str(cache)},
        "lora": {"r": 4},
        "train": {"output_dir": str(run), "max_steps": 2, "save_steps": 1, "save_total_limit": None,
                  "batch_size": 2, "progress": False, "report_to": "none"},
        "eval": {"at_end": False},
    }))
    assert main(["train", str(config)]) == 0
    assert (run / "checkpoints" / "checkpoint-1" / "adapter_model.safetensors").is_file()
    assert main(["export", "--adapter", str(run / "adapter"), "-o", str(tmp_path / "adapter")]) == 0
    assert main(["export", "--adapter", str(run / "adapter"), "-o", str(tmp_path / "merged"), "--merge"]) == 0
    assert main(["make-tiny-model", "--family", FAMILY, str(tmp_path / "tiny")]) == 0

    assert _unreadable(run, cache, tmp_path / "adapter", tmp_path / "merged", tmp_path / "tiny") == []
    # The umask still decides: nothing became writable by group or others.
    assert stat.S_IMODE((tmp_path / "merged" / "model.safetensors").stat().st_mode) == 0o644


def test_images_a_hub_dataset_embeds_are_written_readable(umask_022, tmp_path, images):
    import datasets

    from vlmtune.data.formats import read_dataset

    features = datasets.Features({"image": datasets.Image(), "query": datasets.Value("string"),
                                  "label": datasets.Value("string")})
    datasets.Dataset.from_dict({"image": [{"bytes": images["red.png"].read_bytes(), "path": None}],
                                "query": ["Which colour?"], "label": ["red"]},
                               features=features).save_to_disk(tmp_path / "ds")
    [sample] = read_dataset(tmp_path / "ds").samples
    assert sample.images[0].parent == tmp_path / "ds.images"
    assert _unreadable(tmp_path / "ds.images") == []
