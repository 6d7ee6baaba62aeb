"""``train.stage: dpo`` through ``vlmtune train``: a tiny Qwen2-VL learns to prefer the right answer about an image it
has not seen, the run resumes exactly, and the reference model is the one the config names."""

from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path

import pytest
import torch

from tests.conftest import write_jsonl
from vlmtune.cli.main import main
from vlmtune.data import Renderer
from vlmtune.data.demo import COLOURS, SHAPES, make_demo_data
from vlmtune.data.formats import read_samples
from vlmtune.data.preference import PreferenceCollator, pair_datasets
from vlmtune.models import get_family, load_model, load_processor

FAMILY = "qwen2_vl"


def preference_data(folder: Path, n_train: int, n_val: int, seed: int = 0) -> dict[str, Path]:
    """The demo's shapes task as pairs: the right colour or shape chosen, another of the same kind rejected."""
    demo = make_demo_data(folder, n_train=n_train, n_val=n_val, seed=seed)
    rng = random.Random(seed)
    paths = {}
    for split, path in demo.items():
        pairs = []
        for line in path.read_text().splitlines():
            record = json.loads(line)
            right = record["messages"][-1]["content"][0]["text"]
            wrong = rng.choice([a for a in (COLOURS if record["task"] == "colour" else SHAPES) if a != right])
            pairs.append({"prompt": record["messages"][:1], "chosen": right, "rejected": wrong})
        paths[split] = write_jsonl(folder / f"{split}_pairs.jsonl", pairs)
    return paths


def write_config(path: Path, **sections) -> str:
    path.write_text(json.dumps(sections))
    return str(path)


def logged(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def losses(run: Path) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in logged(run) if "loss" in e}


def held_out_margins(model: torch.nn.Module, renderer: Renderer, samples) -> list[float]:
    """log p(chosen) - log p(rejected) of each pair, summed over the answer tokens (and end token)."""
    chosen, rejected = pair_datasets(samples, renderer)
    collator = PreferenceCollator(chosen, rejected, renderer.processor.tokenizer.pad_token_id)
    margins = []
    with torch.no_grad():
        for i in range(len(samples)):
            batch = collator([{"index": i}])
            mask = batch.pop("completion_mask")[:, 1:]
            logits = model(**batch).logits[:, :-1].float()
            logp = torch.log_softmax(logits, -1).gather(-1, batch["input_ids"][:, 1:, None])[..., 0]
            sums = (logp * mask).sum(1)
            margins.append(float(sums[0] - sums[1]))
    return margins


@pytest.mark.slow  # trains 30 DPO steps and scores held-out pairs before and after
def test_dpo_raises_the_held_out_preference_for_the_right_answer(tmp_path, tiny_dir):
    from peft import PeftModel

    model_dir = tiny_dir(FAMILY)
    data = preference_data(tmp_path / "data", n_train=48, n_val=32)
    config = write_config(
        tmp_path / "dpo.yaml", model={"path": str(model_dir)}, data={"train": str(data["train"])},
        lora={"r": 8, "targets": ["q_proj", "k_proj", "v_proj", "o_proj"]},
        train={"stage": "dpo", "output_dir": str(tmp_path / "run"), "max_steps": 30, "batch_size": 4, "lr": 5e-3,
               "warmup_steps": 3, "logging_steps": 10, "seed": 0, "progress": False, "report_to": "none"},
        dpo={"beta": 0.1})
    assert main(["train", config]) == 0

    spec = get_family(FAMILY)
    renderer = Renderer(load_processor(model_dir, spec), spec)
    held_out = read_samples(data["val"])
    model = PeftModel.from_pretrained(load_model(str(model_dir), torch.float32), str(tmp_path / "run" / "adapter"))
    model.eval()
    tuned = held_out_margins(model, renderer, held_out)
    with model.disable_adapter():
        base = held_out_margins(model, renderer, held_out)
    prefers = [sum(m > 0 for m in margins) / len(margins) for margins in (base, tuned)]
    mean = [sum(margins) / len(margins) for margins in (base, tuned)]
    # Measured: the random-init base prefers the right answer on 41 % of the held-out pairs with a mean margin of
    # -1.6 nats; the tuned model on 75 %, +1.9 nats.
    assert prefers[1] >= 0.65 and prefers[1] >= prefers[0] + 0.2, (prefers, mean)
    assert mean[1] >= mean[0] + 1.5 and mean[1] > 0, (prefers, mean)
    # The log says the same on the training pairs: DPO's implicit reward margin grew from zero.
    entries = [e for e in logged(tmp_path / "run") if "rewards/margins" in e]
    assert entries[0]["rewards/margins"] < entries[-1]["rewards/margins"]
    assert entries[-1]["rewards/accuracies"] >= 0.75


@pytest.fixture
def dpo_config(tmp_path, tiny_dir):
    data = preference_data(tmp_path / "data", n_train=16, n_val=4, seed=1)

    def write(name: str, **train) -> str:
        return write_config(
            tmp_path / f"{name}.yaml", model={"path": str(tiny_dir(FAMILY))},
            data={"train": str(data["train"]), "val": str(data["val"])}, lora={"r": 4},
            train={"stage": "dpo", "output_dir": str(tmp_path / name), "max_steps": 6, "batch_size": 2, "lr": 1e-2,
                   "logging_steps": 1, "seed": 3, "progress": False, "report_to": "none", **train},
            eval={"max_new_tokens": 2})

    return write


@pytest.mark.slow  # two short DPO runs
def test_a_resumed_dpo_run_continues_with_the_losses_of_an_uninterrupted_one(dpo_config, tmp_path):
    config = dpo_config("run", save_steps=3, save_total_limit=None)
    assert main(["train", config]) == 0
    run = tmp_path / "run"
    straight = losses(run)
    assert sorted(straight) == list(range(1, 7))
    assert len({round(v, 6) for v in straight.values()}) > 3  # the losses move: equal ones would prove nothing
    # As if stopped after step 3's checkpoint: the newest checkpoint gone, resume picks checkpoint-3.
    shutil.rmtree(run / "checkpoints" / "checkpoint-6")
    assert main(["train", config, "--resume"]) == 0
    resumed = losses(run)
    assert sorted(resumed) == list(range(1, 7))
    for step in range(4, 7):
        assert resumed[step] == pytest.approx(straight[step], rel=1e-5, abs=1e-6), step
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["steps"] == 6 and "val_loss" in saved and "val_exact_match" in saved
    assert (run / "eval" / "predictions.jsonl").is_file()


@pytest.mark.slow  # an SFT run, then three short DPO runs from its adapter or from scratch
def test_the_reference_is_the_base_or_the_starting_adapter_as_configured(dpo_config, tmp_path, tiny_dir):
    ln2 = math.log(2)
    # A new adapter: the reference is the base (adapters off), which the policy equals at step 1.
    assert main(["train", dpo_config("fresh", max_steps=1)]) == 0
    first = logged(tmp_path / "fresh")[0]
    assert first["loss"] == pytest.approx(ln2, abs=1e-6) and first["rewards/margins"] == 0
    assert not (tmp_path / "fresh" / "adapter" / "ref").exists()

    data = tmp_path / "data"
    sft = write_config(tmp_path / "sft.yaml", model={"path": str(tiny_dir(FAMILY))},
                       data={"train": str(data / "train.jsonl")}, lora={"r": 4},
                       train={"output_dir": str(tmp_path / "sft"), "max_steps": 8, "lr": 2e-2, "batch_size": 4,
                              "progress": False, "report_to": "none"})
    assert main(["train", sft]) == 0
    start = dpo_config("from_sft", max_steps=1)
    # dpo.reference start (default): the SFT adapter as the run starts, so again policy == reference at step 1.
    assert main(["train", start, f"model.adapter={tmp_path / 'sft'}"]) == 0
    first = logged(tmp_path / "from_sft")[0]
    assert first["loss"] == pytest.approx(ln2, abs=1e-6) and first["rewards/margins"] == 0
    saved = tmp_path / "from_sft" / "adapter"
    assert not (saved / "ref").exists()  # the frozen copy is not part of the run's weights
    # dpo.reference base: the checkpoint without the SFT adapter, which the starting policy differs from.
    assert main(["train", start, f"model.adapter={tmp_path / 'sft'}", "dpo.reference=base",
                 f"train.output_dir={tmp_path / 'from_sft_base'}"]) == 0
    first = logged(tmp_path / "from_sft_base")[0]
    assert abs(first["rewards/margins"]) > 1e-4 and abs(first["loss"] - ln2) > 1e-6


@pytest.mark.parametrize("override, message", [
    ("train.max_tokens_per_batch=512", "train.max_tokens_per_batch does not apply to train.stage dpo"),
    ("train.best_by=exact_match", "train.best_by exact_match: train.stage dpo keeps the best checkpoint by "
                                  "validation loss only"),
])
def test_settings_dpo_does_not_use_are_refused_in_one_line(override, message, dpo_config, capsys):
    assert main(["train", dpo_config("refused", save_steps=2, eval_steps=2), override]) != 0
    err = capsys.readouterr().err
    assert message in err
