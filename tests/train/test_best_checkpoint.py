"""The checkpoint kept as "best" and early stopping follow ``train.best_by``: the validation loss, or a metric of the
generated held-out answers, scored at every validation and logged as ``eval_<metric>``."""

import json

import pytest
import torch
from safetensors.torch import load_file

from vlmtune.config import load_config
from vlmtune.core.errors import ConfigError
from vlmtune.data.demo import make_demo_data
from vlmtune.train import train
from vlmtune.train.run import check_runnable

FAMILY = "qwen2_vl"


def _config(tmp_path, tiny_dir, *overrides: str):
    data = make_demo_data(tmp_path / "data", n_train=8, n_val=2, seed=3)
    return load_config(None, [f"model.path={tiny_dir(FAMILY)}", f"data.train={data['train']}",
                              f"data.val={data['val']}", f"train.output_dir={tmp_path / 'run'}",
                              "train.progress=false", "train.report_to=none", "train.logging_steps=1",
                              "train.batch_size=2", "lora.r=4", "eval.max_new_tokens=4", *overrides])


def _evals(run_dir) -> dict[int, dict]:
    """Step -> the validation logged during training (the run's last line is the final validation loss)."""
    entries = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals: dict[int, dict] = {}
    for e in entries:
        if "eval_loss" in e:
            evals.setdefault(e["step"], e)
    return evals


@pytest.mark.slow  # trains with a held-out evaluation at every save
def test_best_by_a_metric_keeps_its_best_checkpoint_and_stops_early_on_it(tmp_path, tiny_dir, monkeypatch):
    scores = iter([0.2, 0.9, 0.5, 0.1, 0.0, 0.0])
    calls = []

    def fake_scorer(cfg, renderer, samples):
        def score(model):
            calls.append(model.training)
            return {"exact_match": next(scores), "vqa_accuracy": 0.0}
        return score

    monkeypatch.setattr("vlmtune.train.trainer_inputs.generation_scorer", fake_scorer)
    cfg = _config(tmp_path, tiny_dir, "train.best_by=exact_match", "train.max_steps=6", "train.eval_steps=1",
                  "train.save_steps=1", "train.save_total_limit=2", "train.early_stopping_patience=2",
                  "eval.at_end=false")
    result = train(cfg)
    evals = _evals(result.run_dir)
    # Best 0.9 at step 2; steps 3 and 4 do not improve on it, and patience 2 stops the run there.
    assert [evals[s]["eval_exact_match"] for s in sorted(evals) if s <= 4] == [0.2, 0.9, 0.5, 0.1]
    assert result.metrics["steps"] == 4
    assert len(calls) == 4 and not any(calls)  # once per validation, in eval mode; not again after training
    checkpoints = result.run_dir / "checkpoints"
    assert sorted(p.name for p in checkpoints.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    state = json.loads((checkpoints / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["best_metric"] == 0.9 and state["best_model_checkpoint"].endswith("checkpoint-2")
    # The run ends with the best weights: the saved adapter is checkpoint-2's.
    saved = load_file(result.weights_dir / "adapter_model.safetensors")
    best = load_file(checkpoints / "checkpoint-2" / "adapter_model.safetensors")
    newest = load_file(checkpoints / "checkpoint-4" / "adapter_model.safetensors")
    assert saved.keys() == best.keys()
    assert all(torch.equal(saved[k], best[k]) for k in saved)
    assert not all(torch.equal(saved[k], newest[k]) for k in saved)


@pytest.mark.slow  # trains with a held-out evaluation at every save
def test_the_metric_scored_in_training_is_the_held_out_evaluation_of_the_same_weights(tmp_path, tiny_dir):
    cfg = _config(tmp_path, tiny_dir, "train.best_by=exact_match", "train.max_steps=4", "train.eval_steps=2",
                  "train.save_steps=2", "train.lr=5e-3", "eval.compare_base=false")
    result = train(cfg)
    evals = _evals(result.run_dir)
    assert {2, 4} <= evals.keys()
    assert all(0 <= evals[s]["eval_exact_match"] <= 1 and "eval_vqa_accuracy" in evals[s] for s in (2, 4))
    state = json.loads((result.run_dir / "checkpoints" / "checkpoint-4" / "trainer_state.json").read_text())
    best_step = int(state["best_model_checkpoint"].rsplit("-", 1)[1])
    assert state["best_metric"] == max(evals[s]["eval_exact_match"] for s in (2, 4)) == evals[best_step][
        "eval_exact_match"]
    # The end-of-run evaluation generates with the best weights loaded back: the same answers, the same score.
    assert result.metrics["val_exact_match"] == pytest.approx(evals[best_step]["eval_exact_match"])


def test_best_by_must_be_loss_or_a_metric_of_the_run_with_validations_and_saves(tmp_path, tiny_dir):
    with pytest.raises(ConfigError, match=r"train.best_by 'anls' is neither loss nor a metric of this run "
                                          r"\(exact_match, vqa_accuracy"):
        _config(tmp_path, tiny_dir, "train.best_by=anls")
    assert _config(tmp_path, tiny_dir, "train.best_by=anls", "eval.task=doc_vqa").train.best_by == "anls"
    with pytest.raises(ConfigError, match="train.best_by exact_match needs data.val, train.eval_steps"):
        check_runnable(_config(tmp_path, tiny_dir, "train.best_by=exact_match", "train.eval_steps=2"))
