"""``train.stage: grpo``: GRPO on TRL's GRPOTrainer over the SFT records, from an SFT run's adapter, rewarded by
the evaluation's metrics. Config mistakes stop the run before anything loads, one line each; a run killed after a
checkpoint resumes with the same sampled answers and rewards as a run never stopped."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from vlmtune.cli.main import main
from vlmtune.config import load_config
from vlmtune.data.demo import make_grounding_data
from vlmtune.train import train
from vlmtune.train.checkpoints import checkpoints, resolve_resume


def _config(tmp_path, model_dir, data_files, name: str, **sections) -> str:
    raw = {"model": {"path": str(model_dir)}, "data": {"train": str(data_files["train"])},
           "train": {"stage": "grpo", "output_dir": str(tmp_path / name), "max_steps": 1, "batch_size": 2,
                     "progress": False, "report_to": "none"},
           "eval": {"task": "grounding"}}
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    path = tmp_path / f"{name}.yaml"
    path.write_text(json.dumps(raw))
    return str(path)


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return err


@pytest.fixture
def data(tmp_path):
    return make_grounding_data(tmp_path / "data", n_train=8, n_val=2, seed=0)


def test_an_unknown_reward_is_a_config_error_listing_the_built_in_ones(tmp_path, tiny_dir, data, capsys):
    config = _config(tmp_path, tiny_dir("qwen2_5_vl"), data, "run", grpo={"rewards": ["iou", "bleu4"]})
    assert main(["train", config]) == 2
    assert ("grpo.rewards: Value error, unknown reward 'bleu4'; built-in: anls, click, exact_match, field_f1, format, "
            "iou, relaxed_accuracy, or your own as module:function") in _error(capsys)
    assert not (tmp_path / "run").exists()


def test_rules_of_a_grpo_run_are_config_errors_naming_each_key(tmp_path, tiny_dir, data, capsys):
    config = _config(tmp_path, tiny_dir("qwen2_5_vl"), data, "run", train={"eval_steps": 5},
                     grpo={"rewards": ["iou", "format"], "reward_weights": [1.0]}, eval={"task": "caption"})
    assert main(["train", config]) == 2
    assert "grpo.reward_weights has 1 weight(s) for 2 grpo.rewards; give one weight per reward" in _error(capsys)

    config = _config(tmp_path, tiny_dir("qwen2_5_vl"), data, "run", train={"eval_steps": 5},
                     eval={"task": "caption"})
    assert main(["train", config]) == 2
    assert _error(capsys).splitlines()[1:] == [
        "  train.eval_steps: a GRPO run validates once, at the end (the held-out evaluation of eval.at_end); "
        "remove it",
        "  grpo.rewards: eval.task caption has no verifiable reward; name grpo.rewards"]
    assert not (tmp_path / "run").exists()


def test_a_model_adapter_that_is_not_an_adapter_folder_is_refused(tmp_path, tiny_dir, data, capsys):
    config = _config(tmp_path, tiny_dir("qwen2_5_vl"), data, "run", model={"adapter": str(tmp_path)})
    assert main(["train", config]) == 2
    assert f"model.adapter {tmp_path}: no adapter_config.json in it or in its adapter/ folder" in _error(capsys)


def test_more_prompts_a_step_than_samples_is_refused_before_training(tmp_path, tiny_dir, data, capsys):
    config = _config(tmp_path, tiny_dir("qwen2_5_vl"), data, "run", train={"grad_accum": 8})
    assert main(["train", config]) == 2
    assert ("data.train has 8 samples, and a GRPO step takes 16 prompts (train.batch_size 2 x train.grad_accum 8 x "
            "1 processes); lower train.grad_accum or train.batch_size") in _error(capsys)


STEPS, SAVE_EVERY = 8, 2


def _rewards(run_dir) -> dict[int, tuple[float, float, float]]:
    """Step -> (reward, its spread, loss) from metrics.jsonl, which must hold each step once."""
    entries = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    entries = [e for e in entries if "reward" in e]
    steps = [e["step"] for e in entries]
    assert len(steps) == len(set(steps)), f"steps logged twice: {steps}"
    return {e["step"]: (e["reward"], e["reward_std"], e["loss"]) for e in entries}


@pytest.mark.slow  # trains in a subprocess, kills it and resumes, then trains again straight through
def test_a_killed_grpo_run_resumes_with_the_same_samples_and_rewards(tmp_path, tiny_dir, data, monkeypatch):
    # A reward that differs between the answers of an untrained model, so that every step learns something.
    (tmp_path / "length_reward.py").write_text(
        "def characters(examples):\n    return [len(e.prediction) / 10 for e in examples]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    pythonpath = os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH")) if p)

    def config(name: str) -> str:
        return _config(tmp_path, tiny_dir("qwen2_5_vl"), data, name,
                       train={"max_steps": STEPS, "save_steps": SAVE_EVERY, "logging_steps": 1, "lr": 1e-2,
                              "seed": 5},
                       grpo={"num_generations": 4, "max_new_tokens": 6, "rewards": ["length_reward:characters"]},
                       eval={"at_end": False})

    run = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "vlmtune.cli.main", "train", config("killed")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": pythonpath})
    try:
        deadline = time.monotonic() + 300
        while not checkpoints(run / "checkpoints"):
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    resumed_from = resolve_resume("auto", run / "checkpoints")
    step = int(resumed_from.name.split("-")[1])
    assert step < STEPS

    assert train(load_config(config("killed")), resume="auto").metrics["steps"] == STEPS
    assert train(load_config(config("straight"))).metrics["steps"] == STEPS

    after, reference = _rewards(run), _rewards(tmp_path / "straight")
    assert sorted(after) == sorted(reference) == list(range(1, STEPS + 1))
    assert len({reference[s][0] for s in reference}) > 1, "every step had the same reward: nothing to compare"
    for s in range(step + 1, STEPS + 1):  # every step after the resume point
        assert after[s] == pytest.approx(reference[s], rel=1e-4, abs=1e-6), s


@pytest.mark.slow  # a learning test: supervised fine-tuning, then GRPO, each with a held-out evaluation
def test_grpo_with_the_iou_reward_raises_held_out_iou_above_the_sft_starting_point(tmp_path, tiny_dir):
    data = make_grounding_data(tmp_path / "data", n_train=64, n_val=16, seed=1, size=56)
    model = tiny_dir("qwen2_5_vl")
    eval_section = {"task": "grounding", "compare_base": False, "max_new_tokens": 24}
    # Supervised fine-tuning teaches the answer's form ({"bbox_2d": [x1, y1, x2, y2]}), not yet where the square is.
    sft = train(load_config(_config(
        tmp_path, model, data, "sft", data={"val": str(data["val"])}, lora={"r": 8}, eval=eval_section,
        train={"stage": "sft", "max_steps": 80, "batch_size": 8, "lr": 3e-3, "scheduler": "constant", "seed": 1})))
    grpo = train(load_config(_config(
        tmp_path, model, data, "grpo", model={"adapter": str(sft.weights_dir)}, data={"val": str(data["val"])},
        eval=eval_section, train={"max_steps": 12, "batch_size": 4, "lr": 3e-3, "scheduler": "constant",
                                  "logging_steps": 4, "seed": 1},
        grpo={"num_generations": 4, "temperature": 0.5, "max_new_tokens": 20, "rewards": ["iou", "format"]})))
    before, after = sft.metrics["val_iou"], grpo.metrics["val_iou"]
    assert after >= before + 0.1, (before, after)  # measured: 0.046 -> 0.213
    rewards = _rewards(tmp_path / "grpo")
    assert rewards[12][0] > rewards[4][0], rewards  # the mean reward rose during GRPO
