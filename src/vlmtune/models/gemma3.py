"""Gemma 3 (4B, 12B, 27B): SigLIP vision tower, average-pooled to 256 soft tokens an image, Gemma 3 decoder.

Sources: the model card and config.json / tokenizer_config.json / preprocessor_config.json of
google/gemma-3-4b-it; transformers 5.24 ``models/gemma3``; the chat template as shipped by the ``google/gemma-3-*``
checkpoints (a copy of the ``trl`` package's ``trl/chat_templates/gemma3.jinja``).

Template. Gemma 3 has no system role: the template writes ``<bos>`` itself and folds a system message into the
first user turn, as its text followed by a blank line. An assistant turn is
``<start_of_turn>model\\n{answer}<end_of_turn>\\n``. Each image is one ``<start_of_image>`` in the template
text, which the processor expands to ``\\n\\n<start_of_image>`` + 256 x ``<image_soft_token>`` +
``<end_of_image>\\n\\n``.

Pan-and-scan. Off by default: in transformers 5.24 Gemma3Processor passes its ``images_kwargs``
(``do_pan_and_scan=False``) to the image processor on every call, over whatever preprocessor_config.json says. With
it on in the processor's ``images_kwargs``, an elongated image also gets up to ``pan_and_scan_max_num_crops``
crops, each written as another framed run of soft tokens; rendering, labels and token counts follow it (the
processor does the cropping, ``image_placeholder_text`` reproduces its text). vlmtune has no setting that turns
it on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from .registry import register_family
from .spec import DECODER_LORA_TARGETS, VISION_TOWER_COMPONENTS, FamilySpec

# In the published vocabulary's order (pad 0, eos 1, bos 2, unk 3, mask 4; the rest far above).
_SPECIAL_TOKENS = (
    "<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>",
    "<start_of_image>", "<end_of_image>", "<image_soft_token>",
)
# Gemma3Processor reads its image tokens from these tokenizer attributes (tokenizer_config.json).
_NAMED_TOKENS = {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"}

# Tiny model: 64-px images of 8-px patches -> 8 x 8 patches, average-pooled 2 x 2 to 4 x 4 = 16 soft tokens
# (the real one pools 64 x 64 patches of a 896-px image 4 x 4 to 256). Two decoder layers, one sliding-window and
# one global, as the real models interleave them 5 : 1.
_TINY_IMAGE, _TINY_PATCH, _TINY_TOKENS = 64, 8, 16


def _tiny_gemma3(ids: Mapping[str, int]):
    from transformers import Gemma3Config

    # A large initializer_range makes the random-init model learn a small task in tens of CPU steps.
    return Gemma3Config(
        text_config=dict(
            vocab_size=ids["__vocab_size__"], hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16,
            layer_types=["sliding_attention", "full_attention"], sliding_window=512, max_position_embeddings=4096,
            # The real models tie lm_head to the embeddings; untied here, like every tiny model, so lm_head has
            # its own row in the parameter table.
            initializer_range=0.2, tie_word_embeddings=False, bos_token_id=ids["<bos>"], eos_token_id=ids["<eos>"],
            pad_token_id=ids["<pad>"]),
        vision_config=dict(
            model_type="siglip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, image_size=_TINY_IMAGE, patch_size=_TINY_PATCH, vision_use_head=False,
            layer_norm_eps=1e-6),
        mm_tokens_per_image=_TINY_TOKENS, boi_token_index=ids["<start_of_image>"],
        eoi_token_index=ids["<end_of_image>"], image_token_index=ids["<image_soft_token>"],
        initializer_range=0.2, tie_word_embeddings=False,
    )


def _tiny_weights(model: Any) -> None:
    # transformers zero-initialises the projector (checkpoints overwrite it); a zero projector would hide the
    # images from the tiny model, whose projector stays frozen under LoRA.
    weight = model.model.multi_modal_projector.mm_input_projection_weight
    with torch.no_grad():
        weight.normal_(0.0, 0.2)


def _num_crops(processor: Any, size: tuple[int, int]) -> int:
    """Pan-and-scan crops the processor cuts from an image of ``size`` (width, height); 0 when it is off."""
    # The processor hands its images_kwargs to the image processor on every call, over the image processor's own
    # settings, so these are the ones in force.
    setting = {k: v for k, v in processor.images_kwargs.items() if k.startswith("pan_and_scan_")}
    if not processor.images_kwargs.get("do_pan_and_scan"):
        return 0
    width, height = size
    # The image processor's own rule, run on a stand-in of the right shape (no pixels are allocated). The PIL
    # backend (no torchvision) calls it pan_and_scan, the torchvision one pan_and_scan_batched; both only slice.
    stand_in = np.broadcast_to(np.uint8(0), (3, height, width))
    image_processor = processor.image_processor
    rule = getattr(image_processor, "pan_and_scan", None) or image_processor.pan_and_scan_batched
    return len(rule(stand_in, **setting))


def _image_text(processor: Any, size: tuple[int, int]) -> str:
    """Text Gemma3Processor writes in place of the ``<start_of_image>`` of an image of ``size`` (width, height)."""
    return processor.replace_image_token({"num_crops": [_num_crops(processor, size)]}, 0)


GEMMA3 = register_family(FamilySpec(
    name="gemma3", model_class="Gemma3ForConditionalGeneration", processor_class="Gemma3Processor",
    chat_template="gemma3.jinja",
    template_source="google/gemma-3-4b-it chat_template (trl 1.16 trl/chat_templates/gemma3.jinja)",
    special_tokens=_SPECIAL_TOKENS, named_special_tokens=_NAMED_TOKENS, tokenizer_class="GemmaTokenizer",
    # The published tokenizer adds <bos> itself (add_bos_token) and is a SentencePiece conversion.
    tiny_tokenizer={"bos_token": "<bos>", "unk_token": "<unk>", "mask_token": "<mask>", "add_bos_token": True},
    sentencepiece_tokenizer=True,
    image_processor_class="Gemma3ImageProcessor", eos_token="<eos>", pad_token="<pad>",
    assistant_header="<start_of_turn>model\n", turn_end="<end_of_turn>",
    components=VISION_TOWER_COMPONENTS,
    language_lora_targets=DECODER_LORA_TARGETS,
    image_placeholder_text=_image_text,
    tiny_config=_tiny_gemma3, tiny_weights=_tiny_weights,
    # The real processor: 896 x 896, bilinear, mean = std = 0.5 (the class defaults but the size).
    tiny_image_processor={"size": {"height": _TINY_IMAGE, "width": _TINY_IMAGE}},
    tiny_processor={"image_seq_length": _TINY_TOKENS},
    source="https://huggingface.co/google/gemma-3-4b-it",
))
