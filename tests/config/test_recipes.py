"""The seed recipes in recipes/: each file loads strictly, holds exactly its seed's hyperparameters (written out here
independently of the YAML, over the schema defaults), and trains 2 steps on the tiny model of its family with tiny
data in its format. Only the model and data paths, output folder, step count, reporting and progress output, the
end-of-run generation (eval.at_end), the dtype (bf16 -> fp32 on CPU) and, for QLoRA recipes, the method are
overridden; every other value of the config that trains is checked against the seed. The 4-bit path of the QLoRA
recipes is checked as far as a machine without CUDA allows: their bitsandbytes config, and the refusal to start."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.conftest import write_jsonl
from vlmtune.config import load_config
from vlmtune.config.schema import Config, LoraConfig
from vlmtune.core.errors import ConfigError, UnknownFamilyError
from vlmtune.data.convert import split
from vlmtune.data.formats import read_dataset
from vlmtune.data.settings import read_options
from vlmtune.models import get_family, load_model
from vlmtune.train import train
from vlmtune.train.lora import apply_lora
from vlmtune.train.model import quantization_config
from vlmtune.train.run import check_runnable

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "recipes"


def _image(folder: Path, name: str, size: tuple[int, int], colour: tuple[int, int, int]) -> str:
    """Write ``folder/name`` and return ``name``, the path the data file (in ``folder``) refers to it by."""
    (folder / name).parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(folder / name)
    return name


def _gui_events(folder: Path) -> dict[str, Path]:
    """GUI events split 90/10 by ``vlmtune data split`` as the recipe's commands say: training reads the split,
    messages JSONL."""
    shots = [_image(folder, f"shots/{i}.png", size, colour) for i, (size, colour) in enumerate(
        [((112, 84), (240, 240, 240)), ((84, 112), (30, 90, 200))])]
    records = [
        {"type": "action_description", "screenshot": shots[0], "instruction": "Save the document",
         "bbox": [60, 10, 100, 30], "target": "Save button"},
        {"type": "action_description", "screenshot": shots[1], "instruction": "Enter the city", "action": "type",
         "point": [40, 60], "text": "Berlin"},
        {"type": "context_extraction", "screenshot": shots[1], "instruction": "What is the total?", "text": "$42.10"},
        {"type": "action_description", "screenshot": shots[0], "instruction": "Open the menu", "point": [10, 10]},
    ]
    # Ten distinct events: a split keeps repeats together, and val needs one.
    events = [{**r, "instruction": f"{r['instruction']} ({i})"} for i in range(3) for r in records][:10]
    split(write_jsonl(folder / "events.jsonl", events), folder, val=0.1)
    return {"train": folder / "train.jsonl", "val": folder / "val.jsonl"}


def _chartqa_parquet(folder: Path) -> dict[str, Path]:
    """HuggingFaceM4/ChartQA's own parquet layout (image, query, label), as downloaded."""
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({"image": datasets.Image(), "query": datasets.Value("string"),
                                  "label": datasets.List(datasets.Value("string"))})
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split_name, n in (("train", 3), ("val", 2)):
        images = [folder / _image(folder, f"src/{split_name}{i}.png", (96, 64), (60 * i, 120, 200)) for i in range(n)]
        rows = {"image": [{"bytes": p.read_bytes(), "path": None} for p in images],
                "query": [f"What is the value of bar {i}?" for i in range(n)], "label": [[str(i)] for i in range(n)]}
        paths[split_name] = folder / f"{split_name}.parquet"
        datasets.Dataset.from_dict(rows, features=features).to_parquet(paths[split_name])
    return paths


def _chart_messages(folder: Path) -> dict[str, Path]:
    records = [{"messages": [
        {"role": "user", "content": [{"type": "image", "image": _image(folder, f"chart{i}.png", (96, 64),
                                                                        (40 * i, 120, 200))},
                                     {"type": "text", "text": f"What is the value of bar {i}?"}]},
        {"role": "assistant", "content": str(10 * i + 2)}]} for i in range(4)]
    return {"train": write_jsonl(folder / "train.jsonl", records), "val": write_jsonl(folder / "val.jsonl",
                                                                                      records[:2])}


def _llava_json(folder: Path) -> dict[str, Path]:
    records = [{"id": str(i), "image": _image(folder, f"{i}.png", (64, 48), colour), "conversations": [
        {"from": "human", "value": "<image>\nWhat colour is this?"}, {"from": "gpt", "value": name}]}
        for i, (name, colour) in enumerate([("red", (255, 0, 0)), ("blue", (0, 0, 255)), ("green", (0, 200, 0))])]
    (folder / "train.json").write_text(json.dumps(records, indent=2))
    (folder / "val.json").write_text(json.dumps(records[:2], indent=2))
    return {"train": folder / "train.json", "val": folder / "val.json"}


def _sharegpt_split(folder: Path) -> dict[str, Path]:
    """ShareGPT receipts, split 90/10 by ``vlmtune data split`` as the recipe says; training reads its output."""
    records = [{"messages": [
        {"role": "user", "content": "<image>Extract the receipt as JSON."},
        {"role": "assistant", "content": json.dumps({"menu": [{"nm": "Tea", "price": f"{i}.00"}],
                                                     "total": {"total_price": f"{i}.00"}})}],
        "images": [_image(folder, f"receipt{i}.png", (56, 112), (250, 250, 240 - 20 * i))]} for i in range(6)]
    (folder / "cord.json").write_text(json.dumps(records))
    split(folder / "cord.json", folder, val=0.1)
    return {"train": folder / "train.jsonl", "val": folder / "val.jsonl"}


def _qwen_tags(folder: Path) -> dict[str, Path]:
    records = [{"id": f"identity_{i}", "conversations": [
        {"from": "user", "value": f"<|vision_start|>{_image(folder, f'coco/{i}.jpg', (80, 60), colour)}"
                                  "<|vision_end|>COCO Yes:"},
        {"from": "assistant", "value": caption}]}
        for i, (caption, colour) in enumerate([("A red square on a page.", (255, 0, 0)),
                                               ("A blue sky.", (0, 0, 255)), ("Green grass.", (0, 200, 0)),
                                               ("A black night.", (0, 0, 0))])]
    (folder / "train.json").write_text(json.dumps(records, indent=2))
    (folder / "val.json").write_text(json.dumps(records[:2], indent=2))
    return {"train": folder / "train.json", "val": folder / "val.json"}


def _rlhf_v(folder: Path) -> dict[str, Path]:
    """RLHF-V's records: one image, and the question with its chosen and rejected answers as a JSON string."""
    colours = [("red", (255, 0, 0)), ("blue", (0, 0, 255)), ("green", (0, 200, 0)), ("black", (0, 0, 0))]
    records = [{"idx": i, "image": _image(folder, f"img/{i}.png", (64, 48), colour), "text": json.dumps({
        "question": "Describe the image.", "chosen": f"A plain {name} rectangle.",
        "rejected": f"A {colours[i - 1][0]} cat sitting on a table."})} for i, (name, colour) in enumerate(colours)]
    return {"train": write_jsonl(folder / "train.jsonl", records), "val": write_jsonl(folder / "val.jsonl",
                                                                                      records[:2])}


@dataclass(frozen=True)
class Seed:
    family: str
    values: dict
    """Dotted key -> the seed's value; every other key must hold the schema default."""
    write_data: Callable[[Path], dict[str, Path]]


SEEDS = {
    "qwen2_5_vl_7b_gui_lora": Seed("qwen2_5_vl", {
        "model.path": "Qwen/Qwen2.5-VL-7B-Instruct", "model.dtype": "bf16",
        "data.train": "data/gui/train.jsonl", "data.val": "data/gui/val.jsonl", "data.format": "auto",
        "train.output_dir": "runs/qwen2_5_vl_7b_gui_lora", "train.method": "lora", "train.epochs": 10,
        "train.batch_size": 1, "train.grad_accum": 8, "train.lr": 2e-4, "train.optimizer": "adamw_torch",
        "train.warmup_steps": 50, "train.scheduler": "cosine", "train.max_grad_norm": 1.0, "train.eval_epochs": 2,
        "eval.task": "grounding", "eval.max_new_tokens": 64,
    }, _gui_events),
    "qwen2_5_vl_7b_gui_grpo": Seed("qwen2_5_vl", {
        "model.path": "Qwen/Qwen2.5-VL-7B-Instruct", "model.dtype": "bf16",
        "model.adapter": "runs/qwen2_5_vl_7b_gui_lora/adapter",
        "data.train": "data/gui/train.jsonl", "data.val": "data/gui/val.jsonl", "data.format": "auto",
        "data.max_pixels": 1258291, "train.stage": "grpo", "train.output_dir": "runs/qwen2_5_vl_7b_gui_grpo",
        "train.method": "lora", "train.epochs": 15, "train.batch_size": 1, "train.grad_accum": 16, "train.lr": 1e-6,
        "train.weight_decay": 1e-2, "train.warmup_steps": 0, "train.max_grad_norm": 1.0,
        "grpo.num_generations": 5, "grpo.temperature": 1.0, "grpo.beta": 1e-2, "grpo.max_new_tokens": 1024,
        "grpo.rewards": ["click", "format"], "eval.task": "grounding", "eval.max_new_tokens": 64,
    }, _gui_events),
    "qwen2_vl_7b_chartqa": Seed("qwen2_vl", {
        "model.path": "Qwen/Qwen2-VL-7B-Instruct", "model.dtype": "bf16",
        "data.train": "data/chartqa/train.jsonl", "data.val": "data/chartqa/val.jsonl", "data.format": "auto",
        "data.system": "You are a Vision Language Model specialized in interpreting visual data from chart images.\n"
                       "Your task is to analyze the provided chart image and respond to queries with concise answers,"
                       " usually a single word, number, or short phrase.\nThe charts include a variety of types (e.g.,"
                       " line charts, bar charts) and contain colors, labels, and text.\nFocus on delivering accurate,"
                       " succinct answers based on the visual information. Avoid additional explanation unless"
                       " absolutely necessary.",
        "lora.r": 8, "lora.alpha": 16, "lora.dropout": 0.05, "lora.targets": ["q_proj", "v_proj"],
        "quantization.components": ["language", "vision", "projector"],  # no skip modules: all but lm_head
        "quantization.quant_type": "nf4", "quantization.double_quant": True, "quantization.compute_dtype": "bf16",
        "train.output_dir": "runs/qwen2_vl_7b_chartqa", "train.method": "qlora", "train.epochs": 3,
        "train.batch_size": 4, "train.grad_accum": 8, "train.lr": 2e-4, "train.optimizer": "adamw_torch_fused",
        "train.scheduler": "constant", "train.warmup_ratio": 0.03, "train.max_grad_norm": 0.3, "train.tf32": True,
        "train.gradient_checkpointing": True, "train.group_by_length": False, "train.logging_steps": 10,
        "train.eval_steps": 10, "train.save_steps": 20, "train.save_total_limit": None,
        "eval.task": "chart_qa", "eval.max_new_tokens": 1024,
    }, _chart_messages),
    "llava_1_5_7b_qlora": Seed("llava", {
        "model.path": "llava-hf/llava-1.5-7b-hf",
        "data.train": "data/llava/train.json", "data.val": "data/llava/val.json", "data.format": "auto",
        "lora.r": 16, "lora.alpha": 32, "lora.dropout": 0.05, "lora.targets": ["q_proj", "k_proj", "v_proj", "o_proj"],
        "quantization.quant_type": "nf4", "quantization.double_quant": True, "quantization.compute_dtype": "bf16",
        "train.output_dir": "runs/llava_1_5_7b_qlora", "train.method": "qlora", "train.lr": 2e-4,
        "train.scheduler": "cosine", "train.warmup_ratio": 0.03,
    }, _llava_json),
    "qwen2_vl_2b_cord_extraction": Seed("qwen2_vl", {
        "model.path": "Qwen/Qwen2-VL-2B-Instruct",
        "data.train": "data/cord/train.jsonl", "data.val": "data/cord/val.jsonl", "data.format": "auto",
        "data.max_length": 1024,
        "train.output_dir": "runs/qwen2_vl_2b_cord_extraction", "train.method": "lora", "train.epochs": 10,
        "train.batch_size": 8, "train.grad_accum": 8, "train.lr": 1e-4, "train.scheduler": "cosine",
        "train.warmup_ratio": 0.1,
        "train.group_by_length": False,
        "eval.task": "extraction", "eval.max_new_tokens": 512,
    }, _sharegpt_split),
    "qwen2_vl_2b_coco_captions": Seed("qwen2_vl", {
        "model.path": "Qwen/Qwen2-VL-2B-Instruct", "model.dtype": "bf16",
        "data.train": "data/coco/train.json", "data.val": "data/coco/val.json", "data.format": "auto",
        "data.image_size": [280, 280], "data.max_length": 8192,
        "lora.r": 64, "lora.alpha": 16, "lora.dropout": 0.05,
        "lora.targets": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        "train.output_dir": "runs/qwen2_vl_2b_coco_captions", "train.method": "lora", "train.epochs": 2,
        "train.batch_size": 4, "train.grad_accum": 4, "train.lr": 1e-4, "train.scheduler": "linear",
        "train.warmup_steps": 0, "train.optimizer": "adamw_torch", "train.weight_decay": 0.0,
        "train.max_grad_norm": 1.0, "train.gradient_checkpointing": True, "train.group_by_length": False,
        "train.logging_steps": 10, "train.save_steps": 100, "train.save_total_limit": None, "train.autocast": False,
        "eval.task": "caption", "eval.max_new_tokens": 128,
    }, _qwen_tags),
    "qwen2_vl_2b_rlhfv_dpo": Seed("qwen2_vl", {
        "model.path": "Qwen/Qwen2-VL-2B-Instruct", "model.dtype": "bf16",
        "data.train": "data/rlhf_v/train.jsonl", "data.val": "data/rlhf_v/val.jsonl", "data.format": "auto",
        "data.max_length": 1024,
        "lora.r": 32, "lora.alpha": 16, "lora.dropout": 0.05, "lora.targets": ["q_proj", "v_proj"],
        "train.stage": "dpo", "train.output_dir": "runs/qwen2_vl_2b_rlhfv_dpo", "train.method": "lora",
        "train.epochs": 1, "train.max_steps": 1000, "train.batch_size": 2, "train.grad_accum": 8, "train.lr": 5e-6,
        "train.scheduler": "linear", "train.warmup_steps": 0, "train.optimizer": "adamw_torch_fused",
        "train.weight_decay": 0.0, "train.max_grad_norm": 1.0, "train.gradient_checkpointing": True,
        "train.logging_steps": 10, "train.eval_steps": 50, "train.save_steps": 500, "train.save_total_limit": None,
        "dpo.beta": 0.1, "dpo.loss_type": "sigmoid", "dpo.reference": "start",
        "eval.task": "caption", "eval.max_new_tokens": 256,
    }, _rlhf_v),
}
QLORA = sorted(name for name, seed in SEEDS.items() if seed.values["train.method"] == "qlora")


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _nested(dotted: dict) -> dict:
    tree: dict = {}
    for key, value in dotted.items():
        *parents, leaf = key.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def _expected(name: str) -> dict:
    """The whole config the seed implies: its values over the schema defaults."""
    return _flat(Config.model_validate(_nested(SEEDS[name].values)).model_dump(mode="json"))


def _family(name: str):
    family = SEEDS[name].family
    try:
        return get_family(family)
    except UnknownFamilyError as e:
        pytest.skip(f"the {family} family is not registered yet: {e}")


def test_every_recipe_has_a_seed_and_a_row_in_the_readme():
    names = sorted(p.stem for p in RECIPES.glob("*.yaml"))
    assert names == sorted(SEEDS)
    table = (RECIPES / "README.md").read_text()
    for name in names:
        assert f"recipes/{name}.yaml" in table, name
        assert (RECIPES / f"{name}.yaml").read_text().startswith("# "), f"{name}: no header naming its seed"


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_recipe_holds_exactly_its_seed_values(name):
    assert _flat(load_config(RECIPES / f"{name}.yaml").model_dump(mode="json")) == _expected(name)


# The data each command of recipes/README.md trains on: the seed's own form, and other documented forms.
DOCUMENTED_DATA = [(name, seed.write_data) for name, seed in sorted(SEEDS.items())] + [
    ("qwen2_vl_7b_chartqa", _chartqa_parquet)]


@pytest.mark.parametrize("name, write_data", DOCUMENTED_DATA,
                         ids=[f"{name}-{write.__name__.strip('_')}" for name, write in DOCUMENTED_DATA])
def test_recipe_reads_its_documented_data_with_its_format(name, write_data, tmp_path):
    cfg = load_config(RECIPES / f"{name}.yaml")
    for key, path in write_data(tmp_path / "data").items():
        result = read_dataset(path, cfg.data.format, read_options(cfg.data))
        assert result.samples and not result.problems, f"{key}: {[str(p) for p in result.problems[:3]]}"


@pytest.mark.slow  # trains every recipe
@pytest.mark.parametrize("name", sorted(SEEDS))
def test_recipe_trains_two_steps_on_the_tiny_model_of_its_family(name, tiny_dir, tmp_path):
    seed, spec = SEEDS[name], _family(name)
    data = seed.write_data(tmp_path / "data")
    overrides = {"model.path": tiny_dir(spec.name), "data.train": data["train"], "data.val": data["val"],
                 "train.output_dir": tmp_path / "run", "train.max_steps": 2, "train.report_to": "none",
                 "train.progress": "false", "eval.at_end": "false"}
    if seed.values.get("model.dtype") == "bf16":
        overrides["model.dtype"] = "fp32"  # bf16 autocast on CPU is slow and not what the recipe is for
    if seed.values["train.method"] == "qlora":
        overrides["train.method"] = "lora"  # 4-bit weights need CUDA; see the QLoRA test below
    if seed.values.get("model.adapter"):  # the SFT run it continues: an adapter of the tiny model
        overrides["model.adapter"] = _adapter(tiny_dir(spec.name), spec, tmp_path / "sft_adapter")
    if seed.values.get("train.stage") == "grpo":  # a step of 16 prompts needs more than the 9 samples here
        overrides.update({"grpo.max_new_tokens": 8, "train.grad_accum": 1})
    cfg = load_config(RECIPES / f"{name}.yaml", [f"{k}={v}" for k, v in overrides.items()])

    loaded, expected = _flat(cfg.model_dump(mode="json")), _expected(name)
    assert {k: v for k, v in loaded.items() if k not in overrides} == {
        k: v for k, v in expected.items() if k not in overrides}

    result = train(cfg)
    assert result.metrics["steps"] == 2 and math.isfinite(result.metrics["train_loss"])
    if cfg.train.stage in ("sft", "dpo"):  # DPO's validation loss is its preference loss on held-out pairs
        assert math.isfinite(result.metrics["val_loss"])
    else:  # a GRPO run has no validation loss, only the held-out evaluation
        assert "val_loss" not in result.metrics
    adapter = json.loads((result.weights_dir / "adapter_config.json").read_text())
    assert (adapter["r"], adapter["lora_alpha"], adapter["lora_dropout"]) == (cfg.lora.r, cfg.lora.alpha,
                                                                              cfg.lora.dropout)
    leaves = {module.rsplit(".", 1)[-1] for module in adapter["target_modules"]}
    if isinstance(cfg.lora.targets, list):
        assert leaves == set(cfg.lora.targets)
    prefixes = spec.components["language"]
    assert all(module.startswith(prefixes) for module in adapter["target_modules"]), "adapter off the language model"


def _adapter(model_dir: Path, spec, out: Path) -> Path:
    """A LoRA adapter (r 8, the language model's linear layers) of the model in ``model_dir``, saved to ``out``."""
    model = apply_lora(load_model(str(model_dir)), spec, LoraConfig())
    model.save_pretrained(out)
    return out


@pytest.mark.parametrize("name", QLORA)
def test_qlora_recipe_builds_its_4bit_config_and_is_refused_without_cuda(name):
    spec = _family(name)
    cfg = load_config(RECIPES / f"{name}.yaml")
    q = quantization_config(cfg, spec)
    assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_use_double_quant
    assert q.bnb_4bit_compute_dtype == torch.bfloat16
    kept = {prefix for component in ("vision", "projector", "lm_head") if component not in cfg.quantization.components
            for prefix in spec.components.get(component, ())}
    assert "lm_head" in kept
    assert set(q.llm_int8_skip_modules) == kept
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the refusal cannot be observed")
    with pytest.raises(ConfigError, match="qlora needs a CUDA GPU"):
        check_runnable(cfg)
