"""Score a model before and after fine-tuning on held-out samples, side by side, with the task's metrics.

The last assistant turn of each sample is generated (greedy, batched) and scored. With a LoRA adapter the
base is the same model with the adapter switched off, so no second copy of the weights is loaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..core.errors import SampleError, user_id
from ..core.sample import BoxPart, PointPart, Sample
from ..data.render import Renderer, image_size
from .generate import generate
from .metrics import Example, get_metric

SIDES = ("base", "tuned")


@dataclass
class Comparison:
    """Metric values per side, and one row per sample with both answers and their scores."""

    metrics: dict[str, dict[str, float]]
    """metric -> {"base": value, "tuned": value} ("base" absent when it was not run)."""
    rows: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    """metric -> how many samples it scored: a metric skips the samples it does not apply to (IoU those
    without a reference box, exact match those with one), so in a mixed set each counts its own."""

    @property
    def n(self) -> int:
        return len(self.rows)

    def scored(self, name: str) -> int:
        """Samples metric ``name`` scored (all of them for a metric without per-sample scores)."""
        return self.counts.get(name, self.n)

    def to_json(self, **extra: Any) -> dict[str, Any]:
        metrics = {name: {**sides, "n": self.scored(name)} for name, sides in self.metrics.items()}
        return {**extra, "n": self.n, "metrics": metrics}

    def write(self, out_dir: str | Path, loss_log: Path | None = None, report: bool = True, **extra: Any) -> Path:
        """``metrics.json``, ``predictions.jsonl`` and (with ``report``) ``report.html`` in ``out_dir``."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "metrics.json").write_text(json.dumps(self.to_json(**extra), indent=2) + "\n")
        with open(out_dir / "predictions.jsonl", "w", encoding="utf-8") as f:
            for row in self.rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        if report:
            from .report import write_report

            write_report(out_dir, self.to_json(**extra), self.rows, loss_log)
        return out_dir

    def summary(self) -> str:
        lines = [f"{'metric':<22}{'base':>10}{'tuned':>10}{'n':>7}  ({self.n} samples)"]
        for name, sides in self.metrics.items():
            n = self.scored(name)
            base, tuned = (f"{sides[s]:.3f}" if s in sides and n else "-" for s in ("base", "tuned"))
            lines.append(f"{name:<22}{base:>10}{tuned:>10}{n:>7}")
        return "\n".join(lines)


def compare(model: torch.nn.Module, renderer: Renderer, samples: list[Sample], metrics: list[str],
            base_model: torch.nn.Module | None = None, compare_base: bool = True, max_new_tokens: int = 16,
            batch_size: int = 8, progress: bool = True) -> Comparison:
    """Generate each sample's last answer with the tuned model (and the base), and score both.

    ``base_model`` is the model before fine-tuning when it is a separate model (full fine-tuning); for a PEFT
    model the base is the adapter switched off. ``compare_base=False`` scores the tuned model only.
    """
    prompts, references, grounding = [], [], []
    for sample in samples:
        prompt, _ = sample.prompt_and_answer()
        prompts.append(prompt)
        references.append(renderer.message_text(sample, len(prompt.messages)))
        grounding.append(tuple(p for p in sample.messages[len(prompt.messages)].content
                               if isinstance(p, BoxPart | PointPart)))
    check_references(renderer, samples, metrics, references)
    answers = {"tuned": generate(model, renderer, prompts, max_new_tokens, batch_size, progress)}
    if compare_base and base_model is not None:
        answers["base"] = generate(base_model, renderer, prompts, max_new_tokens, batch_size, progress)
    elif compare_base and hasattr(model, "disable_adapter"):
        with model.disable_adapter():
            answers["base"] = generate(model, renderer, prompts, max_new_tokens, batch_size, progress)
    sides = [side for side in SIDES if side in answers]

    examples = {side: [example_of(answers[side][i], references[i], grounding[i], samples[i], renderer)
                       for i in range(len(samples))] for side in sides}
    table: dict[str, dict[str, float]] = {}
    per_sample: dict[str, dict[str, list]] = {}
    counts: dict[str, int] = {}
    for name in metrics:
        metric = get_metric(name)
        for side in sides:
            result = metric.compute(examples[side])
            table.setdefault(name, {})[side] = result.value
            per_sample.setdefault(name, {})[side] = result.per_sample
            if result.per_sample:  # whether a metric applies depends on the reference alone: any side's count
                counts[name] = sum(score is not None for score in result.per_sample)
    rows = []
    for i, sample in enumerate(samples):
        row: dict[str, Any] = {"id": sample.id, "images": [str(p) for p in sample.images],
                               "prompt": prompts[i].messages[-1].text, "reference": references[i]}
        own_id = user_id(sample.meta)
        if own_id is not None:  # the record's own id as it wrote it, to join predictions with the user's data
            row["record_id"] = own_id
        row.update({side: answers[side][i] for side in sides})
        row["scores"] = {name: {side: per_sample[name][side][i] if per_sample[name][side] else None
                                for side in sides} for name in metrics}
        rows.append(row)
    return Comparison(table, rows, counts)


def check_references(renderer: Renderer, samples: list[Sample], metrics: list[str],
                     references: list[str] | None = None) -> None:
    """Raise :class:`SampleError` for the first sample whose reference answer one of ``metrics`` cannot score
    (the extraction metrics need JSON), before anything is generated. ``references``: the samples' reference
    texts where already rendered."""
    checks = [(name, get_metric(name).reference_problem) for name in metrics]
    checks = [(name, check) for name, check in checks if check is not None]
    if not checks:
        return
    for i, sample in enumerate(samples):
        if references is not None:
            reference = references[i]
        else:
            last = max(j for j, m in enumerate(sample.messages) if m.role == "assistant")
            reference = renderer.message_text(sample, last)
        for name, check in checks:
            problem = check(reference)
            if problem:
                raise SampleError(sample.id, f"{problem} (metric {name}): {reference[:80]!r}; fix the record or "
                                  "choose other eval.metrics")


def example_of(prediction: str, reference: str, ref_grounding: tuple, sample: Sample, renderer: Renderer) -> Example:
    """``prediction`` of ``sample`` as the metrics score it: its boxes and points parsed with the family's grounding
    syntax into pixels of the original image, beside the reference's (``ref_grounding``)."""
    others = sample.meta.get("other_answers") or []
    references = (reference, *(a for a in others if isinstance(a, str)))
    if not ref_grounding or not renderer.spec.has_grounding:
        return Example(prediction, references)
    part = sample.image_parts[ref_grounding[0].image]
    size = image_size(part.path)
    # At the size the model was shown (a shrunk image's own), as the reference was written.
    convention = renderer.spec.grounding
    model = size if convention.grid is not None else renderer.model_size(size, part.size)
    parsed = convention.parse(prediction, size, model)
    return Example(prediction, references, tuple(parsed), ref_grounding)
