"""The names a config may give for what higher layers register: eval tasks and their default metrics, metrics,
data formats. Plain data, so the config checks them without importing the registries (``vlmtune.evaluate.metrics``,
``vlmtune.data.formats``); each registry refuses a name missing here, so the two cannot drift apart."""

from __future__ import annotations

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


def require_name(name: str, known: tuple[str, ...], what: str) -> None:
    """Refuse to register ``name`` where the config would not accept it (``known`` lacks it)."""
    if name not in known:
        raise ValueError(f"{what} {name!r} is not listed in vlmtune.core.names; add it there so configs accept it")
