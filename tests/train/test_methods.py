"""LoRA / DoRA / rsLoRA / QLoRA / full fine-tuning and freezing: exactly the planned weights train, counted
independently from the module shapes; gradient checkpointing changes no number; a non-finite loss names its
batch; every run leaves metrics.jsonl with tokens/s, a loss curve and TensorBoard logs."""

import json

import pytest
import torch
from torch import nn

from vlmtune.cli.main import main
from vlmtune.config import load_config
from vlmtune.config.schema import FreezeConfig, LoraConfig
from vlmtune.core.errors import ConfigError, TrainingError
from vlmtune.data.demo import make_demo_data
from vlmtune.models import get_family, load_model
from vlmtune.train import apply_lora, parameter_table, prepare_full, train
from vlmtune.train.model import quantization_config
from vlmtune.train.run import check_runnable

FAMILY = "qwen2_vl"


def _linear(model, spec, component, leaves=None):
    return [m for n, m in model.named_modules() if isinstance(m, nn.Linear) and spec.component_of(n) == component
            and (leaves is None or n.rsplit(".", 1)[-1] in leaves)]


def _component_size(model, spec, component):
    return sum(p.numel() for n, p in model.named_parameters() if spec.component_of(n) == component)


def test_targets_per_component_lora_on_vision_and_a_fully_trained_projector(tiny_dir):
    spec = get_family(FAMILY)
    base = load_model(tiny_dir(FAMILY))
    r = 8
    lora = LoraConfig(r=r, targets={"language": ["q_proj", "v_proj"], "vision": ["qkv"], "projector": "full"})
    expected = {
        "language": sum(r * (m.in_features + m.out_features) for m in _linear(base, spec, "language", {"q_proj",
                                                                                                         "v_proj"})),
        "vision": sum(r * (m.in_features + m.out_features) for m in _linear(base, spec, "vision", {"qkv"})),
        "projector": _component_size(base, spec, "projector"),
    }
    table = parameter_table(apply_lora(base, spec, lora), spec)
    assert {c: table[c][0] for c in expected} == expected
    assert table["lm_head"][0] == 0
    # The totals are the model's own sizes: PEFT's frozen copy of the projector is not counted twice.
    assert table["projector"][1] == expected["projector"]


def test_dora_adds_a_magnitude_per_output_and_rslora_scales_by_the_root_of_r(tiny_dir):
    spec = get_family(FAMILY)
    base = load_model(tiny_dir(FAMILY))
    layers = _linear(base, spec, "language", {"q_proj"})
    lora_only = sum(4 * (m.in_features + m.out_features) for m in layers)
    dora = apply_lora(base, spec, LoraConfig(r=4, targets=["q_proj"]), method="dora")
    assert parameter_table(dora, spec)["language"][0] == lora_only + sum(m.out_features for m in layers)

    rs = apply_lora(load_model(tiny_dir(FAMILY)), spec, LoraConfig(r=4, alpha=16, rslora=True, targets=["q_proj"]))
    scalings = {m.scaling["default"] for m in rs.modules() if isinstance(getattr(m, "scaling", None), dict)}
    assert scalings == {16 / 4 ** 0.5}


def test_freeze_switches_in_full_fine_tuning_and_with_lora(tiny_dir):
    spec = get_family(FAMILY)
    model = prepare_full(load_model(tiny_dir(FAMILY)), spec, FreezeConfig(vision=False, projector=True))
    table = parameter_table(model, spec)
    assert table["vision"][0] == table["vision"][1] > 0 and table["projector"][0] == 0
    assert table["language"][0] == table["language"][1]
    lora = apply_lora(load_model(tiny_dir(FAMILY)), spec, LoraConfig(targets=["q_proj"]), freeze=FreezeConfig(
        projector=False))
    assert parameter_table(lora, spec)["projector"][0] == _component_size(load_model(tiny_dir(FAMILY)), spec,
                                                                         "projector")
    with pytest.raises(ValueError, match="selects no layer"):
        apply_lora(load_model(tiny_dir(FAMILY)), spec, LoraConfig(targets={"language": [], "vision": []}))
    with pytest.raises(ValueError, match=r"lora.targets.vision \['q_proj'\] name no linear layer.*qkv"):
        apply_lora(load_model(tiny_dir(FAMILY)), spec, LoraConfig(targets={"vision": ["q_proj"]}))


def _config(tmp_path, tiny_dir, **train):
    data = make_demo_data(tmp_path / "data", n_train=12, n_val=2, seed=2)
    return load_config(None, [f"model.path={tiny_dir(FAMILY)}", f"data.train={data['train']}",
                              f"train.output_dir={tmp_path / 'run'}", "train.progress=false",
                              "train.logging_steps=1", "train.batch_size=2", "lora.r=4"]
                       + [f"train.{k}={v}" for k, v in train.items()])


def test_qlora_builds_a_4bit_config_that_keeps_the_vision_tower_and_refuses_cpu_in_one_line(
        tmp_path, tiny_dir, capsys):
    cfg = _config(tmp_path, tiny_dir, method="qlora")
    q = quantization_config(cfg, get_family(FAMILY))
    assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_use_double_quant
    assert q.bnb_4bit_compute_dtype == torch.bfloat16
    assert set(q.llm_int8_skip_modules) == {"model.visual", "model.visual.merger", "lm_head"}
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the CPU refusal cannot be observed")
    with pytest.raises(ConfigError, match="qlora needs a CUDA GPU"):
        check_runnable(cfg)
    config = tmp_path / "q.yaml"
    config.write_text(json.dumps(cfg.model_dump(mode="json")))
    assert main(["train", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "needs a CUDA GPU" in err
    # The dry run still shows what would train: the same LoRA modules, counted without quantisation.
    assert main(["train", str(config), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "method qlora (no CUDA here" in out and "language" in out


@pytest.mark.slow  # trains for a few steps
def test_gradient_checkpointing_changes_no_loss_and_runs_leave_their_tracking_files(tmp_path, tiny_dir):
    plain = train(_config(tmp_path / "a", tiny_dir, max_steps=3, report_to="[tensorboard]"))
    checkpointed = train(_config(tmp_path / "b", tiny_dir, max_steps=3, gradient_checkpointing="true"))
    losses = [[json.loads(line)["loss"] for line in (r.run_dir / "metrics.jsonl").read_text().splitlines()
               if "loss" in json.loads(line)] for r in (plain, checkpointed)]
    assert len(losses[0]) == 3 and losses[0] == pytest.approx(losses[1], rel=1e-5)
    assert losses[0][0] != losses[0][-1]  # it trained
    first = json.loads((plain.run_dir / "metrics.jsonl").read_text().splitlines()[0])
    assert first["tokens_per_s"] > 0 and {"grad_norm", "learning_rate"} <= first.keys()
    assert (plain.run_dir / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert list((plain.run_dir / "tensorboard").rglob("events.out.tfevents.*"))


def test_a_non_finite_loss_stops_the_run_naming_the_batch_and_the_checkpoint_kept(tmp_path, tiny_dir):
    # A base whose embedding of one token is infinite: every batch holding that token has a non-finite loss.
    from vlmtune.models import load_processor

    spec = get_family(FAMILY)
    broken = tmp_path / "broken"
    model = load_model(tiny_dir(FAMILY))
    processor = load_processor(tiny_dir(FAMILY), spec)
    [token] = processor.tokenizer.encode(" purple", add_special_tokens=False)[-1:]
    with torch.no_grad():
        model.get_input_embeddings().weight[token] = float("inf")
    model.save_pretrained(broken)
    processor.save_pretrained(broken)
    answers = ["red", "blue", "green", "red", "blue", "green", "red", "blue", "it is purple"]
    rows = [{"messages": [{"role": "user", "content": "Say a colour."}, {"role": "assistant", "content": c}]}
            for c in answers]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = load_config(None, [f"model.path={broken}", f"data.train={data}", f"train.output_dir={tmp_path / 'run'}",
                             "train.progress=false", "train.batch_size=1", "train.save_steps=1",
                             "train.report_to=none", "data.cache_in_memory=true"])
    with pytest.raises(TrainingError, match=rf"loss is (nan|inf) at step \d+; the batch held {data}:9\. The run "
                                            "stopped; ") as err:
        train(cfg)
    step = int(str(err.value).split(" at step ")[1].split(";")[0])
    if step > 1:  # every finished step was checkpointed: the message names the last one, and it is on disk
        assert f"last good checkpoint: {tmp_path / 'run' / 'checkpoints' / f'checkpoint-{step - 1}'}" in str(err.value)
        assert (tmp_path / "run" / "checkpoints" / f"checkpoint-{step - 1}" / "trainer_state.json").is_file()
    else:
        assert "no checkpoint was saved" in str(err.value)


def test_early_stopping_and_best_checkpoint_need_validation_and_aligned_steps(tmp_path, tiny_dir):
    with pytest.raises(ConfigError, match="early_stopping_patience needs data.val, train.eval_steps"):
        check_runnable(_config(tmp_path, tiny_dir, early_stopping_patience=2))
    cfg = _config(tmp_path, tiny_dir, eval_steps=2, save_steps=3)
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"val": cfg.data.train})})
    with pytest.raises(ConfigError, match=r"save_steps \(3\) must be a multiple of train.eval_steps \(2\)"):
        check_runnable(cfg)


@pytest.mark.slow  # trains for a few steps
def test_early_stopping_stops_when_validation_stops_improving(tmp_path, tiny_dir):
    cfg = _config(tmp_path, tiny_dir, max_steps=40, eval_steps=1, save_steps=1, early_stopping_patience=1,
                  lr=0.5, report_to="none", save_total_limit=1)
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"val": cfg.data.train}),
                                 "eval": cfg.eval.model_copy(update={"at_end": False})})
    result = train(cfg)
    # A learning rate this high makes validation loss worse within a few steps; patience 1 stops right there.
    assert result.metrics["steps"] < 40
    assert len(list((result.run_dir / "checkpoints").glob("checkpoint-*"))) <= 2  # newest + best


@pytest.mark.slow  # trains for a few steps
def test_8bit_adamw_trains_with_its_quantised_state(tmp_path, tiny_dir):
    pytest.importorskip("bitsandbytes", reason="bitsandbytes is not installed (pip install 'vlmtune[qlora]')")

    def run(name: str):
        # r = 64: the adapters of the 64-wide tiny model reach bitsandbytes' 4096-element floor for 8-bit state.
        cfg = _config(tmp_path / name, tiny_dir, max_steps=4, optimizer=name, save_steps=4, lr=1e-2, report_to="none")
        return train(cfg.model_copy(update={"lora": cfg.lora.model_copy(update={"r": 64})}))

    runs = {name: run(name) for name in ("adamw_8bit", "adamw_torch")}
    losses = {name: [json.loads(line)["loss"] for line in (r.run_dir / "metrics.jsonl").read_text().splitlines()
                     if "loss" in json.loads(line)] for name, r in runs.items()}
    # Step 1 sees the same weights and batch; after it, 8-bit moments move the weights a little differently.
    assert losses["adamw_8bit"][0] == pytest.approx(losses["adamw_torch"][0], rel=1e-6)
    assert losses["adamw_8bit"][1:] != pytest.approx(losses["adamw_torch"][1:], rel=1e-7)
    assert losses["adamw_8bit"][1:] == pytest.approx(losses["adamw_torch"][1:], rel=0.05)
    state = torch.load(runs["adamw_8bit"].run_dir / "checkpoints" / "checkpoint-4" / "optimizer.pt",
                       weights_only=False)["state"]
    moments = [s["__bnb_optimizer_quant_state__"] for s in state.values()]
    assert any(m["state1"].dtype == torch.uint8 and "qmap1" in m for m in moments)  # 8-bit moments, code book
