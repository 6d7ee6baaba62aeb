"""Video files: decoded with PyAV, sampled by the family's frame rule, sized by the Qwen-VL resize rule.

The frames are sampled and resized here, and the processor gets them as they are (``do_sample_frames`` and
``do_resize`` off), so the frames a sample is trained on, its token count and ``data check`` all follow one plan:
:func:`plan`. Videos are read with ``pip install 'vlmtune[video]'`` (PyAV).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ..core.sample import VideoPart
from ..models.grounding import model_image_size
from ..models.spec import FamilySpec

VIDEO_KWARGS = {"do_sample_frames": False, "do_resize": False, "cap_pixels_per_frame": False}
"""The video processor takes the frames as :func:`load_frames` gives them."""


class VideoReadError(ValueError):
    """A video file that cannot be decoded, or has too few frames (callers name the sample)."""


@dataclass(frozen=True)
class VideoSettings:
    """``data.video_fps``, ``video_max_frames``, ``video_max_pixels``, ``video_total_pixels`` (None: the video
    processor's own limit)."""

    fps: float = 2.0
    max_frames: int | None = None
    max_pixels: int | None = None
    total_pixels: int | None = None


@dataclass(frozen=True)
class VideoInfo:
    """What a video file holds: decoded frame count, frame rate and frame size."""

    frames: int
    fps: float
    width: int
    height: int


@dataclass(frozen=True)
class FramePlan:
    """Which frames of a video the model sees, at what ``(width, height)``, and the grid the processor makes."""

    info: VideoInfo
    indices: tuple[int, ...]
    size: tuple[int, int]
    grid: tuple[int, int, int]


def _av():
    try:
        import av
    except ImportError:
        raise VideoReadError("reading videos needs PyAV: pip install 'vlmtune[video]'") from None
    return av


def probe(path: Path) -> VideoInfo:
    """Frame count (every frame decoded: container headers are often wrong), frame rate and size of ``path``."""
    stat = path.stat()
    return _probe(str(path), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=4096)
def _probe(path: str, size: int, mtime: int) -> VideoInfo:
    av = _av()
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise VideoReadError("it has no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            frames = sum(1 for _ in container.decode(stream))
            width, height = stream.codec_context.width, stream.codec_context.height
    except (av.FFmpegError, EOFError) as e:
        raise VideoReadError(f"cannot decode it: {e}") from None
    if frames == 0:
        raise VideoReadError("it has no frames")
    return VideoInfo(frames, float(rate) if rate else 0.0, width, height)


def plan(processor: Any, spec: FamilySpec, settings: VideoSettings, part: VideoPart) -> FramePlan:
    """The frames of ``part`` the model sees under ``settings``, by the family's sampling rule."""
    vp = video_processor(processor)
    info = probe(part.path)
    max_frames = min(settings.max_frames or vp.max_frames, part.max_frames or vp.max_frames)
    indices = spec.video_frames(info.frames, info.fps, settings.fps, vp.min_frames, max_frames)
    if not indices:
        raise VideoReadError(f"it has {info.frames} frame(s); {spec.name} needs at least 2")
    size = vp.size
    min_pixels = size["shortest_edge"]
    max_pixels = settings.max_pixels or size["longest_edge"]
    if settings.total_pixels:
        # qwen-vl-utils: each frame gets its share of the video's budget (two frames make one temporal patch).
        share = settings.total_pixels / len(indices) * vp.temporal_patch_size
        max_pixels = max(min(max_pixels, share), int(min_pixels * 1.05))
    factor = vp.patch_size * vp.merge_size
    width, height = model_image_size((info.width, info.height), factor, min(min_pixels, max_pixels), max_pixels)
    grid_t = math.ceil(len(indices) / vp.temporal_patch_size)
    return FramePlan(info, tuple(indices), (width, height), (grid_t, height // vp.patch_size, width // vp.patch_size))


def video_processor(processor: Any) -> Any:
    """The processor's video processor, or a clear error where it has none (no torchvision)."""
    vp = getattr(processor, "video_processor", None)
    if vp is None or not hasattr(vp, "temporal_patch_size"):
        raise VideoReadError(f"{type(processor).__name__} has no video processor here: videos need torchvision "
                             "(pip install torchvision)")
    return vp


def load_frames(path: Path, frame_plan: FramePlan) -> np.ndarray:
    """The planned frames of ``path``, resized, as a ``(frames, height, width, 3)`` uint8 array."""
    from PIL import Image

    av, wanted = _av(), set(frame_plan.indices)
    picked: dict[int, np.ndarray] = {}
    try:
        with av.open(str(path)) as container:
            for i, frame in enumerate(container.decode(container.streams.video[0])):
                if i in wanted:
                    image = frame.to_image().convert("RGB")
                    if image.size != frame_plan.size:
                        image = image.resize(frame_plan.size, Image.Resampling.BICUBIC)
                    picked[i] = np.asarray(image)
                if i >= frame_plan.indices[-1]:
                    break
    except av.FFmpegError as e:
        raise VideoReadError(f"cannot decode it: {e}") from None
    if len(picked) != len(wanted):
        raise VideoReadError(f"it has fewer frames than the {frame_plan.info.frames} counted")
    return np.stack([picked[i] for i in frame_plan.indices])


def metadata(frame_plan: FramePlan) -> Any:
    """transformers' ``VideoMetadata`` of the planned frames (Qwen3-VL writes their timestamps into the text)."""
    from transformers.video_utils import VideoMetadata

    info = frame_plan.info
    return VideoMetadata(total_num_frames=info.frames, fps=info.fps or None, width=info.width, height=info.height,
                         duration=info.frames / info.fps if info.fps else None,
                         frames_indices=list(frame_plan.indices))


def expand_videos(processor: Any, text: str, plans: list[FramePlan]) -> tuple[str, int]:
    """``text`` with each video token replaced as the processor replaces it for ``plans``, and how many video
    tokens that makes: the processor's own expansion, from the plans alone (no pixels)."""
    import torch

    inputs = {"video_grid_thw": torch.tensor([p.grid for p in plans]), "video_metadata": [metadata(p) for p in plans]}
    token = processor.video_token
    pieces = text.split(token)
    if len(pieces) - 1 != len(plans):
        raise ValueError(f"{len(pieces) - 1} video tokens in the text for {len(plans)} videos")
    expanded = [processor.replace_video_token(inputs, video_idx=i) for i in range(len(plans))]
    n_video = sum(e.count(token) for e in expanded)
    return pieces[0] + "".join(e + piece for e, piece in zip(expanded, pieces[1:], strict=True)), n_video
