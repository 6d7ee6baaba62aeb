"""One training run of one tool, inside that tool's own virtual environment (started by ``peers.py``).

    PYTHON peer_driver.py {vlmtune|trl|llamafactory} SPEC.json

Every tool trains through transformers' ``Trainer``; two class-level wrappers, installed before the tool builds
its trainer, read the same figures from each: ``Trainer.train`` keeps the ``train_samples_per_second`` it reports
(samples of the epoch / its wall time), ``Trainer.training_step`` counts the real and padded token slots of every
batch from its ``attention_mask``. The result, with the process's peak RSS, goes to ``SPEC["result"]`` as JSON.
Only the standard library and the tool's own packages are imported here, so the file runs in every environment.
"""

from __future__ import annotations

import importlib.metadata
import json
import resource
import sys
from pathlib import Path

MAX_PIXELS = 448 * 448
TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
"""LoRA on every linear layer of the language model, none of the vision tower's or the projector's."""


def run_vlmtune(spec: dict) -> None:
    from vlmtune.cli.main import main

    config = Path(spec["work"]) / "vlmtune.yaml"
    config.write_text(json.dumps({  # a plain config: model, data, LoRA, batch, nothing about speed
        "model": {"path": spec["model"]},
        "data": {"train": spec["data"]},
        "lora": {"r": 64, "alpha": 16, "dropout": 0.05},
        "train": {"output_dir": str(Path(spec["work"]) / "run"), "batch_size": 4, "lr": 1e-4, "epochs": 1,
                  "report_to": "none", "progress": False},
    }))
    if main(["train", str(config)]) != 0:
        raise SystemExit("vlmtune train failed")


def run_trl(spec: dict) -> None:
    from datasets import Dataset
    from peft import LoraConfig
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import SFTConfig, SFTTrainer

    rows = []
    data = Path(spec["data"])
    for line in data.read_text().splitlines():
        user, assistant = json.loads(line)["messages"]
        image, question = user["content"][0]["image"], user["content"][1]["text"]
        rows.append({"images": [Image.open(data.parent / image).convert("RGB")], "messages": [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]},
            {"role": "assistant", "content": [{"type": "text", "text": assistant["content"]}]}]})
    processor = AutoProcessor.from_pretrained(spec["model"])
    model = AutoModelForImageTextToText.from_pretrained(spec["model"], dtype="float32")
    args = SFTConfig(output_dir=str(Path(spec["work"]) / "run"), per_device_train_batch_size=4, num_train_epochs=1,
                     learning_rate=1e-4, report_to="none", save_strategy="no", logging_steps=10, use_cpu=True,
                     disable_tqdm=True)
    lora = LoraConfig(r=64, lora_alpha=16, lora_dropout=0.05, target_modules=TARGETS, task_type="CAUSAL_LM")
    SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=processor,
               peft_config=lora).train()


def run_llamafactory(spec: dict) -> None:
    from llamafactory.train.tuner import run_exp

    run_exp({
        "model_name_or_path": spec["model"], "stage": "sft", "do_train": True, "finetuning_type": "lora",
        "lora_rank": 64, "lora_alpha": 16, "lora_dropout": 0.05, "lora_target": "all",
        "dataset": "peers", "dataset_dir": spec["llamafactory_data"], "template": "qwen2_vl", "cutoff_len": 4096,
        "image_max_pixels": MAX_PIXELS, "overwrite_cache": True, "output_dir": str(Path(spec["work"]) / "run"),
        "overwrite_output_dir": True, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1,
        "learning_rate": 1e-4, "num_train_epochs": 1.0, "logging_steps": 10, "save_strategy": "no",
        "report_to": "none", "plot_loss": False, "disable_tqdm": True,
    })


RUNNERS = {"vlmtune": run_vlmtune, "trl": run_trl, "llamafactory": run_llamafactory}


def main() -> int:
    tool, spec = sys.argv[1], json.loads(Path(sys.argv[2]).read_text())
    import torch
    import transformers

    torch.set_num_threads(spec["threads"])
    tokens = {"real": 0, "slots": 0, "batches": 0}
    metrics: dict = {}
    step, train = transformers.Trainer.training_step, transformers.Trainer.train

    def counting_step(self, model, inputs, *args, **kwargs):
        mask = inputs.get("attention_mask")
        if mask is not None and mask.dim() == 2:
            tokens["real"] += int(mask.sum())
            tokens["slots"] += mask.numel()
        tokens["batches"] += 1
        return step(self, model, inputs, *args, **kwargs)

    def reporting_train(self, *args, **kwargs):
        output = train(self, *args, **kwargs)
        metrics.update(output.metrics)
        return output

    transformers.Trainer.training_step, transformers.Trainer.train = counting_step, reporting_train
    RUNNERS[tool](spec)
    import peft

    result = {
        "samples_per_s": metrics["train_samples_per_second"], "train_runtime_s": metrics["train_runtime"],
        "padding_share": 1 - tokens["real"] / tokens["slots"] if tokens["slots"] else None,
        "real_tokens": tokens["real"], "batches": tokens["batches"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "torch_threads": torch.get_num_threads(), "version": importlib.metadata.version(tool),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
    }
    Path(spec["result"]).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
