"""The image settings a run trained with, as an export records them for whoever serves the model.

``min_pixels`` / ``max_pixels`` are processor settings: a merged export's processor holds them, and for an adapter the
server passes them to the base's processor. ``image_size`` (every image stretched to one size before the processor)
has no processor setting: the client must resize the images itself. Both folders carry the three values in
:data:`SETTINGS_FILE`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

SETTINGS_FILE = "vlmtune_image_settings.json"


@dataclass(frozen=True)
class ImageSettings:
    """The run's ``data.min_pixels``, ``data.max_pixels`` and ``data.image_size`` (None: the base processor's own)."""

    min_pixels: int | None = None
    max_pixels: int | None = None
    image_size: tuple[int, int] | None = None

    @classmethod
    def of(cls, min_pixels: int | None, max_pixels: int | None,
           image_size: Sequence[int] | None) -> ImageSettings:
        return cls(min_pixels, max_pixels, tuple(image_size) if image_size else None)  # type: ignore[arg-type]

    def processor_kwargs(self) -> dict[str, int]:
        """The settings a processor takes: ``AutoProcessor.from_pretrained(base, **kwargs)``, vLLM's
        ``--mm-processor-kwargs``."""
        return {k: v for k, v in (("min_pixels", self.min_pixels), ("max_pixels", self.max_pixels)) if v is not None}

    def to_json(self) -> dict:
        return {"min_pixels": self.min_pixels, "max_pixels": self.max_pixels,
                "image_size": list(self.image_size) if self.image_size else None}

    def write(self, out: Path) -> Path:
        path = out / SETTINGS_FILE
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        return path

    def stretch_note(self) -> str | None:
        """What the client must do for ``image_size``, or None where it is unset."""
        if not self.image_size:
            return None
        width, height = self.image_size
        return (f"the run stretched every image to {width} x {height} pixels before the processor (data.image_size, "
                "aspect ratio not kept); no processor setting does that: resize images to that size before sending "
                f"them (recorded in {SETTINGS_FILE})")

    def card_lines(self, base: str) -> list[str]:
        """The model card's section on the image settings the adapter was trained with."""
        kwargs = self.processor_kwargs()
        lines = [] if kwargs or self.image_size else ["Trained with the base processor's own image settings.", ""]
        if kwargs:
            shown = ", ".join(f"{k}={v}" for k, v in kwargs.items())
            lines += [f"Trained with `{shown}`: load the base's processor with them, "
                      f"`AutoProcessor.from_pretrained({base!r}, {shown})`, or pass them to vLLM as "
                      f"`--mm-processor-kwargs '{json.dumps(kwargs)}'`, so images get as many visual tokens as in "
                      "training.", ""]
        if self.image_size:
            width, height = self.image_size
            lines += [f"Every training image was stretched to {width} x {height} pixels before the processor "
                      "(`data.image_size`, aspect ratio not kept). No processor setting does that: resize images to "
                      "that size before sending them.", ""]
        return lines + [f"Machine-readable in `{SETTINGS_FILE}` (`min_pixels`, `max_pixels`, `image_size`; null: the "
                        "base processor's own)."]
