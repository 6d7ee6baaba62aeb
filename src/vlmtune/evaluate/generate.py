"""Batched greedy generation for held-out evaluation and ``vlmtune predict``."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from ..core.sample import Sample
    from ..data.render import Renderer


def generate(model: torch.nn.Module, renderer: Renderer, prompts: list[Sample], max_new_tokens: int = 32,
             batch_size: int = 8, progress: bool = True) -> list[str]:
    """Greedy answers to each prompt (a sample ending before the assistant turn to generate)."""
    # torch on first call: the evaluation package is imported by the config schema, which must stay light.
    import torch

    with torch.no_grad():
        return _generate(model, renderer, prompts, max_new_tokens, batch_size, progress)


def _generate(model: torch.nn.Module, renderer: Renderer, prompts: list[Sample], max_new_tokens: int,
              batch_size: int, progress: bool) -> list[str]:
    from tqdm.auto import tqdm

    from ..data.collate import Collator
    from ..models.answers import AnswerText

    tokenizer = renderer.processor.tokenizer
    answer_text = AnswerText(tokenizer, renderer.spec.answer_tokens)
    # Decoder-only generation continues from the last position, so prompts are padded on the left.
    collate = Collator(tokenizer.pad_token_id, padding_side="left")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    answers: list[str] = []
    bar = tqdm(total=len(prompts), desc="generate", unit="sample", disable=not progress)
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start:start + batch_size]
        batch = {k: v.to(device) for k, v in collate([renderer.encode_prompt(s) for s in chunk]).items()}
        out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
        answers += [answer_text(row) for row in out[:, batch["input_ids"].shape[1]:].tolist()]
        bar.update(len(chunk))
    bar.close()
    model.train(was_training)
    return [a.strip() for a in answers]
