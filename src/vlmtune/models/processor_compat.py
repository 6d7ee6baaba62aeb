"""Processors on machines without torchvision.

transformers builds the Qwen-VL *image* processors from PIL alone, but their Processor classes also hold a
video processor that needs torchvision, and fail to construct without it. vlmtune trains on images only, so
without torchvision it uses an image-only variant of the same class: same name (so a saved folder still says
the real class in ``processor_config.json``), same chat template and token expansion, no video processor.
"""

from __future__ import annotations

from functools import cache

import transformers
from transformers.utils import is_torchvision_available


@cache
def image_only(processor_cls: type) -> type:
    """Return a subclass of ``processor_cls`` that takes only an image processor and a tokenizer."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        processor_cls.__init__(self, image_processor, tokenizer, chat_template=chat_template, **kwargs)

    def check_argument_for_proper_class(self, argument_name, argument):
        # The base check resolves class names through the video-processor registry, which is what fails.
        return type(argument)

    return type(processor_cls.__name__, (processor_cls,), {
        "__init__": __init__,
        "check_argument_for_proper_class": check_argument_for_proper_class,
        "__module__": __name__,
        "__doc__": f"{processor_cls.__name__} without its video processor (torchvision is not installed).",
    })


def processor_class(name: str) -> type:
    """The transformers processor class called ``name``, image-only when torchvision is missing."""
    cls = getattr(transformers, name)
    return cls if is_torchvision_available() else image_only(cls)
