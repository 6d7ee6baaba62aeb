"""The canonical sample every reader produces and every later stage consumes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
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
    size: tuple[int, int] | None = None
    """``(width, height)`` the image is shown to the model at: resized to it before the processor, taking
    precedence over ``data.image_size``. Set by ``data.on_too_long: shrink``; readers leave it None."""


@dataclass(frozen=True)
class VideoPart:
    path: Path
    """Absolute path of the video file (readers resolve it against the data file's folder)."""
    max_frames: int | None = None
    """At most this many frames are sampled, below ``data.video_max_frames``. Set by ``data.on_too_long: shrink``;
    readers leave it None."""


@dataclass(frozen=True)
class BoxPart:
    """A bounding box ``(x1, y1, x2, y2)`` in pixels of the ORIGINAL image ``image`` (index into the
    sample's images). Rendering writes it in the model family's grounding syntax."""

    box: tuple[float, float, float, float]
    image: int = 0
    label: str | None = None
    source_field: str | None = field(default=None, compare=False, repr=False)
    """The record's field the box was read from, for errors found after reading (a box off its image)."""


@dataclass(frozen=True)
class PointPart:
    """A point ``(x, y)`` (e.g. a click) in pixels of the ORIGINAL image ``image``."""

    point: tuple[float, float]
    image: int = 0
    label: str | None = None
    source_field: str | None = field(default=None, compare=False, repr=False)
    """The record's field the point was read from."""


GroundingPart = BoxPart | PointPart
Part = TextPart | ImagePart | VideoPart | BoxPart | PointPart


@dataclass(frozen=True)
class Message:
    role: Role
    content: tuple[Part, ...]

    @property
    def text(self) -> str:
        """The message's text parts joined (grounding parts left out)."""
        return "".join(p.text for p in self.content if isinstance(p, TextPart))

    @property
    def has_answer(self) -> bool:
        return bool(self.text.strip()) or any(isinstance(p, BoxPart | PointPart) for p in self.content)


@dataclass(frozen=True)
class Sample:
    """One conversation: system/user/assistant messages made of text and image parts."""

    messages: tuple[Message, ...]
    id: str
    """Which record the sample came from, unique within its file: ``train.jsonl:12``, ``train.json[3] (line 1)``,
    ``train.parquet[17]``, with the record's own ``id`` where it has one (see
    :func:`~vlmtune.core.errors.record_name`). Every error about the sample quotes it."""
    meta: dict = field(default_factory=dict, compare=False)

    @property
    def images(self) -> list[Path]:
        return [p.path for p in self.image_parts]

    @property
    def image_parts(self) -> list[ImagePart]:
        return [p for m in self.messages for p in m.content if isinstance(p, ImagePart)]

    @property
    def video_parts(self) -> list[VideoPart]:
        return [p for m in self.messages for p in m.content if isinstance(p, VideoPart)]

    def with_video_frames(self, max_frames: int) -> Sample:
        """This sample with at most ``max_frames`` frames sampled from each of its videos."""
        messages = tuple(replace(m, content=tuple(replace(p, max_frames=max_frames) if isinstance(p, VideoPart)
                                                  else p for p in m.content)) for m in self.messages)
        return replace(self, messages=messages)

    def with_image_sizes(self, sizes: list[tuple[int, int] | None]) -> Sample:
        """This sample with its images (in order) shown at ``sizes`` (see :attr:`ImagePart.size`)."""
        it = iter(sizes)
        messages = tuple(replace(m, content=tuple(replace(p, size=next(it)) if isinstance(p, ImagePart) else p
                                                  for p in m.content)) for m in self.messages)
        return replace(self, messages=messages)

    @property
    def has_grounding(self) -> bool:
        return any(isinstance(p, BoxPart | PointPart) for m in self.messages for p in m.content)

    def to_chat(self, upto: int | None = None,
                ground: Callable[[GroundingPart], str] | None = None) -> list[dict]:
        """Messages in the form chat templates take (``{"type": "image"}`` stands for each image, ``{"type":
        "video"}`` for each video).

        ``ground`` writes a box or point as text in the model family's syntax; it is required when the
        sample has any.
        """
        chat = []
        for message in self.messages[:upto]:
            content = []
            for p in message.content:
                if isinstance(p, ImagePart):
                    content.append({"type": "image"})
                elif isinstance(p, VideoPart):
                    content.append({"type": "video"})
                elif isinstance(p, TextPart):
                    content.append({"type": "text", "text": p.text})
                elif ground is None:
                    raise ValueError(f"{self.id}: has boxes or points but no grounding convention was given")
                else:
                    content.append({"type": "text", "text": ground(p)})
            chat.append({"role": message.role, "content": content})
        return chat

    def prompt_and_answer(self) -> tuple[Sample, str]:
        """The conversation up to its last assistant turn, and that turn's text (for evaluation)."""
        last = max(i for i, m in enumerate(self.messages) if m.role == "assistant")
        return Sample(self.messages[:last], self.id, self.meta), self.messages[last].text


@dataclass(frozen=True)
class PreferenceSample(Sample):
    """A preference pair: a prompt (system and user turns with their images, earlier turns too) answered once as
    preferred (``chosen``) and once as dispreferred (``rejected``).

    ``messages`` hold the prompt and the chosen answer, so everything that reads a :class:`Sample` (image and token
    checks, the held-out evaluation, supervised training on the chosen answers) sees the chosen conversation.
    """

    rejected: Message = field(default=None, kw_only=True)  # type: ignore[assignment]
    """The dispreferred last assistant turn."""

    def __post_init__(self):
        if not isinstance(self.rejected, Message) or self.rejected.role != "assistant":
            raise ValueError(f"{self.id}: a preference sample needs a rejected assistant message")
        if not self.messages or self.messages[-1].role != "assistant":
            raise ValueError(f"{self.id}: a preference sample's messages end with the chosen assistant message")

    @property
    def prompt(self) -> tuple[Message, ...]:
        return self.messages[:-1]

    @property
    def chosen(self) -> Message:
        return self.messages[-1]

    def chosen_sample(self) -> Sample:
        """The prompt answered with the chosen answer, as a plain :class:`Sample`."""
        return Sample(self.messages, self.id, self.meta)

    def rejected_sample(self) -> Sample:
        """The prompt answered with the rejected answer, as a plain :class:`Sample`."""
        return Sample((*self.prompt, self.rejected), self.id, self.meta)
