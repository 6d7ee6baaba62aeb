"""The Chat tab: one image and one question, answered by every served model side by side (base, then adapters)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from ..core.sample import ImagePart, Message, TextPart


def ask_messages(image: str | None, question: str) -> list[Message]:
    """The conversation sent to each model: the image (where given), then the question."""
    parts = ([ImagePart(Path(image).resolve())] if image else []) + [TextPart(question)]
    return [Message("user", tuple(parts))]


def answers(engine: Any, image: str | None, question: str, max_new_tokens: int | None) -> list[str]:
    """Each served model's answer, in :meth:`Engine.model_names` order."""
    messages = ask_messages(image, question)
    tokens = int(max_new_tokens) if max_new_tokens else None
    return [engine.chat(name, messages, max_new_tokens=tokens) for name in engine.model_names()]


def build(engine: Any | None) -> None:
    """The tab's components and events, inside an open ``gr.Blocks``. Without an engine, how to start one."""
    if engine is None:
        gr.Markdown("No model is served: start the UI with `vlmtune ui --model BASE [--adapter NAME=RUN/adapter]` "
                    "or `--config RUN/config.yaml` to chat here.")
        return
    with gr.Row():
        # image_mode None: the uploaded file itself reaches the model, as `vlmtune predict --image FILE` reads it.
        image = gr.Image(type="filepath", image_mode=None, label="image", elem_id="vlmtune-chat-image", height=320)
        with gr.Column():
            question = gr.Textbox(label="question", lines=3, elem_id="vlmtune-chat-question")
            tokens = gr.Number(0, label="max new tokens (0: the run config's eval.max_new_tokens)", precision=0,
                               minimum=0)
            ask = gr.Button("ask every model", variant="primary", elem_id="vlmtune-chat-ask")
    names = engine.model_names()
    with gr.Row():
        boxes = [gr.Textbox(label=name, lines=6, interactive=False, elem_id=f"vlmtune-answer-{i}",
                            elem_classes=["vlmtune-answer"]) for i, name in enumerate(names)]

    def run(image_path: str | None, text: str, limit: float | None):
        if not text or not text.strip():
            raise gr.Error("ask a question")
        from ..serve.engine import RequestError

        try:
            return answers(engine, image_path, text, limit)
        except RequestError as e:  # e.g. a prompt over the model's context: said on the page, one line
            raise gr.Error(e.message) from None

    ask.click(run, [image, question, tokens], boxes)
    question.submit(run, [image, question, tokens], boxes)
