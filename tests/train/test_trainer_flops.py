"""VlmTrainer counts training FLOPs (the Trainer's ``total_flos``) as transformers' Trainer does, with the model's
parameters counted once instead of at every step."""

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForImageTextToText, Trainer, TrainingArguments

from vlmtune.train.trainer import VlmTrainer


def test_the_flop_count_equals_the_trainers_own(tiny_dir, tmp_path):
    model = AutoModelForImageTextToText.from_pretrained(tiny_dir("qwen2_vl"))
    model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    trainer = VlmTrainer(model=model, args=TrainingArguments(output_dir=str(tmp_path), use_cpu=True,
                                                             report_to=[]))
    for shape in [(2, 17), (3, 40), (1, 5)]:
        inputs = {"input_ids": torch.zeros(shape, dtype=torch.long)}
        assert trainer.floating_point_ops(inputs) == Trainer.floating_point_ops(trainer, inputs) > 0
    assert trainer.floating_point_ops({"pixel_values": torch.zeros(4, 3)}) == 0  # no token ids: nothing counted
