"""Every command follows the run's config: `vlmtune eval` after a run reproduces the run's own evaluation, predict
answers as the run would, data check reads as the run reads; config errors come before torch is imported."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from vlmtune.cli.main import main
from vlmtune.data.demo import make_demo_data

pytestmark = pytest.mark.slow  # trains and evaluates runs in fp32 and bf16

SYSTEM = "Answer with one word."


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module", params=["fp32", "bf16"])
def run(request, tiny_dir, tmp_path_factory):
    """A short LoRA run of the tiny Qwen2.5-VL whose settings all change the answers: a system prompt, images
    capped below their size, answers cut at 6 new tokens, batches of 4 held-out samples, and ``model.dtype``."""
    root = tmp_path_factory.mktemp(f"run_{request.param}")
    files = make_demo_data(root / "data", n_train=16, n_val=6)
    config = root / "c.yaml"
    config.write_text(yaml.safe_dump({
        "model": {"path": str(tiny_dir("qwen2_5_vl")), "dtype": request.param},
        "data": {"train": str(files["train"]), "val": str(files["val"]), "system": SYSTEM, "max_pixels": 3136},
        "train": {"output_dir": str(root / "run"), "max_steps": 4, "batch_size": 4, "lr": 2e-3, "progress": False,
                  "report_to": "none"},
        "eval": {"max_new_tokens": 6, "batch_size": 4}}))
    assert main(["train", str(config)]) == 0
    return root / "run", files["val"]


def test_eval_next_to_a_run_adapter_reproduces_the_runs_own_evaluation(run, tmp_path, capsys):
    run_dir, val = run
    assert main(["eval", "--adapter", str(run_dir / "adapter"), "--data", str(val), "-o", str(tmp_path / "out"),
                 "--no-progress"]) == 0
    assert f"following the run config {run_dir / 'config.yaml'} (found next to --adapter)" in capsys.readouterr().err
    in_run, standalone = (json.loads((d / "metrics.json").read_text()) for d in (run_dir / "eval", tmp_path / "out"))
    assert standalone == in_run  # task, model, adapter, n and every metric, base and tuned
    assert in_run["n"] == 6 and set(in_run["metrics"]["exact_match"]) == {"base", "tuned", "n"}
    rows = _rows(tmp_path / "out" / "predictions.jsonl")
    assert rows == _rows(run_dir / "eval" / "predictions.jsonl")
    assert any(r["base"] != r["tuned"] for r in rows)


def test_eval_of_the_run_config_scores_the_runs_own_weights(run, tmp_path, capsys):
    """`vlmtune eval --config RUN/config.yaml` loads RUN/adapter (it used to score the base as the tuned model)."""
    run_dir, _ = run
    base = yaml.safe_load((run_dir / "config.yaml").read_text())["model"]["path"]
    capsys.readouterr()
    assert main(["eval", "--config", str(run_dir / "config.yaml"), "-o", str(tmp_path / "out"), "--no-progress"]) == 0
    assert f"weights: adapter {run_dir / 'adapter'} on {base} (the weights of the run {run_dir})\n" in \
        capsys.readouterr().err
    in_run, standalone = (json.loads((d / "metrics.json").read_text()) for d in (run_dir / "eval", tmp_path / "out"))
    assert standalone == in_run
    rows = _rows(tmp_path / "out" / "predictions.jsonl")
    assert rows == _rows(run_dir / "eval" / "predictions.jsonl") and any(r["base"] != r["tuned"] for r in rows)
    # The run folder stands for its config; --model says to score that model as it is.
    assert main(["eval", "--config", str(run_dir), "-o", str(tmp_path / "folder"), "--no-progress",
                 "--no-compare-base"]) == 0
    assert [r["tuned"] for r in _rows(tmp_path / "folder" / "predictions.jsonl")] == [r["tuned"] for r in rows]
    assert main(["eval", "--config", str(run_dir), "--model", base, "-o", str(tmp_path / "base"), "--no-progress",
                 "--no-compare-base"]) == 0
    assert f"weights: {base} (--model, no adapter)\n" in capsys.readouterr().err
    assert [r["tuned"] for r in _rows(tmp_path / "base" / "predictions.jsonl")] == [r["base"] for r in rows]


def test_the_runs_settings_change_the_answers(run, tmp_path):
    """What eval did before it followed the run (system prompt ignored, 64 new tokens, fp32 weights) gives other
    answers than the run's evaluation in this setup, so the test above would catch it."""
    run_dir, val = run
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert main(["eval", "--model", cfg["model"]["path"], "--adapter", str(run_dir / "adapter"), "--data", str(val),
                 "-o", str(tmp_path / "out"), "--no-progress", "--max-new-tokens", "64", "data.system=null",
                 "model.dtype=fp32"]) == 0
    answers = [r["tuned"] for r in _rows(tmp_path / "out" / "predictions.jsonl")]
    assert answers != [r["tuned"] for r in _rows(run_dir / "eval" / "predictions.jsonl")]


def test_predict_answers_as_the_runs_evaluation_did(run, capsys):
    run_dir, _ = run
    row = _rows(run_dir / "eval" / "predictions.jsonl")[0]
    capsys.readouterr()
    assert main(["predict", "--adapter", str(run_dir / "adapter"), "--image", row["images"][0],
                 "--prompt", row["prompt"]]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == row["tuned"]
    assert "following the run config" in captured.err


def test_predict_with_the_run_config_answers_with_the_runs_weights(run, capsys):
    run_dir, _ = run
    row = next(r for r in _rows(run_dir / "eval" / "predictions.jsonl") if r["base"] != r["tuned"])
    capsys.readouterr()
    assert main(["predict", "--config", str(run_dir / "config.yaml"), "--image", row["images"][0],
                 "--prompt", row["prompt"]]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == row["tuned"]
    assert f"weights: adapter {run_dir / 'adapter'} on " in captured.err


def test_eval_loads_the_weights_in_the_runs_dtype(run, tmp_path, monkeypatch):
    """eval holds the weights in the run's model.dtype (its old load was always fp32), unless an override says."""
    from vlmtune.evaluate import command

    run_dir, val = run
    trained_in = yaml.safe_load((run_dir / "config.yaml").read_text())["model"]["dtype"]
    loaded, load = [], command.load_for_inference
    monkeypatch.setattr(command, "load_for_inference", lambda *a, **k: loaded.append(load(*a, **k)) or loaded[-1])
    for dtype, out in ((None, "same"), ("fp32", "fp32")):
        overrides = [f"model.dtype={dtype}"] if dtype else []
        assert main(["eval", "--adapter", str(run_dir / "adapter"), "--data", str(val), "-o", str(tmp_path / out),
                     "--no-progress", "--no-compare-base", *overrides]) == 0
    # The base weights; PEFT keeps the adapter's own in fp32 either way.
    held = [{str(p.dtype) for n, p in model.named_parameters() if "lora_" not in n} for model in loaded]
    assert held == [{"torch.bfloat16" if trained_in == "bf16" else "torch.float32"}, {"torch.float32"}]


@pytest.fixture
def table(tmp_path, images, tiny_dir):
    """A CSV whose columns have no common names and whose images live in another folder, and the run config
    that reads it: columns, a fixed prompt, a system prompt, the media root, the model, max_length."""
    (tmp_path / "tables").mkdir()
    data = tmp_path / "tables" / "t.csv"
    data.write_text("pic,reply\nred.png,a red rectangle\nblue.png,a blue rectangle\n")
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "model": {"path": str(tiny_dir("qwen2_vl"))},
        "data": {"train": str(data), "columns": {"image": "pic", "answer": "reply"}, "prompt": "Describe the image.",
                 "system": SYSTEM, "media_root": str(tmp_path), "max_length": 512}}))
    return data, config


def test_data_check_reads_as_the_run_config_says(table, capsys):
    data, config = table
    assert main(["data", "check", str(data)]) == 2  # the columns and the media root are the config's
    assert "no image column found" in capsys.readouterr().err
    assert main(["data", "check", str(data), "--config", str(config)]) == 0
    captured = capsys.readouterr()
    assert f"{data}: format table, 2 records, 2 usable, 0 unusable" in captured.out
    assert "tokens per sample (max_length 512)" in captured.out  # the config's model counted them
    assert f"following the run config {config} (--config)" in captured.err

    def text_tokens(*overrides):
        assert main(["data", "check", str(data), "--config", str(config), "--json", *overrides]) == 0
        return json.loads(capsys.readouterr().out)["tokens"]["text"]["min"]

    assert text_tokens() > text_tokens("data.prompt=null")  # the prompt comes from data.prompt alone


def test_data_convert_writes_the_configs_prompt_and_system(table, tmp_path, capsys):
    data, config = table
    out = tmp_path / "t.jsonl"
    assert main(["data", "convert", str(data), "--config", str(config), "-o", str(out)]) == 0
    messages = json.loads(out.read_text().splitlines()[0])["messages"]
    assert messages[0] == {"role": "system", "content": [{"type": "text", "text": SYSTEM}]}
    assert messages[1]["content"][-1] == {"type": "text", "text": "Describe the image."}


def test_command_options_win_over_the_config_and_overrides(table, tmp_path, capsys):
    data, config = table
    assert main(["data", "check", str(data), "--config", str(config), "--max-length", "44", "data.max_length=128",
                 "--model", str(Path(yaml.safe_load(config.read_text())["model"]["path"]))]) == 1
    assert "exceed max_length=44" in capsys.readouterr().out
    assert main(["data", "check", str(data), "--config", str(config), "data.max_length=0"]) == 2
    assert "data.max_length: Input should be greater than 0" in capsys.readouterr().err
    assert main(["data", "check", str(data), "--config", str(config), "--max-length", "0"]) == 2
    assert "--max-length: Input should be greater than 0 (got 0)" in capsys.readouterr().err


def _train_tiny(tiny_dir, tmp_path, max_new_tokens: int, n_val: int, **train) -> Path:
    """A short run of the tiny Qwen2-VL on demo data, with its end-of-run evaluation; returns the run folder."""
    files = make_demo_data(tmp_path / "data", n_train=4, n_val=n_val)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "model": {"path": str(tiny_dir("qwen2_vl"))}, "data": {"train": str(files["train"]), "val": str(files["val"])},
        "train": {"output_dir": str(tmp_path / "run"), "batch_size": 2, "progress": False, "report_to": "none",
                  **train},
        "eval": {"max_new_tokens": max_new_tokens}}))
    assert main(["train", str(config)]) == 0
    return tmp_path / "run"


def test_a_dora_runs_held_out_evaluation_is_the_tuned_adapters(tiny_dir, tmp_path):
    """The run's own evaluation names RUN/adapter and its tuned answers are the adapter's: the base's differ, and
    `vlmtune eval --adapter RUN/adapter` gives the same answers."""
    run_dir = _train_tiny(tiny_dir, tmp_path, max_new_tokens=4, n_val=4, method="dora", max_steps=4, lr=2e-3)
    assert json.loads((run_dir / "adapter" / "adapter_config.json").read_text())["use_dora"] is True
    in_run = json.loads((run_dir / "eval" / "metrics.json").read_text())
    assert in_run["adapter"] == str(run_dir / "adapter") and in_run["n"] == 4
    rows = _rows(run_dir / "eval" / "predictions.jsonl")
    assert any(r["base"] != r["tuned"] for r in rows)
    assert main(["eval", "--adapter", str(run_dir / "adapter"), "-o", str(tmp_path / "out"), "--no-progress",
                 "--no-compare-base"]) == 0
    assert [r["tuned"] for r in _rows(tmp_path / "out" / "predictions.jsonl")] == [r["tuned"] for r in rows]


def test_eval_of_a_full_fine_tune_compares_with_the_checkpoint_the_run_started_from(tiny_dir, tmp_path):
    _train_tiny(tiny_dir, tmp_path, max_new_tokens=3, n_val=3, method="full", max_steps=2, lr=1e-3)
    assert main(["eval", "--model", str(tmp_path / "run" / "model"), "-o", str(tmp_path / "out"),
                 "--no-progress"]) == 0
    in_run = json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text())
    standalone = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert standalone["model"] == str(tmp_path / "run" / "model") and in_run["adapter"] is None
    assert standalone["metrics"] == in_run["metrics"] and standalone["n"] == in_run["n"] == 3
    rows = _rows(tmp_path / "out" / "predictions.jsonl")
    assert rows == _rows(tmp_path / "run" / "eval" / "predictions.jsonl") and {"base", "tuned"} <= rows[0].keys()
    # Following the run's config alone loads RUN/model, compared with the checkpoint in its model.path.
    assert main(["eval", "--config", str(tmp_path / "run" / "config.yaml"), "-o", str(tmp_path / "by_config"),
                 "--no-progress"]) == 0
    assert json.loads((tmp_path / "by_config" / "metrics.json").read_text()) == standalone
    assert _rows(tmp_path / "by_config" / "predictions.jsonl") == rows


def _cli_in_subprocess(tmp_path, *argv: str) -> tuple[str, str]:
    """Run the CLI in a fresh interpreter; stdout ends with the exit code and whether torch / transformers were
    imported."""
    code = ("import sys; from vlmtune.cli.main import main; rc = main(sys.argv[1:]); "
            "print(rc, 'torch' in sys.modules, 'transformers' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=tmp_path,
                          timeout=120)
    return done.stdout.strip().splitlines()[-1], done.stderr


@pytest.mark.parametrize("command", [["train"], ["eval", "-o", "out", "--config"], ["config", "validate"]])
def test_a_config_typo_is_reported_without_importing_torch(tmp_path, command):
    config = tmp_path / "typo.yaml"
    config.write_text("model:\n  path: m\ndata:\n  train: t.jsonl\ntrain:\n  epoch: 3\n")
    status, err = _cli_in_subprocess(tmp_path, *command, str(config))
    assert status == f"{1 if command[0] == 'config' else 2} False False"
    if command[0] != "config":
        assert "train.epoch: unknown key (did you mean 'epochs'?)" in err


def test_config_validate_lists_every_problem_at_once(tmp_path, tiny_dir, capsys):
    (tmp_path / "t.jsonl").write_text("")
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "model": {"path": str(tmp_path / "no-model")},
        "data": {"train": str(tmp_path / "missing.jsonl"), "val": str(tmp_path / "t.jsonl"), "format": "jsonl"},
        "train": {"epoch": 3, "early_stopping_patience": 2}, "eval": {"metrics": ["accuracy"]}}))
    assert main(["config", "validate", str(config), "lora.r=0"]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"{config}: 6 problem(s)",
        "  lora.r: Input should be greater than 0 (got 0)",
        "  train.epoch: unknown key (did you mean 'epochs'?)",
        "  eval.metrics: Value error, unknown metric(s) accuracy; known: accuracy_at_iou_0.5, anls, bleu4, cider, "
        "click_accuracy, exact_match, field_f1, iou, relaxed_accuracy, rouge_l, tree_accuracy, vqa_accuracy "
        "(got ['accuracy'])",
        "  data.format: unknown data format 'jsonl'; known: auto, gui_events, hf, llamafactory, llava, messages, "
        "preference, qwen_tags, rlhf_v, sharegpt, sharegpt_preference, table",
        f"  data.train: {tmp_path / 'missing.jsonl'} does not exist",
        f"  model.path: folder {tmp_path / 'no-model'} does not exist (and is not a hub id like org/name)",
    ]


def test_config_validate_applies_the_training_rules_and_says_ok(tmp_path, tiny_dir, capsys):
    (tmp_path / "t.jsonl").write_text("")
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"model": {"path": str(tiny_dir("qwen2_vl"))},
                                      "data": {"train": str(tmp_path / "t.jsonl"), "val": str(tmp_path / "t.jsonl")},
                                      "train": {"output_dir": "runs/x"}}))
    assert main(["config", "validate", str(config), "train.early_stopping_patience=2", "train.save_steps=3",
                 "train.eval_steps=2", "data.format=tabel"]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"{config}: 2 problem(s)",
        "  train.save_steps (3) must be a multiple of train.eval_steps (2) so the best checkpoint by validation loss "
        "can be kept",
        "  data.format: unknown data format 'tabel'; known: auto, gui_events, hf, llamafactory, llava, messages, "
        "preference, qwen_tags, rlhf_v, sharegpt, sharegpt_preference, table"]
    assert main(["config", "validate", str(config)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{config}: ok",
        f"  model {tiny_dir('qwen2_vl')}, method lora, data.train {tmp_path / 't.jsonl'}, data.val "
        f"{tmp_path / 't.jsonl'} (eval vqa: exact_match, vqa_accuracy), output runs/x"]
