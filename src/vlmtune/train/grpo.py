"""Reinforcement fine-tuning (``train.stage: grpo``) on TRL's GRPOTrainer.

The data are the SFT records: the prompt is every message before the last assistant turn, the reference the last
assistant turn (its text, boxes and points). For each prompt the model samples ``grpo.num_generations`` answers;
the rewards (:mod:`vlmtune.evaluate.rewards`) score each against the reference with the evaluation's metrics.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
from collections.abc import Sequence
from typing import Any

import torch
from transformers import TrainerCallback, TrainingArguments

from ..config import Config
from ..config.rules import reward_names
from ..core.errors import ConfigError
from ..core.sample import BoxPart, ImagePart, PointPart, Sample, TextPart
from ..data import Renderer
from ..evaluate.rewards import Reward, reward
from ..evaluate.run import example_of
from ..models.answers import AnswerText
from .prepare import Prepared

log = logging.getLogger("vlmtune")


def grpo_trainer(cfg: Config, data: Prepared, model: torch.nn.Module, args: TrainingArguments,
                 callbacks: list[TrainerCallback]):
    """TRL's GRPOTrainer over the run's model (its adapters, or the SFT adapter of ``model.adapter``), arguments
    and callbacks, sampling answers to the prompts of ``data.train`` and scoring them with the rewards."""
    from trl import GRPOTrainer

    step = cfg.train.batch_size * cfg.train.grad_accum * args.world_size
    if len(data.train_samples) < step:  # TRL's sampler would yield no batch at all: the run would train 0 steps
        raise ConfigError(f"data.train has {len(data.train_samples)} samples, and a GRPO step takes {step} prompts "
                          f"(train.batch_size {cfg.train.batch_size} x train.grad_accum {cfg.train.grad_accum} x "
                          f"{args.world_size} processes); lower train.grad_accum or train.batch_size")
    references = References(data.renderer, data.train_samples)
    names = reward_names(cfg)
    rewards = [references.reward_function(name) for name in names]
    grpo_args = grpo_arguments(cfg, args, data)
    log.info("GRPO: %d answers sampled a prompt (temperature %g, up to %d tokens, %s), rewards %s",
             cfg.grpo.num_generations, cfg.grpo.temperature, cfg.grpo.max_new_tokens,
             "vLLM" if grpo_args.use_vllm else "transformers generate", ", ".join(names))
    return GRPOTrainer(model=model, reward_funcs=rewards, args=grpo_args,
                       train_dataset=prompt_dataset(data.renderer, data.train_samples),
                       processing_class=data.processor, callbacks=callbacks)


def grpo_arguments(cfg: Config, args: TrainingArguments, data: Prepared):
    """TRL's GRPOConfig: the run's TrainingArguments with the grpo section. ``train.batch_size`` counts prompts,
    so a device's batch holds that many x ``grpo.num_generations`` sampled answers."""
    from trl import GRPOConfig

    g = cfg.grpo
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainingArguments) if f.init}
    values.update(
        per_device_train_batch_size=cfg.train.batch_size * g.num_generations,
        eval_strategy="no", eval_steps=None, load_best_model_at_end=False, metric_for_best_model=None,
        num_generations=g.num_generations, max_completion_length=g.max_new_tokens, temperature=g.temperature,
        beta=g.beta, reward_weights=g.reward_weights, use_vllm=use_vllm(g.use_vllm), vllm_mode="colocate",
        chat_template_kwargs=dict(data.spec.chat_template_kwargs) or None, shuffle_dataset=True,
        log_completions=False)
    return GRPOConfig(**values)


def use_vllm(setting: str | bool) -> bool:
    """``grpo.use_vllm``: auto samples with vLLM where it is installed and a CUDA GPU is present."""
    if setting == "auto":
        return torch.cuda.is_available() and importlib.util.find_spec("vllm") is not None
    return bool(setting)


def prompt_dataset(renderer: Renderer, samples: Sequence[Sample]):
    """The prompts as TRL takes them: ``prompt`` (the messages before each sample's last answer, boxes and points
    written in the family's syntax), ``images`` (opened on access as training opens them) and ``sample_index``
    (which sample's reference the rewards score against)."""
    from datasets import Dataset

    rows = [{"prompt": _prompt_chat(renderer, s), "sample_index": i} for i, s in enumerate(samples)]

    def with_images(batch: dict[str, list]) -> dict[str, list]:
        batch["images"] = [renderer.shown_images(samples[i]) for i in batch["sample_index"]]
        return batch

    dataset = Dataset.from_list(rows)
    dataset.set_transform(with_images, output_all_columns=True)
    return dataset


def _prompt_chat(renderer: Renderer, sample: Sample) -> list[dict[str, Any]]:
    prompt, _ = sample.prompt_and_answer()
    ground = renderer.grounder(sample) if sample.has_grounding else None  # the same writer as training's text
    chat = []
    for message in prompt.messages:
        content = []
        for part in message.content:
            if isinstance(part, ImagePart):
                content.append({"type": "image"})
            elif isinstance(part, TextPart):
                content.append({"type": "text", "text": part.text})
            elif isinstance(part, BoxPart | PointPart) and ground is not None:
                content.append({"type": "text", "text": ground(part)})
        chat.append({"role": message.role, "content": content})
    return chat


class References:
    """Each training sample's reference answer, and the rewards as TRL calls them: one score per sampled answer,
    from the answer's text and its sample's reference."""

    def __init__(self, renderer: Renderer, samples: Sequence[Sample]):
        self.renderer, self.samples = renderer, samples
        # TRL decodes with skip_special_tokens, which drops grounding tokens (Qwen2-VL's <|box_start|>): the
        # rewards read the sampled token ids themselves, as evaluation decodes them.
        self.answer_text = AnswerText(renderer.processor.tokenizer, renderer.spec.answer_tokens)
        self._texts: dict[int, tuple[str, tuple]] = {}

    def reference(self, index: int) -> tuple[str, tuple]:
        """(text, boxes and points) of sample ``index``'s last answer."""
        if index not in self._texts:
            sample = self.samples[index]
            last = max(i for i, m in enumerate(sample.messages) if m.role == "assistant")
            grounding = tuple(p for p in sample.messages[last].content if isinstance(p, BoxPart | PointPart))
            self._texts[index] = (self.renderer.message_text(sample, last), grounding)
        return self._texts[index]

    def examples(self, answers: Sequence[str], indices: Sequence[int]):
        """One metric Example per answer, its boxes and points parsed with the family's grounding syntax."""
        out = []
        for answer, index in zip(answers, indices, strict=True):
            text, grounding = self.reference(index)
            out.append(example_of(answer.strip(), text, grounding, self.samples[index], self.renderer))
        return out

    def reward_function(self, name: str):
        """The reward ``name`` as a TRL reward function (named after it, which is how TRL logs it)."""
        try:
            score: Reward = reward(name)
        except ValueError as e:
            raise ConfigError(f"grpo.rewards: {e}") from None

        def reward_function(completions: list, sample_index: list[int], completion_ids: list | None = None,
                            **_: Any) -> list[float | None]:
            answers = [self.answer_text(ids) for ids in completion_ids] if completion_ids is not None else \
                [c[0]["content"] if isinstance(c, list) else c for c in completions]
            scores = list(score(self.examples(answers, sample_index)))
            if len(scores) != len(answers):
                raise ValueError(f"reward {name} returned {len(scores)} scores for {len(answers)} answers")
            return scores

        reward_function.__name__ = name.split(":")[-1]
        return reward_function
