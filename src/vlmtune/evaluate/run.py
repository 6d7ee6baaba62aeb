"""Score a model on held-out samples by generating each last assistant answer."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data.render import Renderer
from ..data.sample import Sample
from .generate import generate
from .metrics import exact_match


@dataclass
class EvalResult:
    accuracy: float
    n: int
    predictions: list[dict]

    def write(self, path: str | Path) -> None:
        Path(path).write_text("".join(json.dumps(p) + "\n" for p in self.predictions))


def evaluate(model: torch.nn.Module, renderer: Renderer, samples: list[Sample], max_new_tokens: int = 16,
             batch_size: int = 8, progress: bool = True) -> EvalResult:
    """Exact-match accuracy of greedy answers against each sample's last assistant turn."""
    prompts, references = zip(*(s.prompt_and_answer() for s in samples), strict=True)
    answers = generate(model, renderer, list(prompts), max_new_tokens, batch_size, progress)
    predictions = [{"id": s.id, "reference": ref, "prediction": ans, "exact_match": exact_match(ans, ref)}
                   for s, ref, ans in zip(samples, references, answers, strict=True)]
    accuracy = sum(p["exact_match"] for p in predictions) / max(len(predictions), 1)
    return EvalResult(accuracy=accuracy, n=len(predictions), predictions=predictions)
