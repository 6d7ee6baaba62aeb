"""Count a rendered sample's tokens from its text and image sizes alone, without decoding any pixels.

Each image is one placeholder token in the template text, which the processor expands to the image's visual
tokens. How many depends on the family: a placeholder expansion written as text, a counting rule of the spec,
the processor's own ``_get_num_multimodal_tokens``, or (none of those) processing blank images of the same sizes.
"""

from __future__ import annotations

from typing import Any

from PIL import Image

from ..models.spec import FamilySpec


def count_tokens(processor: Any, spec: FamilySpec, text: str, image_sizes: list[tuple[int, int]]) -> tuple[int, int]:
    """``(text, visual)`` token counts of the template ``text`` whose images are shown at ``image_sizes``
    (``(w, h)``, in the order of their placeholders)."""
    n_text = n_tokens(processor.tokenizer, text) - len(image_sizes)
    if not image_sizes:
        return n_text, 0
    if spec.image_placeholder_text is not None:
        # The expansion holds text tokens too, which may merge with their neighbours: tokenise it in place.
        pieces = text.split(processor.image_token)
        expanded = pieces[0] + "".join(spec.image_placeholder_text(processor, size) + piece
                                       for size, piece in zip(image_sizes, pieces[1:], strict=True))
        return n_text, n_tokens(processor.tokenizer, expanded) - n_text
    if spec.image_token_counts is not None:
        return n_text, sum(spec.image_token_counts(processor, image_sizes))
    if not hasattr(processor, "_get_num_multimodal_tokens"):
        # No counting rule (Mllama reads images by cross-attention; each stays one token): process blank images
        # of the same sizes, which expand exactly as the real ones do.
        blanks = [Image.new("RGB", size) for size in image_sizes]
        ids = processor(text=[text], images=[blanks], add_special_tokens=add_special_tokens(processor.tokenizer, text))
        return n_text, len(ids["input_ids"][0]) - n_text
    counts = processor._get_num_multimodal_tokens(image_sizes=[(h, w) for w, h in image_sizes])
    return n_text, sum(counts["num_image_tokens"])


def n_tokens(tokenizer: Any, text: str) -> int:
    """Tokens of ``text`` as the processor tokenises a rendered conversation."""
    return len(tokenizer(text, add_special_tokens=add_special_tokens(tokenizer, text))["input_ids"])


def add_special_tokens(tokenizer: Any, text: str) -> bool:
    """Whether the tokenizer adds its special tokens to ``text``, as transformers' ``apply_chat_template(
    tokenize=True)`` decides."""
    # A template that writes the BOS token itself (Gemma 3) must not get a second one from a tokenizer that adds it.
    bos = tokenizer.bos_token
    return not (bos is not None and text.startswith(bos))
