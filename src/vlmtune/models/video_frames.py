"""Which frames of a video a family samples: the frame counts and indices of each family's reference code.

Plain arithmetic on frame counts, so that data checks, token counts and training agree on the frames without
decoding a video twice.
"""

from __future__ import annotations

import math


def qwen2_frame_indices(total: int, video_fps: float, fps: float, min_frames: int, max_frames: int) -> list[int]:
    """Frames Qwen2-VL and Qwen2.5-VL see: qwen-vl-utils' ``smart_nframes`` (``fps`` frames a second, between
    ``min_frames`` and ``max_frames``, a multiple of the temporal patch of 2) spread evenly over the video.
    Empty where the video has fewer than 2 frames."""
    factor = 2
    low = math.ceil(min_frames / factor) * factor
    high = math.floor(min(max_frames, total) / factor) * factor
    wanted = total / video_fps * fps if video_fps > 0 else total
    n = math.floor(min(max(wanted, low), high, total) / factor) * factor
    return _spread(total, n) if n >= factor else []


def qwen3_frame_indices(total: int, video_fps: float, fps: float, min_frames: int, max_frames: int) -> list[int]:
    """Frames Qwen3-VL sees: its video processor's ``sample_frames`` (``fps`` frames a second, between
    ``min_frames`` and ``max_frames``, no more than the video has; the processor repeats the last frame to fill a
    temporal patch). Empty for a video without frames."""
    wanted = int(total / video_fps * fps) if video_fps > 0 else total
    n = min(max(wanted, min_frames), max_frames, total)
    return _spread(total, n) if n >= 1 else []


def _spread(total: int, n: int) -> list[int]:
    """``n`` indices evenly spread from the first frame to the last (``np.linspace(...).round()``)."""
    if n == 1:
        return [0]
    step = (total - 1) / (n - 1)
    # Round half to even, as numpy does.
    return [int(round(i * step)) for i in range(n)]
