"""What a run config's ``data`` section means to the data layer: the readers' options, and the Renderer of a
model under its pixel limits, ``max_length`` and image size. Training, evaluation, prediction, serving and the
data commands all build them here, so they read and render the same way."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..config.schema import DataConfig
from .formats import ReadOptions

if TYPE_CHECKING:
    from ..models.spec import FamilySpec
    from .render import Renderer
    from .videos import VideoSettings


def read_options(data: DataConfig) -> ReadOptions:
    """How to read ``data``'s files: columns, fixed prompt and system prompt, where images live."""
    return ReadOptions(columns=data.columns, prompt=data.prompt, system=data.system,
                       media_root=data.media_root and Path(data.media_root),
                       allow_outside_root=data.allow_outside_root)


def renderer_for(model: str, data: DataConfig, spec: FamilySpec | None = None) -> Renderer:
    """The Renderer of ``model`` under the data settings ``data`` (pixel limits, ``max_length``, image size), over
    the checkpoint's own processor. ``spec``: the model's family (default: read from its config.json)."""
    # Imported here: they load torch and transformers, which reading data (read_options) does not need.
    from ..models import load_processor, spec_for
    from .render import Renderer

    spec = spec or spec_for(model, check_split=False)
    processor = load_processor(model, spec, data.min_pixels, data.max_pixels)
    return Renderer(processor, spec, data.max_length, data.image_size, video=video_settings(data))


def video_settings(data: DataConfig) -> VideoSettings:
    """How frames are sampled from ``data``'s videos (``data.video_*``)."""
    from .videos import VideoSettings

    return VideoSettings(fps=data.video_fps, max_frames=data.video_max_frames, max_pixels=data.video_max_pixels,
                         total_pixels=data.video_total_pixels)
