"""Rules across keys that the schema's per-section checks cannot see; ``vlmtune train`` and ``vlmtune config
validate`` both apply them, before anything heavy is imported."""

from __future__ import annotations

import glob
import importlib.util
import re
from pathlib import Path
from typing import Any

from ..core.errors import ConfigError
from ..core.names import FORMAT_NAMES, TASK_REWARDS
from .schema import Config


def run_problems(cfg: Config) -> list[str]:
    """Every cross-key problem of ``cfg``, one line each (empty when the run can start)."""
    t, problems = cfg.train, []
    validates_and_saves = cfg.data.val and (t.eval_steps or t.eval_epochs) and t.save_steps
    if t.early_stopping_patience and not validates_and_saves:
        problems.append("train.early_stopping_patience needs data.val, train.eval_steps (or train.eval_epochs) and "
                        "train.save_steps")
    if t.best_by != "loss" and not validates_and_saves:
        problems.append(f"train.best_by {t.best_by} needs data.val, train.eval_steps (or train.eval_epochs) and "
                        "train.save_steps: the best checkpoint is one saved at a validation")
    if t.save_steps and cfg.data.val and t.eval_steps and t.save_steps % t.eval_steps:
        problems.append(f"train.save_steps ({t.save_steps}) must be a multiple of train.eval_steps "
                        f"({t.eval_steps}) so the best checkpoint by validation loss can be kept")
    if t.stage == "dpo" and t.max_tokens_per_batch:
        problems.append("train.max_tokens_per_batch does not apply to train.stage dpo (batches of train.batch_size "
                        "pairs); remove it")
    if t.stage == "dpo" and t.best_by != "loss":
        problems.append(f"train.best_by {t.best_by}: train.stage dpo keeps the best checkpoint by validation loss "
                        "only")
    if cfg.model.adapter and not t.method.trains_adapter:
        problems.append("model.adapter continues a LoRA adapter, but train.method is full (no adapter): use lora")
    problems += format_problems(cfg.data.format)
    if t.stage == "grpo":
        problems += grpo_problems(cfg)
    if cfg.data.streaming:
        problems += streaming_problems(cfg)
    return problems


def streaming_problems(cfg: Config) -> list[str]:
    """Why ``cfg`` cannot train on a stream (``data.streaming``), one line each."""
    t, problems = cfg.train, []
    if t.max_steps <= 0:
        problems.append("data.streaming needs train.max_steps: a stream has no known length, so no epoch to count")
    if t.stage != "sft":
        problems.append(f"data.streaming trains train.stage sft only, not {t.stage}")
    if t.max_tokens_per_batch or t.eval_epochs:
        key = "max_tokens_per_batch" if t.max_tokens_per_batch else "eval_epochs"
        problems.append(f"train.{key} needs the whole data set known in advance; with data.streaming remove it "
                        "(batches are train.batch_size samples; validate with train.eval_steps)")
    return problems


def grpo_problems(cfg: Config) -> list[str]:
    """Why ``cfg`` cannot run as a GRPO stage, one line each (empty when it can)."""
    t, g = cfg.train, cfg.grpo
    problems = []
    if importlib.util.find_spec("trl") is None:
        problems.append("train.stage grpo needs TRL: pip install 'vlmtune[rl]'")
    for key in ("eval_steps", "eval_epochs", "early_stopping_patience"):
        if getattr(t, key) is not None:
            problems.append(f"train.{key}: a GRPO run validates once, at the end (the held-out evaluation of "
                            "eval.at_end); remove it")
    if t.best_by != "loss":
        problems.append("train.best_by: a GRPO run keeps the newest checkpoints only; remove it")
    if t.max_tokens_per_batch is not None:
        problems.append("train.max_tokens_per_batch: GRPO batches are train.batch_size prompts x "
                        "grpo.num_generations answers; remove it")
    names = reward_names(cfg)
    if not names:
        problems.append(f"grpo.rewards: eval.task {cfg.eval.task} has no verifiable reward; name grpo.rewards")
    if g.reward_weights is not None and len(g.reward_weights) != len(names):
        problems.append(f"grpo.reward_weights has {len(g.reward_weights)} weight(s) for the {len(names)} rewards "
                        f"{', '.join(names)}; give one weight per reward")
    if g.use_vllm is True and importlib.util.find_spec("vllm") is None:
        problems.append("grpo.use_vllm true: vllm is not installed (pip install vllm), or set it to auto")
    return problems


def reward_names(cfg: Config) -> list[str]:
    """``grpo.rewards``, or the defaults of ``eval.task``."""
    return list(cfg.grpo.rewards if cfg.grpo.rewards is not None else TASK_REWARDS[cfg.eval.task])


def format_problems(name: Any) -> list[str]:
    """``data.format`` names a registered reader (or ``auto``)."""
    if not isinstance(name, str) or name == "auto" or name in FORMAT_NAMES:
        return []
    return [f"data.format: unknown data format {name!r}; known: auto, {', '.join(sorted(FORMAT_NAMES))}"]


# A hub id is ``name`` or ``org/name``; anything else that is not on disk is a missing folder.
_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


def path_problems(raw: dict) -> list[str]:
    """Files and folders the (possibly invalid) raw config names that do not exist, relative to the current
    folder as training reads them: data.train, data.val, data.media_root, and model.path unless a hub id."""
    problems = []
    data = raw.get("data") if isinstance(raw.get("data"), dict) else {}
    for key in ("train", "val", "media_root"):
        value = data.get(key)
        # dataset_info.json#NAME names an entry of a registry file.
        if isinstance(value, str) and value and not Path(value.split("#", 1)[0]).exists() and not glob.glob(value):
            problems.append(f"data.{key}: {value} does not exist")
    model = raw.get("model") if isinstance(raw.get("model"), dict) else {}
    path = model.get("path")
    if isinstance(path, str) and path and not Path(path).exists() and (
            path.startswith((".", "/", "~")) or not _HUB_ID.match(path)):
        problems.append(f"model.path: folder {path} does not exist (and is not a hub id like org/name)")
    return problems


def check_config(cfg: Config) -> None:
    """Raise a ConfigError listing every problem of :func:`run_problems`."""
    problems = run_problems(cfg)
    if len(problems) == 1:
        raise ConfigError(problems[0])
    if problems:
        raise ConfigError(f"{len(problems)} problems in the config:\n" + "\n".join(f"  {p}" for p in problems))
