"""Placeholders in a turn's text (``<image>``, ``<video>``) -> the text and media parts they stand for."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from ...core.sample import ImagePart, Part, TextPart, VideoPart

if TYPE_CHECKING:
    from .common import Where

IMAGE_PLACEHOLDER = "<image>"
VIDEO_PLACEHOLDER = "<video>"
_OTHER_MEDIA = ("<video>", "<audio>")


def split_placeholders(text: str, images: list[ImagePart], used: list[int], where: Where, field: str,
                       placeholder: str = IMAGE_PLACEHOLDER, videos: list[VideoPart] | None = None,
                       used_videos: list[int] | None = None) -> list[Part]:
    """Text with ``<image>`` placeholders -> text and image parts, taking images in order.

    Newlines around a placeholder belong to it, not to the text: one newline (``\\n`` or ``\\r\\n``) directly
    after each placeholder is dropped, and where the text ends with placeholders, one newline directly before
    them too. So ``"<image>\\nWhat is shown?"`` and ``"What is shown?\\n<image>"`` are the image part and the
    text ``What is shown?``, and render as that message does: the chat template puts its own separator
    between an image and the text, and a newline kept from the placeholder would make the model learn a prompt
    it never sees at inference. Other newlines stay.

    ``used`` holds the count of images taken so far (shared across the turns of one record); ``videos`` and
    ``used_videos`` the same for ``<video>`` placeholders, where the format has videos (None: refused).
    """
    for tag in _OTHER_MEDIA:
        if tag in text and not (tag == VIDEO_PLACEHOLDER and videos is not None):
            raise where.error(f"{tag} placeholder: only images are supported, not video or audio", field)
    tags = [placeholder, VIDEO_PLACEHOLDER] if videos is not None else [placeholder]
    pieces = re.split("(" + "|".join(map(re.escape, tags)) + ")", text)
    found, pieces = pieces[1::2], pieces[::2]
    pieces = pieces[:1] + [_drop_newline(piece, start=True) for piece in pieces[1:]]
    if len(pieces) > 1 and not pieces[-1]:
        last_text = max(k for k, piece in enumerate(pieces[:-1]) if piece or k == 0)
        pieces[last_text] = _drop_newline(pieces[last_text], start=False)
    parts: list[Part] = []
    for k, piece in enumerate(pieces):
        if piece:
            parts.append(TextPart(piece))
        if k < len(pieces) - 1:
            media, taken = (images, used) if found[k] == placeholder else (videos or [], used_videos or [0])
            if taken[0] >= len(media):
                kind = "images" if found[k] == placeholder else "videos"
                raise where.error(f"more {found[k]} placeholders than {kind} ({len(media)} given)", field)
            parts.append(media[taken[0]])
            taken[0] += 1
    return parts


def _drop_newline(text: str, start: bool) -> str:
    """``text`` without one newline at its start (or end)."""
    for newline in ("\r\n", "\n"):
        if start and text.startswith(newline):
            return text[len(newline):]
        if not start and text.endswith(newline):
            return text[:-len(newline)]
    return text
