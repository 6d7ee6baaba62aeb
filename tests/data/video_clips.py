"""Short video clips written with PyAV for the video tests: a white square moving left or right."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np


def _llamafactory_demo() -> Path:
    """LLaMA-Factory's multimodal demo registry in the shared fixtures beside the checkout."""
    for parent in Path(__file__).resolve().parents:
        if (parent / "shared/fixtures/real").is_dir():
            return parent / "shared/fixtures/real/llamafactory_mllm_demo/data/dataset_info.json"
    return Path("/work/shared/fixtures/real/llamafactory_mllm_demo/data/dataset_info.json")


LLAMAFACTORY_DEMO = _llamafactory_demo()


def write_clip(path: Path, frames: int = 8, size: tuple[int, int] = (64, 48), fps: int = 4,
               direction: str = "right", start: int = 4, colour: tuple[int, int, int] = (255, 255, 255),
               step: int | None = None) -> Path:
    """A ``frames``-frame clip of ``size`` ``(width, height)`` in which a square moves ``direction`` by ``step``
    pixels a frame over the same path either way (leftmost at ``start``): only the frames' order tells the way."""
    width, height = size
    side = height // 3
    step = step if step is not None else max(1, (width - side - 2 * start) // max(1, frames - 1))
    container = av.open(str(path), "w")
    stream = container.add_stream("mpeg4", rate=fps)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    for i in range(frames):
        x = start + (i if direction == "right" else frames - 1 - i) * step
        pixels = np.zeros((height, width, 3), np.uint8)
        top = (height - side) // 2
        pixels[top:top + side, x:x + side] = colour
        for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path
