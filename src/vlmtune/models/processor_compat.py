"""Processors on machines without torchvision.

transformers builds the Qwen-VL *image* processors from PIL alone, but their Processor classes also hold a
video processor that needs torchvision, and fail to construct without it. vlmtune trains on images only, so
without torchvision it uses an image-only variant of the same class: same name (so a saved folder still says
the real class in ``processor_config.json``), same chat template and token expansion, no video processor.
"""

from __future__ import annotations

import types
from functools import cache

import transformers
from transformers.utils import is_torchvision_available


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

    return type(processor_cls.__name__, (processor_cls,), {
        "get_attributes": get_attributes,
        "check_argument_for_proper_class": check_argument_for_proper_class,
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
