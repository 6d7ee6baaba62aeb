"""Qwen2-VL, Qwen2.5-VL and Qwen3-VL.

Sources: the model cards and config.json of Qwen/Qwen2-VL-7B-Instruct, Qwen/Qwen2.5-VL-7B-Instruct and
Qwen/Qwen3-VL-8B-Instruct; chat templates as shipped by those checkpoints (copies from the ``trl`` package's
``trl/chat_templates/``: ``qwen2_5_vl.jinja``, byte-identical for Qwen2-VL, and ``qwen3_vl.jinja``).
"""

from __future__ import annotations

from collections.abc import Mapping

from .grounding import GroundingConvention
from .registry import register_family
from .spec import DECODER_LORA_TARGETS, FamilySpec
from .video_frames import qwen2_frame_indices, qwen3_frame_indices

_QWEN2_SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
)
_QWEN3_SPECIAL_TOKENS = _QWEN2_SPECIAL_TOKENS + (
    "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<think>", "</think>",
)

# Tiny models: hidden 64, 2 layers. A large initializer_range makes a random-init model learn a small
# visual task in tens of CPU steps (with the usual 0.02 it barely moves in hundreds).
_TINY_TEXT = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    max_position_embeddings=4096, initializer_range=0.2, tie_word_embeddings=False,
)
_HEAD_DIM = 16  # hidden_size / num_attention_heads; mrope_section must sum to head_dim / 2


def _token_ids(ids: Mapping[str, int]) -> dict[str, int]:
    return dict(
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )


def _text(ids: Mapping[str, int], **extra) -> dict:
    return dict(
        _TINY_TEXT, vocab_size=ids["__vocab_size__"], bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"], **extra,
    )


def _tiny_qwen2_vl(ids: Mapping[str, int]):
    from transformers import Qwen2VLConfig

    return Qwen2VLConfig(
        text_config=_text(ids, rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3]}),
        vision_config=dict(depth=2, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2, initializer_range=0.2),
        tie_word_embeddings=False, **_token_ids(ids),
    )


def _tiny_qwen2_5_vl(ids: Mapping[str, int]):
    from transformers import Qwen2_5_VLConfig

    return Qwen2_5_VLConfig(
        text_config=_text(ids, rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3]}),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                           fullatt_block_indexes=[1], initializer_range=0.2),
        tie_word_embeddings=False, **_token_ids(ids),
    )


def _tiny_qwen3_vl(ids: Mapping[str, int]):
    from transformers import Qwen3VLConfig

    return Qwen3VLConfig(
        text_config=_text(ids, head_dim=_HEAD_DIM, rope_parameters={
            "rope_type": "default", "rope_theta": 5000000.0, "mrope_section": [2, 3, 3], "mrope_interleaved": True}),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                           patch_size=16, spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=64,
                           deepstack_visual_indexes=[1], initializer_range=0.2),
        tie_word_embeddings=False, **_token_ids(ids),
    )


# Grounding. The three families differ in syntax and coordinate space; see GroundingConvention.source.
_QWEN2_VL_GROUNDING = GroundingConvention(syntax="ref_box_tokens", grid=1000, source=(
    "Qwen2-VL: special tokens around integers on a 0-1000 grid, round(x / w * 1000) clamped to 0..1000 "
    "(QwenLM/Qwen2.5-VL qwen-vl-finetune/tools/process_bbox.ipynb convert_to_qwen2vl_format; ms-swift "
    "docs/source_en/Customization/Custom-dataset.md, grounding example: boxes '<|object_ref_start|>a dog"
    "<|object_ref_end|><|box_start|>(221,423),(569,886)<|box_end|>', a click point '<|box_start|>(246,113)"
    "<|box_end|>', i.e. one pair, no ref)."))
_QWEN2_5_VL_GROUNDING = GroundingConvention(syntax="json", grid=None, source=(
    "Qwen2.5-VL: cookbook JSON with absolute integer pixels of the image after smart_resize "
    "(QwenLM/Qwen2.5-VL cookbooks/spatial_understanding.ipynb, which maps back with bbox_2d / input_width * width; "
    "QwenLM/Qwen3-VL issue #676, maintainer: 'absolute coordinates based on the actual input size of the image "
    "... the size after processor'; process_bbox.ipynb convert_to_qwen25vl_format scales by resized/original)."))
_QWEN3_VL_GROUNDING = GroundingConvention(syntax="json", grid=1000, source=(
    "Qwen3-VL: cookbook JSON on a relative 0-1000 grid (QwenLM/Qwen3-VL README: 'default coordinate system has "
    "been changed from the absolute coordinates used in Qwen2.5-VL to relative coordinates ranging from 0 to "
    "1000'; cookbooks/2d_grounding.ipynb maps back with bbox_2d / 1000 * width)."))

def _tiny_image_processor(patch: int) -> dict:
    # Small pixel limits: a demo image becomes a few dozen visual tokens.
    factor = patch * 2
    return {"patch_size": patch, "merge_size": 2, "temporal_patch_size": 2, "min_pixels": factor ** 2,
            "max_pixels": (8 * factor) ** 2}


_COMPONENTS = {
    "vision": ("model.visual",),
    "projector": ("model.visual.merger",),
    "language": ("model.language_model",),
    "lm_head": ("lm_head",),
}
_LANGUAGE_TARGETS = DECODER_LORA_TARGETS
_QWEN2_COMMON = dict(
    chat_template="qwen2_vl.jinja",
    template_source="Qwen/Qwen2.5-VL-7B-Instruct chat_template (trl 1.16 trl/chat_templates/qwen2_5_vl.jinja)",
    special_tokens=_QWEN2_SPECIAL_TOKENS, tokenizer_class="Qwen2Tokenizer",
    image_processor_class="Qwen2VLImageProcessor", video_processor_class="Qwen2VLVideoProcessor",
    eos_token="<|im_end|>", pad_token="<|endoftext|>",
    assistant_header="<|im_start|>assistant\n", turn_end="<|im_end|>",
    components=_COMPONENTS, language_lora_targets=_LANGUAGE_TARGETS,
    image_factor=28, min_pixels=3136, max_pixels=12845056, max_aspect_ratio=200,
    tiny_image_processor=_tiny_image_processor(14), packing=True, video_frames=qwen2_frame_indices,
)

QWEN2_VL = register_family(FamilySpec(
    name="qwen2_vl", model_class="Qwen2VLForConditionalGeneration", processor_class="Qwen2VLProcessor",
    tiny_config=_tiny_qwen2_vl, grounding=_QWEN2_VL_GROUNDING,
    source="https://huggingface.co/Qwen/Qwen2-VL-7B-Instruct", **_QWEN2_COMMON,
))
QWEN2_5_VL = register_family(FamilySpec(
    name="qwen2_5_vl", model_class="Qwen2_5_VLForConditionalGeneration", processor_class="Qwen2_5_VLProcessor",
    tiny_config=_tiny_qwen2_5_vl, grounding=_QWEN2_5_VL_GROUNDING,
    source="https://huggingface.co/Qwen/Qwen2.5-VL-7B-Instruct", **_QWEN2_COMMON,
))
QWEN3_VL = register_family(FamilySpec(
    name="qwen3_vl", model_class="Qwen3VLForConditionalGeneration", processor_class="Qwen3VLProcessor",
    chat_template="qwen3_vl.jinja",
    template_source="Qwen/Qwen3-VL-8B-Instruct chat_template (trl 1.16 trl/chat_templates/qwen3_vl.jinja)",
    special_tokens=_QWEN3_SPECIAL_TOKENS, tokenizer_class="Qwen2Tokenizer",
    image_processor_class="Qwen2VLImageProcessor", video_processor_class="Qwen3VLVideoProcessor",
    eos_token="<|im_end|>", pad_token="<|endoftext|>",
    assistant_header="<|im_start|>assistant\n", turn_end="<|im_end|>",
    components={**_COMPONENTS, "projector": ("model.visual.merger", "model.visual.deepstack_merger_list")},
    language_lora_targets=_LANGUAGE_TARGETS,
    image_factor=32, min_pixels=65536, max_pixels=16777216, max_aspect_ratio=200,
    tiny_config=_tiny_qwen3_vl, grounding=_QWEN3_VL_GROUNDING,
    tiny_image_processor=_tiny_image_processor(16), packing=True, video_frames=qwen3_frame_indices,
    source="https://huggingface.co/Qwen/Qwen3-VL-8B-Instruct",
))
