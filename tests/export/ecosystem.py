"""What an ecosystem user does with a folder (plain AutoProcessor + AutoModelForImageTextToText), and what vlmtune's
own ``predict`` answers, for the tests to compare; and a run folder holding a trained-looking LoRA adapter."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from vlmtune.cli.main import main
from vlmtune.config import Config, DataConfig, LoraConfig, ModelConfig, TrainConfig, dump_config
from vlmtune.models import get_family, load_model
from vlmtune.models.answers import AnswerText
from vlmtune.train import apply_lora

PROMPT = "What colour is the shape?"
MAX_NEW_TOKENS = 12


def plain_inputs(folder: Path, image: Path, family: str, **processor_kwargs) -> dict:
    """A user script's inputs: the folder's own processor and chat template, the image by its path."""
    processor = AutoProcessor.from_pretrained(folder, **processor_kwargs)
    messages = [{"role": "user", "content": [{"type": "image", "image": str(image)}, {"type": "text", "text": PROMPT}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                         return_tensors="pt", **get_family(family).chat_template_kwargs)


def plain_generate(folder: Path, image: Path, family: str) -> str:
    """Greedy answer of plain transformers (fp32), decoded as ``vlmtune predict`` prints it: the special tokens
    dropped except those an answer is made of (InternVL's ``<box>``, Qwen2-VL's ``<|box_start|>``)."""
    processor = AutoProcessor.from_pretrained(folder)
    model = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32)
    inputs = plain_inputs(folder, image, family)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
    answer_text = AnswerText(processor.tokenizer, get_family(family).answer_tokens)
    return answer_text(out[0, inputs["input_ids"].shape[1]:].tolist()).strip()


def vlmtune_predict(capsys, image: Path, *args: str) -> str:
    """``vlmtune predict ARGS --image IMAGE --prompt PROMPT``'s answer."""
    capsys.readouterr()
    assert main(["predict", *args, "--image", str(image), "--prompt", PROMPT,
                 "--max-new-tokens", str(MAX_NEW_TOKENS)]) == 0
    out = capsys.readouterr().out
    assert out.endswith("\n")
    return out[:-1]


def image_token_count(folder: Path, image: Path, family: str, **processor_kwargs) -> int:
    inputs = plain_inputs(folder, image, family, **processor_kwargs)
    image_token_id = json.loads((folder / "config.json").read_text())["image_token_id"]
    return int((inputs["input_ids"] == image_token_id).sum())


def make_run(base: Path, family: str, run: Path, cfg: Config | None = None, **data) -> Path:
    """``run`` as ``vlmtune train`` leaves it: config.yaml (``cfg``, or one with ``data`` settings) and an adapter whose
    B weights are non-zero, as after training."""
    cfg = cfg or Config(model=ModelConfig(path=str(base)), data=DataConfig(train="data/train.jsonl", **data),
                        lora=LoraConfig(r=4, alpha=8), train=TrainConfig(output_dir=str(run)))
    model = apply_lora(load_model(base), get_family(family), cfg.lora)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    model.save_pretrained(run / "adapter")
    dump_config(cfg, run / "config.yaml")
    return run
