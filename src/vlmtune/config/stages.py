"""The settings of the stages after supervised fine-tuning: ``dpo`` (preference tuning) and ``grpo``
(reinforcement fine-tuning), read only when ``train.stage`` names them."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from ..core.names import reward_problem
from .section import Section

DPO_LOSSES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
              "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm")
"""dpo.loss_type values: the losses of TRL's DPOTrainer."""


class DpoConfig(Section):
    """Preference tuning (``train.stage: dpo``)."""

    beta: float = Field(default=0.1, gt=0)
    """How far the tuned model may move from the reference: higher keeps it closer."""
    loss_type: Literal[DPO_LOSSES] = "sigmoid"  # type: ignore[valid-type]
    """sigmoid: the DPO loss; ipo, hinge, robust, ...: TRL's variants."""
    label_smoothing: float = Field(default=0.0, ge=0, lt=0.5)
    """Probability that a pair's preference is flipped (robust, exo_pair losses)."""
    reference: Literal["start", "base"] = "start"
    """The model the tuned one is held close to. start: the model as the run starts (the base checkpoint, or
    ``model.adapter`` on it, kept as a frozen copy of that adapter); base: the checkpoint without any adapter. With
    LoRA and no ``model.adapter`` both are the model with its adapters switched off: no second copy."""


class GrpoConfig(Section):
    """Group relative policy optimisation (train.stage grpo, TRL's GRPOTrainer): for each prompt of a batch the
    model samples ``num_generations`` answers, each is scored by the rewards, and the answers better than their
    group's mean are made more likely."""

    num_generations: int = Field(default=4, ge=2)
    """Answers sampled per prompt (the group); a batch holds train.batch_size prompts x this many answers."""
    max_new_tokens: int = Field(default=64, gt=0)
    """Longest sampled answer, in tokens."""
    temperature: float = Field(default=1.0, gt=0)
    beta: float = Field(default=0.0, ge=0)
    """Weight of the KL penalty towards the starting model (0, TRL's default: no reference model is kept)."""
    rewards: list[str] | None = None
    """Built-in rewards (iou, click, exact_match, relaxed_accuracy, anls, field_f1, format) or ``module:function``
    for your own; None: the defaults of eval.task."""
    reward_weights: list[float] | None = None
    """Weight of each reward in the sum (None: 1 each)."""
    use_vllm: Literal["auto"] | bool = "auto"
    """Sample with vLLM (colocated with training); auto: when vllm is installed and a CUDA GPU is present."""

    @field_validator("rewards")
    @classmethod
    def _known_rewards(cls, rewards: list[str] | None) -> list[str] | None:
        problems = [p for p in (reward_problem(name) for name in rewards or ()) if p]
        if problems:
            raise ValueError("; ".join(problems))
        if rewards is not None and not rewards:
            raise ValueError("no reward named; name at least one (or leave grpo.rewards out for eval.task's)")
        return rewards

    @model_validator(mode="after")
    def _one_weight_each(self) -> GrpoConfig:
        if self.reward_weights is not None and self.rewards is not None \
                and len(self.reward_weights) != len(self.rewards):
            raise ValueError(f"grpo.reward_weights has {len(self.reward_weights)} weight(s) for "
                             f"{len(self.rewards)} grpo.rewards; give one weight per reward")
        return self
