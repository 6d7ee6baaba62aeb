"""The names a config may give for what higher layers register: eval tasks and their default metrics, metrics,
data formats. Plain data, so the config checks them without importing the registries (``vlmtune.evaluate.metrics``,
``vlmtune.data.formats``); each registry refuses a name missing here, so the two cannot drift apart."""

from __future__ import annotations

import re

TASK_METRICS: dict[str, tuple[str, ...]] = {
    "vqa": ("exact_match", "vqa_accuracy"),
    "chart_qa": ("relaxed_accuracy", "exact_match"),
    "doc_vqa": ("anls", "exact_match"),
    "extraction": ("field_f1", "tree_accuracy", "exact_match"),
    "grounding": ("iou", "accuracy_at_iou_0.5", "click_accuracy", "exact_match"),
    "caption": ("bleu4", "rouge_l", "cider"),
}
"""Default metrics of each task type (``eval.task`` in the config). Grounding sets often mix answers with boxes
and text answers (GUI data): the grounding metrics score the first, exact match the second."""

METRIC_NAMES: tuple[str, ...] = (
    "accuracy_at_iou_0.5", "anls", "bleu4", "cider", "click_accuracy", "exact_match", "field_f1", "iou",
    "relaxed_accuracy", "rouge_l", "tree_accuracy", "vqa_accuracy",
)
"""Every metric ``vlmtune.evaluate.metrics`` registers (``eval.metrics``, ``train.best_by``)."""

FORMAT_NAMES: tuple[str, ...] = (
    "gui_events", "hf", "llamafactory", "llava", "messages", "preference", "qwen_tags", "rlhf_v", "sharegpt",
    "sharegpt_preference", "table",
)
"""Every reader ``vlmtune.data.formats`` registers (``data.format``, besides ``auto``)."""


REWARD_NAMES: tuple[str, ...] = ("anls", "click", "exact_match", "field_f1", "format", "iou", "relaxed_accuracy")
"""The built-in rewards of ``vlmtune.evaluate.rewards`` (``grpo.rewards``)."""

TASK_REWARDS: dict[str, tuple[str, ...]] = {
    "vqa": ("exact_match",),
    "chart_qa": ("relaxed_accuracy", "format"),
    "doc_vqa": ("anls",),
    "extraction": ("field_f1", "format"),
    "grounding": ("iou", "format"),
    "caption": (),
}
"""Default rewards of each eval.task; captions have no verifiable reward."""

_USER_REWARD = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def reward_problem(name: str) -> str | None:
    """Why ``name`` is neither a built-in reward nor ``module:function``; None where it is one."""
    if name in REWARD_NAMES or _USER_REWARD.match(name):
        return None
    return f"unknown reward {name!r}; built-in: {', '.join(REWARD_NAMES)}, or your own as module:function"


def require_name(name: str, known: tuple[str, ...], what: str) -> None:
    """Refuse to register ``name`` where the config would not accept it (``known`` lacks it)."""
    if name not in known:
        raise ValueError(f"{what} {name!r} is not listed in vlmtune.core.names; add it there so configs accept it")
