"""The canonical sample every reader produces and every later stage consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Role = Literal["system", "user", "assistant"]
ROLES: tuple[str, ...] = ("system", "user", "assistant")


@dataclass(frozen=True)
class TextPart:
    text: str


@dataclass(frozen=True)
class ImagePart:
    path: Path
    """Absolute path of the image file (readers resolve it against the data file's folder)."""


Part = TextPart | ImagePart


@dataclass(frozen=True)
class Message:
    role: Role
    content: tuple[Part, ...]

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.content if isinstance(p, TextPart))


@dataclass(frozen=True)
class Sample:
    """One conversation: system/user/assistant messages made of text and image parts."""

    messages: tuple[Message, ...]
    id: str
    """Where the sample came from, ``file:line``: every error about it quotes this."""
    meta: dict = field(default_factory=dict, compare=False)

    @property
    def images(self) -> list[Path]:
        return [p.path for m in self.messages for p in m.content if isinstance(p, ImagePart)]

    def to_chat(self, upto: int | None = None) -> list[dict]:
        """Messages in the form chat templates take (``{"type": "image"}`` stands for each image)."""
        chat = []
        for message in self.messages[:upto]:
            content = [{"type": "image"} if isinstance(p, ImagePart) else {"type": "text", "text": p.text}
                       for p in message.content]
            chat.append({"role": message.role, "content": content})
        return chat

    def prompt_and_answer(self) -> tuple[Sample, str]:
        """The conversation up to its last assistant turn, and that turn's text (for evaluation)."""
        last = max(i for i, m in enumerate(self.messages) if m.role == "assistant")
        return Sample(self.messages[:last], self.id, self.meta), self.messages[last].text
