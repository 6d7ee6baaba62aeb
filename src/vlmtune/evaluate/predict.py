"""``vlmtune predict``: one answer to a question about images, from a model and an optional adapter."""

from __future__ import annotations

from pathlib import Path

from ..config import Config
from ..core.sample import ImagePart, Message, Sample, TextPart
from ..models.load import load_for_inference
from .generate import generate


def prompt_sample(images: list[str], question: str, system: str | None = None) -> Sample:
    """The one-turn conversation asking ``question`` about ``images`` (which must exist), with the system prompt
    as the data readers add it: first, to a conversation that has none."""
    for image in images:
        if not Path(image).is_file():
            raise FileNotFoundError(f"image not found: {image}")
    parts = [ImagePart(Path(p).resolve()) for p in images] + [TextPart(question)]
    prefix = (Message("system", (TextPart(system),)),) if system else ()
    return Sample(messages=(*prefix, Message("user", tuple(parts))), id="<prompt>")


def predict(model_path: str, cfg: Config, images: list[str], question: str, adapter: str | None = None) -> str:
    """The answer of ``model_path`` (with ``adapter``) to ``question`` about ``images``, rendered and generated as
    ``cfg`` says (``data`` image settings and system prompt, ``eval.max_new_tokens``, ``model.dtype``)."""
    from ..data.settings import renderer_for

    prompt = prompt_sample(images, question, cfg.data.system)
    renderer = renderer_for(model_path, cfg.data)
    renderer.encode_prompt(prompt)  # an image the processor cannot take is refused before the weights load
    model = load_for_inference(model_path, cfg.model.dtype, adapter)
    return generate(model, renderer, [prompt], cfg.eval.max_new_tokens, progress=False)[0]
