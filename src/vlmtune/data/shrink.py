"""Show a sample's images smaller until it fits the token budget: the search behind ``data.on_too_long: shrink``."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ..core.errors import SampleError
from ..core.sample import Sample

if TYPE_CHECKING:
    from ..models import grounding
    from .render import Renderer


class CannotShrink(SampleError):
    """No smaller size of a sample's images brings it within ``max_length`` (``problem`` says why)."""


def shrink_to_fit(renderer: Renderer, sample: Sample,
                  image_sizes: list[grounding.Size]) -> tuple[Sample, tuple[int, int]]:
    """``sample`` with its images shown smaller so that it fits the renderer's ``max_length``, and its
    ``(text, visual)`` token counts so (see :meth:`Renderer.shrink_to_fit`)."""
    bases = [part.size or renderer.image_size or size
             for part, size in zip(sample.image_parts, image_sizes, strict=True)]
    if sample.video_parts:
        return fewer_frames(renderer, sample, image_sizes)
    limits = renderer.pixel_limits()
    if not bases:
        raise CannotShrink(sample.id, "it has no image to shrink")
    if limits is None:
        raise CannotShrink(sample.id, (
            f"{renderer.spec.name}'s image processor ({type(renderer.processor.image_processor).__name__}) shows an "
            "image at a fixed size or in tiles, not within a pixel range, so a smaller image does not get "
            "fewer visual tokens"))
    min_pixels, max_length = limits[1], renderer.max_length
    # The scale at which each image reaches min_pixels (1: it is there already).
    floors = [min(1.0, math.sqrt(min_pixels / (w * h))) for w, h in bases]
    longest = max(max(size) for size in bases)

    def at(side: int) -> Sample:
        sizes = []
        for (w, h), floor in zip(bases, floors, strict=True):
            scale = max(side / longest, floor)
            sizes.append((max(1, round(w * scale)), max(1, round(h * scale))))
        return sample.with_image_sizes(sizes)

    lo = min(longest, max(1, math.floor(min(floors) * longest)))  # every image at its min_pixels size
    counts = renderer.count_tokens(at(lo), image_sizes)
    if sum(counts) > max_length:
        text, visual = counts
        raise CannotShrink(sample.id, f"its text alone is {text} tokens" if text > max_length else (
            f"it still has {text + visual} tokens ({visual} visual) with its images at the processor's smallest "
            f"size (min_pixels={min_pixels})"))
    hi = longest - 1  # invariant: side lo fits, side hi + 1 does not (longest: the sample as it is)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        mid_counts = renderer.count_tokens(at(mid), image_sizes)
        if sum(mid_counts) <= max_length:
            lo, counts = mid, mid_counts
        else:
            hi = mid - 1
    return at(lo), counts


def fewer_frames(renderer: Renderer, sample: Sample,
                 image_sizes: list[grounding.Size]) -> tuple[Sample, tuple[int, int]]:
    """``sample`` with fewer frames sampled from its videos (the same at most for each: see
    :attr:`~vlmtune.core.sample.VideoPart.max_frames`), the most that fit the renderer's ``max_length``, and its
    ``(text, visual)`` token counts so. Its images are left as they are."""
    most = max(len(p.indices) for p in renderer.frame_plans(sample))
    lo, max_length = 2, renderer.max_length
    counts = renderer.count_tokens(sample.with_video_frames(lo), image_sizes)
    if sum(counts) > max_length:
        text, visual = counts
        raise CannotShrink(sample.id, f"its text alone is {text} tokens" if text > max_length else (
            f"it still has {text + visual} tokens ({visual} visual) with {lo} frames of each video; lower "
            "data.video_max_pixels"))
    hi = most - 1  # invariant: lo frames fit, hi + 1 do not (most: the sample as it is)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        mid_counts = renderer.count_tokens(sample.with_video_frames(mid), image_sizes)
        if sum(mid_counts) <= max_length:
            lo, counts = mid, mid_counts
        else:
            hi = mid - 1
    # The frames sampled at that limit (the family may round it down), so the sample says what the model sees.
    lo = max(len(p.indices) for p in renderer.frame_plans(sample.with_video_frames(lo)))
    return sample.with_video_frames(lo), counts
