"""``data.image_in_every_batch`` in a real run: batches without an image get the placeholder image (the vision tower
runs on every batch, as ZeRO-3 / FSDP need) and the run trains exactly as without it."""

import json

import pytest

from vlmtune.config import load_config
from vlmtune.core.sample import Message, Sample, TextPart
from vlmtune.data.demo import make_demo_data
from vlmtune.data.formats import read_samples
from vlmtune.models import get_family, load_model
from vlmtune.train import train
from vlmtune.train.trainer_inputs import image_in_every_batch

pytestmark = pytest.mark.slow  # trains every batch with and without images

FAMILY = "qwen2_vl"


def _mixed_data(folder) -> str:
    """Demo samples with images, then as many text-only ones: batches of 2 in order are all one or the other."""
    path = make_demo_data(folder, n_train=4, n_val=1, seed=4)["train"]
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows += [{"messages": [{"role": "user", "content": f"Name colour number {i}."},
                           {"role": "assistant", "content": colour}]}
             for i, colour in enumerate(["red", "blue", "green", "yellow"])]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _run(tmp_path, tiny_dir, data: str, setting: str):
    cfg = load_config(None, [
        f"model.path={tiny_dir(FAMILY)}", f"data.train={data}", f"data.image_in_every_batch={setting}",
        f"train.output_dir={tmp_path / setting}", "train.max_steps=4", "train.batch_size=2", "train.lr=1e-3",
        "train.group_by_length=false", "train.logging_steps=1", "train.progress=false", "train.report_to=none",
        "train.trace_samples=true", "lora.r=4", "train.seed=5"])
    return train(cfg)


def test_the_placeholder_changes_no_loss_and_the_vision_tower_sees_every_batch(tmp_path, tiny_dir, monkeypatch):
    data = _mixed_data(tmp_path / "data")
    vision_calls: list[int] = []

    def counting(*args, **kwargs):
        model = load_model(*args, **kwargs)
        [prefix] = get_family(FAMILY).components["vision"]
        model.get_submodule(prefix).register_forward_hook(lambda *_: vision_calls.append(1))
        return model

    monkeypatch.setattr("vlmtune.train.model.load_model", counting)
    runs = {}
    for setting in ("false", "true"):
        vision_calls.clear()
        runs[setting] = (_run(tmp_path, tiny_dir, data, setting), len(vision_calls))

    traces = {s: [json.loads(line)["ids"] for line in (r.run_dir / "samples.rank0.jsonl").read_text().splitlines()]
              for s, (r, _) in runs.items()}
    assert traces["true"] == traces["false"]
    text_only = sum(all(int(i.rsplit(":", 1)[1]) > 4 for i in ids) for ids in traces["true"])
    assert 0 < text_only < 4, "the data order gave no batch without an image (or only such batches)"
    # 4 training steps: the tower runs in every one with the placeholder, and skips the text-only ones without.
    assert runs["true"][1] == 4 and runs["false"][1] == 4 - text_only
    losses = {s: [json.loads(line)["loss"] for line in (r.run_dir / "metrics.jsonl").read_text().splitlines()
                  if "loss" in json.loads(line)] for s, (r, _) in runs.items()}
    assert len(losses["true"]) == 4 and losses["true"] == pytest.approx(losses["false"], rel=1e-5)


def test_auto_turns_it_on_only_for_several_processes_and_data_with_text_only_samples(tmp_path):
    text = Sample((Message("user", (TextPart("hi"),)), Message("assistant", (TextPart("yes"),))), id="t")
    image = make_demo_data(tmp_path, n_train=1, n_val=1, seed=1)["train"]
    [with_image] = read_samples(image)
    assert image_in_every_batch("auto", 2, [with_image, text])
    assert not image_in_every_batch("auto", 1, [with_image, text])
    assert not image_in_every_batch("auto", 2, [with_image])
    assert image_in_every_batch(True, 1, [with_image]) and not image_in_every_batch(False, 8, [text])
