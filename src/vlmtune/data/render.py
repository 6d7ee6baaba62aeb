"""Render a sample with the processor's own chat template, and label only what the assistant says.

:class:`Renderer` writes the chat text and processes it with the sample's images; the answers' labels come from
:mod:`.labels`, token counts without pixels from :mod:`.measure`, smaller images for a sample over the token
budget from :mod:`.shrink`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError

from ..core.errors import SampleError
from ..core.sample import BoxPart, GroundingPart, PointPart, Sample
from ..models import family_names, get_family, grounding
from ..models.spec import FamilySpec
from .images import image_size, load_image
from .labels import IGNORE_INDEX, assistant_labels, check_answer_count, header_tokenizations, turn_labels
from .measure import add_special_tokens
from .measure import count_tokens as count_text_and_visual
from .shrink import shrink_to_fit
from .videos import VIDEO_KWARGS, FramePlan, VideoReadError, VideoSettings, expand_videos, load_frames, metadata, plan

TURN_CHECKS = 8
"""Samples on which per-turn labelling is checked while the data is measured, before any weights load."""


class Renderer:
    """Turns samples into model inputs (``input_ids``, ``labels``, pixel tensors, ...)."""

    def __init__(self, processor: Any, spec: FamilySpec, max_length: int | None = None,
                 image_size: grounding.Size | None = None, video: VideoSettings | None = None):
        self.processor, self.spec, self.max_length = processor, spec, max_length
        # (width, height) every image is stretched to before the processor (data.image_size); None: no resize.
        self.image_size: grounding.Size | None = tuple(image_size) if image_size else None
        self.video = video or VideoSettings()  # frame sampling of video parts (data.video_*)
        tokenizer = processor.tokenizer
        self.header_ids = header_tokenizations(tokenizer, spec.assistant_header)
        self.turn_end_id = tokenizer.convert_tokens_to_ids(spec.turn_end)
        self.prefix_ids = tokenizer.encode(spec.answer_prefix, add_special_tokens=False) if spec.answer_prefix else []
        self.special_ids = set(tokenizer.convert_tokens_to_ids(list(spec.special_tokens)))
        self._turns_checked = 0

    def text(self, sample: Sample, add_generation_prompt: bool = False) -> str:
        """The conversation as the chat template writes it; boxes and points in the family's grounding syntax."""
        ground = self.grounder(sample) if sample.has_grounding else None
        if sample.video_parts and not self.spec.supports_video:
            raise SampleError(sample.id, f"has a video ({sample.video_parts[0].path.name}), but vlmtune trains family "
                              f"{self.spec.name} on images only; videos: {', '.join(video_families())}")
        chat = sample.to_chat(ground=ground)
        end, replaced = self.spec.turn_end, self.spec.turn_end_replaces
        if replaced is not None:
            _end_answers(chat, end)
        text = self.processor.apply_chat_template(
            chat, tokenize=False, add_generation_prompt=add_generation_prompt, **self.spec.chat_template_kwargs)
        # Every end token in the text was put there above: samples holding control tokens are refused.
        return text if replaced is None else text.replace(end + replaced, end)

    def message_text(self, sample: Sample, index: int) -> str:
        """Message ``index`` of ``sample`` as the model should write it (boxes in the family's syntax)."""
        ground = self.grounder(sample) if sample.has_grounding else None
        return "".join(part["text"] for part in sample.to_chat(ground=ground)[index]["content"]
                       if part["type"] == "text")

    def model_size(self, original_size: grounding.Size, shown: grounding.Size | None = None) -> grounding.Size:
        """``(width, height)`` this renderer's image processor resizes an ``original_size`` image to.

        With ``spec.grounding.parse(text, original_size, model_size)`` it maps predicted coordinates back to
        pixels of the original image. With :attr:`image_size` set, the processor sees that size whatever the
        original: a stretch, which the conventions' per-axis scale from original to model size stays exact for.
        ``shown``: the image part's own :attr:`~vlmtune.core.sample.ImagePart.size` (a shrunk image), which takes
        precedence over :attr:`image_size` as it does when the image is processed.
        """
        limits = self.pixel_limits()
        if limits is None:
            ip = self.processor.image_processor
            raise ValueError(f"cannot read the pixel limits of {type(ip).__name__} "
                             f"(size={getattr(ip, 'size', None)!r})")
        factor, min_pixels, max_pixels = limits
        return grounding.model_image_size(shown or self.image_size or original_size, factor, min_pixels, max_pixels)

    def pixel_limits(self) -> tuple[int, int, int] | None:
        """``(factor, min_pixels, max_pixels)`` of an image processor that resizes every image to a multiple of
        ``factor`` within ``min_pixels..max_pixels`` (the Qwen-VL families), so that a smaller image gives fewer
        visual tokens; None for processors with a fixed size or tiles (LLaVA, Idefics3, Gemma 3, ...)."""
        ip = self.processor.image_processor
        size = getattr(ip, "size", None) or {}
        # transformers 5 keeps the pixel limits in size={shortest_edge, longest_edge}; older ones as attributes.
        min_pixels = size.get("shortest_edge") or getattr(ip, "min_pixels", None)
        max_pixels = size.get("longest_edge") or getattr(ip, "max_pixels", None)
        patch, merge = getattr(ip, "patch_size", None), getattr(ip, "merge_size", None)
        factor = patch * merge if patch and merge else self.spec.image_factor
        if min_pixels is None or max_pixels is None or factor is None:
            return None
        return factor, min_pixels, max_pixels

    def grounder(self, sample: Sample) -> Callable[[GroundingPart], str]:
        """Writes a box or point of ``sample`` in the family's syntax, for :meth:`Sample.to_chat`."""
        convention, parts = self.spec.grounding, sample.image_parts
        paths = [p.path for p in parts]
        if not self.spec.has_grounding:
            raise SampleError(sample.id, f"has boxes or points, but family {self.spec.name} has no grounding syntax")

        def ground(part: GroundingPart) -> str:
            if not 0 <= part.image < len(paths):
                raise SampleError(sample.id, f"a box or point refers to image {part.image}, but the sample has "
                                  f"{len(paths)} image(s)")
            try:
                original = image_size(paths[part.image])
            except (OSError, UnidentifiedImageError) as e:
                raise SampleError(sample.id, f"cannot read image {paths[part.image]}: {e}") from None
            # A grid convention needs no model size (tiling processors have none to give).
            model = original if convention.grid is not None else self.model_size(original, parts[part.image].size)
            try:
                return convention.format(part, original, model)
            except ValueError as e:
                raise SampleError(sample.id, str(e)) from None

        return ground

    def encode(self, sample: Sample) -> dict[str, torch.Tensor]:
        """Inputs and labels of one training sample (1-D sequences, no batch dimension)."""
        features = self.process(sample, self.text(sample))
        input_ids = features["input_ids"]
        if self.max_length is not None and len(input_ids) > self.max_length:
            types = features.get("mm_token_type_ids", features.get("token_type_ids", torch.zeros(1)))
            n_image = int(sum(types != 0))
            raise SampleError(sample.id, (
                f"{len(input_ids)} tokens ({n_image} of them visual) exceed data.max_length={self.max_length}; "
                "truncating would cut the answer or the image tokens. Raise data.max_length or lower "
                "data.max_pixels."))
        if self.spec.assistant_header is not None:
            features["labels"] = assistant_labels(input_ids, self.header_ids, self.turn_end_id, self.prefix_ids)
            check_answer_count(self, sample, input_ids)
        else:
            features["labels"] = turn_labels(self, sample, input_ids)
        if not bool((features["labels"] != IGNORE_INDEX).any()):
            raise SampleError(sample.id, "no assistant tokens found in the rendered conversation")
        return features

    def encode_prompt(self, sample: Sample) -> dict[str, torch.Tensor]:
        """Inputs for generating the next assistant turn of ``sample`` (which ends before it)."""
        return self.process(sample, self.text(sample, add_generation_prompt=True))

    def count_tokens(self, sample: Sample, image_sizes: list[tuple[int, int]]) -> tuple[int, int]:
        """``(text, visual)`` token counts of the rendered sample, from image sizes ``(w, h)`` alone.

        Equal to ``len(encode(sample)["input_ids"])`` split in two, without decoding any pixels, so a whole
        dataset can be measured before training (:func:`.measure.count_tokens`). Each image counts at the size
        the processor is given: its part's ``size`` where set (a shrunk image), else :attr:`image_size` where set,
        else ``image_sizes`` (its file's size).
        """
        self.check_control_tokens(sample)
        image_sizes = [part.size or self.image_size or size
                       for part, size in zip(sample.image_parts, image_sizes, strict=True)]
        for part, size in zip(sample.image_parts, image_sizes, strict=True):
            self.check_aspect_ratio(sample, part.path, size)
        text = self.text(sample)
        plans = self.frame_plans(sample)
        if self.spec.assistant_header is None and self._turns_checked < TURN_CHECKS:
            # Data is measured before any weights load: a template whose turns cannot be told apart stops it here.
            self._turns_checked += 1
            turn_labels(self, sample, self.process(sample, text)["input_ids"])
        if not plans:
            return count_text_and_visual(self.processor, self.spec, text, image_sizes)
        text, n_video = expand_videos(self.processor, text, plans)
        n_text, n_visual = count_text_and_visual(self.processor, self.spec, text, image_sizes)
        return n_text - n_video, n_visual + n_video

    def frame_plans(self, sample: Sample) -> list[FramePlan]:
        """The frames the model sees of each video of ``sample`` (:func:`.videos.plan`)."""
        plans = []
        for part in sample.video_parts:
            try:
                plans.append(plan(self.processor, self.spec, self.video, part))
            except (OSError, VideoReadError) as e:
                raise SampleError(sample.id, f"cannot use video {part.path}: {e}") from None
        return plans
    def shrink_to_fit(self, sample: Sample, image_sizes: list[grounding.Size]) -> tuple[Sample, tuple[int, int]]:
        """``sample`` with its images shown smaller so that it fits :attr:`max_length`, and its ``(text, visual)``
        token counts so; ``image_sizes`` are its image files' sizes, as for :meth:`count_tokens`, and the sample
        as it is must not fit. Raises :class:`~.shrink.CannotShrink` where no size fits.

        All its images are scaled by one factor (aspect ratio kept, sides rounded to whole pixels), except that none
        goes below the processor's ``min_pixels``: the processor would scale it back up, for no fewer tokens. The
        factor is the largest that fits to one pixel of the longer side of the sample's largest image: a binary
        search with :meth:`count_tokens` (the real encoding's length) that ends on a side that fits where one
        pixel more does not. Only processors that resize within a pixel range (:meth:`pixel_limits`) can shrink.
        """
        return shrink_to_fit(self, sample, image_sizes)

    def process(self, sample: Sample, text: str) -> dict[str, torch.Tensor]:
        """The processor's output for the chat ``text`` of ``sample`` with its images (1-D sequences)."""
        self.check_control_tokens(sample)
        images = self.shown_images(sample)
        videos: dict = {}
        if sample.video_parts:
            plans = self.frame_plans(sample)
            try:
                frames = [load_frames(part.path, p) for part, p in zip(sample.video_parts, plans, strict=True)]
            except (OSError, VideoReadError) as e:
                raise SampleError(sample.id, f"cannot use a video: {e}") from None
            videos = {"videos": frames, "video_metadata": [metadata(p) for p in plans], "videos_kwargs": VIDEO_KWARGS}
        # Images nested per text, as apply_chat_template passes them: a flat list reads as one image per sample
        # to processors that count a sample's images (LLaVA-OneVision tiles only a sample's only image).
        batch = self.processor(text=[text], images=[images] if images else None, return_tensors="pt",
                               add_special_tokens=add_special_tokens(self.processor.tokenizer, text), **videos)
        return {k: (v[0] if k in SEQUENCE_KEYS else v) for k, v in batch.items()}

    def shown_images(self, sample: Sample) -> list[Image.Image]:
        """The images of ``sample`` as the processor is given them (training, evaluation and GRPO's prompts)."""
        images = []
        for part in sample.image_parts:
            try:
                image = load_image(part.path)
            except (OSError, UnidentifiedImageError) as e:
                raise SampleError(sample.id, f"cannot read image {part.path}: {e}") from None
            # Stretched to exactly image_size, as qwen-vl-utils resizes to resized_width x resized_height; a part's
            # own size (a shrunk image) comes first.
            size = part.size or self.image_size
            images.append(image if size is None or image.size == tuple(size)
                          else image.resize(tuple(size), Image.Resampling.BICUBIC))
            self.check_aspect_ratio(sample, part.path, images[-1].size)
        return images

    def check_aspect_ratio(self, sample: Sample, path, size: grounding.Size) -> None:
        """Raise :class:`SampleError` where an image of ``size`` is too elongated for the image processor."""
        # The family's image processor raises on such an image (Qwen-VL: over 200:1) deep in a batch: name it here.
        limit, (width, height) = self.spec.max_aspect_ratio, size
        if limit is not None and max(width, height) > limit * min(width, height):
            raise SampleError(sample.id, (
                f"image {path} is {width}x{height} pixels, an aspect ratio of "
                f"{max(width, height) / max(1, min(width, height)):.0f}:1; {self.spec.name}'s image processor takes "
                f"at most {limit:g}:1. Crop or pad the image"))

    def check_control_tokens(self, sample: Sample) -> None:
        """Raise :class:`SampleError` where a text of ``sample`` cannot go into the chat template
        (:meth:`control_token_problem`)."""
        for i, message in enumerate(sample.messages):
            for field, text in _text_fields(message, i):
                problem = self.control_token_problem(text, role=message.role)
                if problem:
                    raise SampleError(sample.id, f"{field} {problem}")

    def control_token_problem(self, text: str | None, role: str = "user") -> str | None:
        """Why ``text``, written in a ``role`` turn, cannot go into the chat template (it holds a control token of
        this model, or, outside an assistant turn, its plain-text assistant header); None where it can."""
        if not text:
            return None
        # The tokenizer reads "<|im_end|>" typed in a message as the real control token: the turn would end
        # early and the label mask would follow the injected structure instead of the data's.
        for token in self.spec.special_tokens:
            if token in text and token not in self.spec.text_tokens:
                return (f"contains the special token {token!r}, which the model would read as a control token; "
                        "remove it from the text")
        # A plain-text header (LLaVA-1.5's "ASSISTANT:") typed in a prompt would open an answer there: the rest of
        # the prompt and the real header would be trained on as the answer.
        header = (self.spec.assistant_header or "").strip()  # None: no header known to look for
        if header and role != "assistant" and header in text:
            return (f"({role}) contains {header!r}, the assistant header of this model's chat format: its answer "
                    "would start there; reword it")
        return None


def video_families() -> list[str]:
    """The registered families that take videos, by name."""
    return [name for name in family_names() if get_family(name).supports_video]


def _text_fields(message, index: int):
    """``(field, text)`` of every text of message ``index`` that reaches the chat template: its text (joined, as
    the template sees it) and each box or point label."""
    yield f"messages[{index}]", message.text
    for j, part in enumerate(message.content):
        if isinstance(part, BoxPart | PointPart) and part.label:
            yield f"messages[{index}].content[{j}].label", part.label


SEQUENCE_KEYS = ("input_ids", "attention_mask", "labels", "mm_token_type_ids", "token_type_ids")


def _end_answers(chat: list[dict], turn_end: str) -> None:
    """Append ``turn_end`` to the last text of each assistant message of ``chat``, in place."""
    for message in chat:
        texts = [part for part in message["content"] if part["type"] == "text"]
        if message["role"] == "assistant" and texts:
            texts[-1]["text"] += turn_end
