"""Processors on machines without torchvision.

transformers builds the Qwen-VL *image* processors from PIL alone, but their Processor classes also hold a
video processor that needs torchvision, and fail to construct without it. vlmtune trains on images only, so
without torchvision it uses an image-only variant of the same class: same name (so a saved folder still says
the real class in ``processor_config.json``), same chat template and token expansion, no video processor.

A folder vlmtune writes must still load with plain ``AutoProcessor`` where torchvision is installed, which needs the
video processor's settings (the ``video_processor`` section of ``processor_config.json``). So the image-only variant
carries them as plain settings, read from the folder it was loaded from, and writes them back when saved: with or
without torchvision, the folder holds the same sections an official checkpoint of the family holds.
"""

from __future__ import annotations

import json
import logging
import types
from collections.abc import Mapping
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import transformers
from transformers.utils import is_torchvision_available

log = logging.getLogger("vlmtune")

VIDEO_PROCESSOR = "video_processor"
# Video processors that turn the min_pixels / max_pixels given to from_pretrained into their size's shortest / longest
# edge (transformers 5.24); the others (Qwen3-VL's) ignore them.
_SIZE_FROM_PIXEL_LIMITS = ("Qwen2VLVideoProcessor",)


@cache
def image_only(processor_cls: type) -> type:
    """Return a subclass of ``processor_cls`` that takes only an image processor and a tokenizer."""

    # The base __init__ is kept (video_processor defaults to None): save_pretrained and from_pretrained read the
    # processor's own arguments (e.g. InternVL's image_seq_length) from its signature and code object.
    @classmethod
    def get_attributes(cls) -> list[str]:
        return [a for a in processor_cls.get_attributes() if a != "video_processor"]

    def check_argument_for_proper_class(self, argument_name, argument):
        # The base check resolves class names through the video-processor registry, which is what fails.
        return type(argument)

    def to_dict(self) -> dict[str, Any]:
        # processor_config.json as the real class writes it: the video processor's settings included.
        output = processor_cls.to_dict(self)
        if self.video_processor_settings is not None:
            output[VIDEO_PROCESSOR] = dict(self.video_processor_settings)
        return output

    return type(processor_cls.__name__, (processor_cls,), {
        "get_attributes": get_attributes,
        "check_argument_for_proper_class": check_argument_for_proper_class,
        "to_dict": to_dict,
        "video_processor_settings": None,
        "__module__": __name__,
        "__doc__": f"{processor_cls.__name__} without its video processor (torchvision is not installed).",
        **_video_processor_optional(processor_cls.__init__),
    })


class _NoVideoProcessor:
    """Stands in for a video processor the processor class requires: SmolVLM's apply_chat_template reads its frame
    sampling defaults, which are None (no video is ever sampled)."""

    num_frames = None
    fps = None


def _video_processor_optional(init) -> dict:
    """Class attributes that let a processor whose ``__init__`` requires a ``video_processor`` (SmolVLM) go without:
    the same function with None as that argument's default (same code object, so the same accepted arguments), and
    a stand-in video processor. Nothing for the processors where it is already optional."""
    code, defaults = init.__code__, init.__defaults__ or ()
    names = code.co_varnames[:code.co_argcount]
    first_default = code.co_argcount - len(defaults)
    if "video_processor" not in names or names.index("video_processor") >= first_default:
        return {}
    # Defaults belong to the trailing positional arguments: each one from video_processor on needs one.
    defaults = (None,) * (first_default - names.index("video_processor")) + defaults
    optional = types.FunctionType(code, init.__globals__, init.__name__, defaults, init.__closure__)
    optional.__kwdefaults__, optional.__qualname__ = init.__kwdefaults__, init.__qualname__
    return {"__init__": optional, "video_processor": _NoVideoProcessor()}


def processor_class(name: str) -> type:
    """The transformers processor class called ``name``, image-only when torchvision is missing."""
    cls = getattr(transformers, name)
    return cls if is_torchvision_available() else image_only(cls)


def has_video_processor(name: str) -> bool:
    """Whether the transformers processor class called ``name`` holds a video processor."""
    return VIDEO_PROCESSOR in getattr(transformers, name).get_attributes()


@cache
def _recorded_defaults() -> dict[str, dict[str, Any]]:
    # What each video-processor class writes when built with no arguments, recorded with torchvision installed
    # (tests/export/test_plain_transformers.py checks it against the classes): without torchvision some of these
    # classes cannot even be imported.
    text = resources.files("vlmtune.models").joinpath("video_processors.json").read_text()
    return json.loads(text)


def video_processor_defaults(name: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The settings the video-processor class ``name`` saves when built with ``overrides`` as its only arguments."""
    recorded = _recorded_defaults()
    if name not in recorded:
        raise KeyError(f"no recorded defaults for video processor {name!r}; known: {', '.join(sorted(recorded))}")
    settings = json.loads(json.dumps(recorded[name]))
    settings.update(json.loads(json.dumps(dict(overrides or {}))))
    return settings


def new_processor(name: str, video_processor: Mapping[str, Any] | None = None, **kwargs: Any) -> Any:
    """Build the processor class ``name`` from its parts; ``video_processor``: the settings of its video processor,
    built as the real class with torchvision, carried as settings without it (written when the processor is saved)."""
    cls = getattr(transformers, name)
    if video_processor is None or VIDEO_PROCESSOR not in cls.get_attributes():
        return processor_class(name)(**kwargs)
    if is_torchvision_available():
        video_cls = getattr(transformers, video_processor["video_processor_type"])
        return cls(video_processor=video_cls(**_init_arguments(video_processor)), **kwargs)
    processor = image_only(cls)(**kwargs)
    processor.video_processor_settings = dict(video_processor)
    return processor


def _init_arguments(settings: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in settings.items() if k != "video_processor_type"}


def carry_video_settings(processor: Any, model: str | Path, video_processor_class: str = "",
                         min_pixels: int | None = None, max_pixels: int | None = None) -> Any:
    """Give an image-only ``processor`` loaded from ``model`` the video-processor settings found there, as
    transformers would read them (``processor_config.json``'s section, else ``video_preprocessor_config.json``, else
    ``preprocessor_config.json``); where ``model`` has none, the defaults of ``video_processor_class``, so that a folder
    saved from it loads with plain ``AutoProcessor``. ``min_pixels`` / ``max_pixels`` (given to ``from_pretrained``)
    reach the video settings as transformers passes them to the real video processor. A processor with a real video
    processor is returned as it is."""
    if getattr(processor, "video_processor_settings", False) is False:
        return processor  # the real class (torchvision installed), or one without a video processor
    if not has_video_processor(type(processor).__name__):
        return processor
    from transformers.video_processing_utils import BaseVideoProcessor

    try:
        settings, _ = BaseVideoProcessor.get_video_processor_dict(str(model))
    except OSError:
        settings = None
    if settings is None:
        if not video_processor_class:
            return processor
        log.warning("%s has no video processor settings; a folder saved from it gets %s's defaults", model,
                    video_processor_class)
        settings = video_processor_defaults(video_processor_class)
    # A legacy image-processor file read as the video processor's: the type names the image class.
    settings = {k: v for k, v in settings.items() if k not in ("image_processor_type", "processor_class")}
    if "video_processor_type" not in settings and video_processor_class:
        settings["video_processor_type"] = video_processor_class
    if settings.get("video_processor_type") in _SIZE_FROM_PIXEL_LIMITS:
        limits = (("min_pixels", "shortest_edge", min_pixels), ("max_pixels", "longest_edge", max_pixels))
        for key, edge, value in limits:
            if value is None:
                continue
            if key in settings:  # a legacy file's own limit, which the class would apply over its size
                settings[key] = value
            if isinstance(settings.get("size"), dict):
                settings["size"] = {**settings["size"], edge: value}
    processor.video_processor_settings = settings
    return processor
