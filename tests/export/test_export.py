"""Export: the merged model equals base + adapter, the adapter folder is clean and documented, vLLM checks."""

import json
from pathlib import Path

import peft
import pytest
import torch
import yaml
from PIL import Image
from safetensors import safe_open
from transformers import AutoModelForImageTextToText
from transformers.utils import is_torchvision_available

from tests.export.ecosystem import make_run
from vlmtune.cli.main import main
from vlmtune.config import Config, DataConfig, LoraConfig, ModelConfig, TrainConfig
from vlmtune.core.sample import ImagePart, Message, Sample, TextPart
from vlmtune.data import Renderer
from vlmtune.export import SETTINGS_FILE, check_vllm_compatible, export_adapter, export_merged
from vlmtune.models import get_family, load_model, load_processor

FAMILY = "qwen2_5_vl"
METRICS = {"train_loss": 0.4321, "steps": 12, "val_loss": 0.5678, "val_accuracy": 0.93, "family": FAMILY}


@pytest.fixture(scope="module")
def run(tiny_dir, tmp_path_factory) -> tuple[Path, Path]:
    """(base folder, run folder) with a LoRA adapter whose B weights are non-zero, as after training."""
    base = tiny_dir(FAMILY)
    run = tmp_path_factory.mktemp("export_run")
    cfg = Config(model=ModelConfig(path=str(base)), data=DataConfig(train="data/train.jsonl", val="data/val.jsonl"),
                 lora=LoraConfig(r=4, alpha=8, dropout=0.05), train=TrainConfig(lr=3e-4, epochs=2, batch_size=2,
                                                                              grad_accum=4, output_dir=str(run)))
    make_run(base, FAMILY, run, cfg)
    (run / "metrics.json").write_text(json.dumps(METRICS))
    (run / "train.log").write_text("final metrics\n")
    return base, run


@pytest.fixture(scope="module")
def inputs(tiny_dir, tmp_path_factory) -> dict:
    image = tmp_path_factory.mktemp("export_img") / "shape.png"
    Image.new("RGB", (90, 60), (200, 30, 30)).save(image)
    spec = get_family(FAMILY)
    prompt = Sample(messages=(Message("user", (ImagePart(image), TextPart("What colour is the shape?"))),), id="q")
    encoded = Renderer(load_processor(tiny_dir(FAMILY), spec), spec).encode_prompt(prompt)
    return {k: v.unsqueeze(0) if k in ("input_ids", "attention_mask", "mm_token_type_ids") else v
            for k, v in encoded.items()}


def logits(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(**inputs).logits


def tensor_names(folder: Path) -> list[str]:
    names = []
    for file in folder.glob("*.safetensors"):
        with safe_open(str(file), framework="pt") as f:
            names += list(f.keys())
    return names


def test_merged_model_equals_base_plus_adapter_and_loads_with_plain_transformers(run, inputs, tmp_path):
    base, run_dir = run
    out = export_merged(base, run_dir / "adapter", tmp_path / "merged", dtype="fp32")

    merged = AutoModelForImageTextToText.from_pretrained(out)
    adapted = peft.PeftModel.from_pretrained(load_model(base), run_dir / "adapter")
    merged_logits, adapted_logits = logits(merged, inputs), logits(adapted, inputs)
    assert (merged_logits - adapted_logits).abs().max() < 1e-4
    assert (merged_logits - logits(load_model(base), inputs)).abs().max() > 1e-2

    names = tensor_names(out)
    assert names and not [n for n in names if "lora_" in n or "base_layer" in n]
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == json.loads((base / "config.json").read_text())["architectures"]
    for file in ("generation_config.json", "tokenizer.json", "chat_template.jinja", "processor_config.json"):
        assert (out / file).is_file(), file
    assert load_processor(out, get_family(FAMILY)).tokenizer.get_vocab() == \
        load_processor(base, get_family(FAMILY)).tokenizer.get_vocab()
    if is_torchvision_available():  # the published processors need torchvision to load with AutoProcessor
        from transformers import AutoProcessor

        assert AutoProcessor.from_pretrained(out).chat_template


def test_exported_adapter_is_clean_loads_with_peft_and_carries_a_model_card(run, inputs, tmp_path):
    base, run_dir = run
    out = export_adapter(run_dir / "adapter", tmp_path / "adapter", run_dir, base_model="Qwen/Qwen2.5-VL-7B-Instruct",
                         spec=get_family(FAMILY))
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "adapter_config.json", "adapter_model.safetensors",
                                                     SETTINGS_FILE]

    config = json.loads((out / "adapter_config.json").read_text())
    original = json.loads((run_dir / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "Qwen/Qwen2.5-VL-7B-Instruct"
    # Exact language-model paths, kept: bare leaf names would also hit the Qwen2.5-VL vision MLPs.
    assert config["target_modules"] == original["target_modules"]
    assert all(m.startswith("model.language_model.layers.") for m in config["target_modules"])

    exported = peft.PeftModel.from_pretrained(load_model(base), out)
    original_model = peft.PeftModel.from_pretrained(load_model(base), run_dir / "adapter")
    assert torch.equal(logits(exported, inputs), logits(original_model, inputs))

    card = (out / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["library_name"] == "peft" and front["base_model"] == "Qwen/Qwen2.5-VL-7B-Instruct"
    assert "base_model:adapter:Qwen/Qwen2.5-VL-7B-Instruct" in front["tags"]
    for text in ("data/train.jsonl", "data/val.jsonl", "| val_accuracy | 0.93 |", "| train_loss | 0.4321 |",
                 "| LoRA r / alpha / dropout | 4 / 8 / 0.05 |", "0.0003 (cosine", "| epochs / max steps | 2.0 / -1 |",
                 "| batch size per device x grad accum | 2 x 4 |", "PeftModel.from_pretrained(base",
                 "vllm serve Qwen/Qwen2.5-VL-7B-Instruct --enable-lora --lora-modules adapter=path/to/adapter "
                 "--max-lora-rank 8", "Result: no problem found."):
        assert text in card, text


def test_adapter_card_without_run_dir_still_names_base_and_lora_settings(run, tmp_path, caplog):
    _, run_dir = run
    out = export_adapter(run_dir / "adapter", tmp_path / "a", spec=get_family(FAMILY))
    card = (out / "README.md").read_text()
    base_path = json.loads((run_dir / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert f"base_model: {json.dumps(base_path)}" in card
    assert "| LoRA r / alpha / dropout | 4 / 8 / 0.05 |" in card and "exported without its run folder" in card
    assert "local path" in caplog.text  # a temp path as base: the user is told to pass --base-model-name


def test_vllm_check_flags_lora_on_the_vision_tower(run, tiny_dir, tmp_path):
    _, run_dir = run
    spec = get_family(FAMILY)
    assert check_vllm_compatible(run_dir / "adapter", spec) == []
    # The trap: bare leaf names put PEFT adapters on the Qwen2.5-VL vision MLPs as well.
    bare = peft.get_peft_model(load_model(tiny_dir(FAMILY)), peft.LoraConfig(r=4, target_modules=["gate_proj"]))
    bare.save_pretrained(tmp_path / "bare")
    problems = check_vllm_compatible(tmp_path / "bare", spec)
    assert len(problems) == 1 and "on the vision" in problems[0] and "model.visual.blocks" in problems[0]


def test_export_command(run, tmp_path, capsys):
    base, run_dir = run
    assert main(["export", "--model", str(base), "--adapter", str(run_dir / "adapter"), "-o", str(tmp_path / "a"),
                 "--base-model-name", "org/base"]) == 0
    assert "adapter written to" in capsys.readouterr().out
    assert "| val_accuracy | 0.93 |" in (tmp_path / "a" / "README.md").read_text()  # run dir found next to it

    assert main(["export", "--model", str(base), "--adapter", str(run_dir / "adapter"), "-o", str(tmp_path / "m"),
                 "--merge", "--dtype", "bf16"]) == 0
    assert json.loads((tmp_path / "m" / "config.json").read_text())["dtype"] == "bfloat16"
    with safe_open(str(tmp_path / "m" / "model.safetensors"), framework="pt") as f:
        assert f.get_tensor("lm_head.weight").dtype == torch.bfloat16


def test_exports_record_the_image_settings_the_run_trained_with(run, tmp_path, capsys, caplog):
    base, plain_run = run
    trained = tmp_path / "run"
    (trained / "adapter").mkdir(parents=True)
    for file in ("adapter_config.json", "adapter_model.safetensors"):
        (trained / "adapter" / file).write_bytes((plain_run / "adapter" / file).read_bytes())
    config = yaml.safe_load((plain_run / "config.yaml").read_text())
    config["data"].update(min_pixels=3136, max_pixels=200704, image_size=[224, 160])
    (trained / "config.yaml").write_text(yaml.safe_dump(config))
    settings = {"min_pixels": 3136, "max_pixels": 200704, "image_size": [224, 160]}

    assert main(["export", "--model", str(base), "--adapter", str(trained / "adapter"), "-o", str(tmp_path / "a"),
                 "--base-model-name", "org/base"]) == 0
    assert f"README.md, {SETTINGS_FILE})" in capsys.readouterr().out
    assert json.loads((tmp_path / "a" / SETTINGS_FILE).read_text()) == settings
    card = (tmp_path / "a" / "README.md").read_text()
    for text in ("## Image settings", "Trained with `min_pixels=3136, max_pixels=200704`",
                 "processor = AutoProcessor.from_pretrained('org/base', min_pixels=3136, max_pixels=200704)",
                 "--max-lora-rank 8 --mm-processor-kwargs '{\"min_pixels\": 3136, \"max_pixels\": 200704}'",
                 "stretched to 224 x 160 pixels before the processor", f"Machine-readable in `{SETTINGS_FILE}`"):
        assert text in card, text

    # Options given on the command line win over the run folder's.
    assert main(["export", "--model", str(base), "--adapter", str(trained / "adapter"), "-o", str(tmp_path / "b"),
                 "--min-pixels", "784", "--max-pixels", "50176", "--image-size", "64", "64"]) == 0
    assert json.loads((tmp_path / "b" / SETTINGS_FILE).read_text()) == {"min_pixels": 784, "max_pixels": 50176,
                                                                       "image_size": [64, 64]}

    caplog.clear()
    assert main(["export", "--model", str(base), "--adapter", str(trained / "adapter"), "-o", str(tmp_path / "m"),
                 "--merge", "--dtype", "fp32"]) == 0
    assert json.loads((tmp_path / "m" / SETTINGS_FILE).read_text()) == settings
    size = json.loads((tmp_path / "m" / "processor_config.json").read_text())["image_processor"]["size"]
    assert size == {"shortest_edge": 3136, "longest_edge": 200704}  # plain AutoProcessor sees the run's limits
    assert "stretched every image to 224 x 160 pixels before the processor" in caplog.text
    assert "no processor setting does that" in caplog.text


def test_adapter_image_settings_from_a_run_without_any_and_without_a_run(run, tmp_path):
    _, run_dir = run
    out = export_adapter(run_dir / "adapter", tmp_path / "a", run_dir, spec=get_family(FAMILY))
    assert json.loads((out / SETTINGS_FILE).read_text()) == {"min_pixels": None, "max_pixels": None,
                                                            "image_size": None}
    assert "Trained with the base processor's own image settings." in (out / "README.md").read_text()

    out = export_adapter(run_dir / "adapter", tmp_path / "b", spec=get_family(FAMILY))
    assert not (out / SETTINGS_FILE).exists()  # nothing known: no file a server would take for the base's own
    assert "## Image settings\n\nNot recorded (exported without its run folder)." in (out / "README.md").read_text()


@pytest.mark.parametrize("case", ["missing adapter", "output not empty"])
def test_export_command_user_errors_are_one_line(run, tmp_path, capsys, case):
    base, run_dir = run
    adapter, out = run_dir / "adapter", tmp_path / "out"
    if case == "missing adapter":
        adapter = tmp_path / "nowhere"
    else:
        out.mkdir()
        (out / "old.txt").write_text("x")
    assert main(["export", "--model", str(base), "--adapter", str(adapter), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vlmtune export: error: ")
    assert ("not a PEFT adapter folder" if case == "missing adapter" else "not an empty folder") in err[0]
