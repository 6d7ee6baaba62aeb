"""Qwen3.5: natively multimodal, hybrid Gated-DeltaNet (linear attention) and gated full-attention layers.

Sources: the model cards and config.json of Qwen/Qwen3.5-27B (transformers' reference checkpoint for the class)
and Qwen/Qwen3.5-0.8B; transformers 5.24 ``models/qwen3_5``; the chat template as shipped by Qwen3.5-4B and larger
(a copy of the ``trl`` package's ``trl/chat_templates/qwen3_5_think.jinja``).

Thinking. Qwen3.5-4B and larger ship a template whose generation prompt opens a thinking block
(``<|im_start|>assistant\\n<think>\\n``); Qwen3.5-2B and smaller ship the same template with the default flipped
(trl's ``qwen3_5_nothink.jinja``), whose prompt closes an empty one. Both write the assistant turns after the last
user message as ``<think>\\n{reasoning}\\n</think>\\n\\n{answer}`` and earlier turns as the bare answer. Fine-tuning
data here has answers without reasoning, so the last turn carries an empty think block. vlmtune treats that
block as prompt, the way the non-thinking generation prompt does: it is not trained on (ms-swift's
``--loss_scale ignore_empty_think`` for Qwen3 / Qwen3.5, LLaMA-Factory's ``enable_thinking: false``), and
prompts are rendered with ``enable_thinking=False`` so generation continues after the same block it was trained
behind, with either template.

Grounding is Qwen3-VL's: JSON on a relative 0-1000 grid (ms-swift's ``Qwen3_5Template`` subclasses its
``Qwen3VLTemplate``, bbox normalisation included).
"""

from __future__ import annotations

from collections.abc import Mapping

from .qwen_vl import _QWEN3_SPECIAL_TOKENS, _QWEN3_VL_GROUNDING
from .registry import register_family
from .spec import FamilySpec
from .video_frames import qwen3_frame_indices

# Tiny model: hidden 64 and two decoder layers, one of each kind (the real models repeat 3 linear + 1 full).
# Head dims are shrunk with them; partial_rotary_factor 0.25 is the real one, so 8 of the 32 head dims rotate
# and mrope_section (interleaved T/H/W) sums to 8 / 2.
_TINY_TEXT = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, layer_types=["linear_attention", "full_attention"],
    num_attention_heads=4, num_key_value_heads=2, head_dim=32,
    linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=16, linear_value_head_dim=16,
    linear_conv_kernel_dim=4, max_position_embeddings=4096, initializer_range=0.2, tie_word_embeddings=False,
    rope_parameters={"rope_type": "default", "rope_theta": 10000000.0, "partial_rotary_factor": 0.25,
                     "mrope_section": [2, 1, 1], "mrope_interleaved": True},
)


def _tiny_qwen3_5(ids: Mapping[str, int]):
    from transformers import Qwen3_5Config

    return Qwen3_5Config(
        text_config=dict(_TINY_TEXT, vocab_size=ids["__vocab_size__"], eos_token_id=ids["<|im_end|>"],
                         pad_token_id=ids["<|endoftext|>"]),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                           patch_size=16, spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=64,
                           initializer_range=0.2),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )


QWEN3_5 = register_family(FamilySpec(
    name="qwen3_5", model_class="Qwen3_5ForConditionalGeneration", processor_class="Qwen3VLProcessor",
    chat_template="qwen3_5.jinja",
    template_source=("Qwen/Qwen3.5-27B chat_template, shipped by Qwen3.5-4B and larger (trl 1.16 "
                     "trl/chat_templates/qwen3_5_think.jinja)"),
    special_tokens=_QWEN3_SPECIAL_TOKENS, tokenizer_class="Qwen3_5Tokenizer",
    image_processor_class="Qwen2VLImageProcessor", video_processor_class="Qwen3VLVideoProcessor",
    eos_token="<|im_end|>", pad_token="<|endoftext|>",
    assistant_header="<|im_start|>assistant\n", turn_end="<|im_end|>",
    answer_prefix="<think>\n\n</think>\n\n", chat_template_kwargs={"enable_thinking": False},
    components={
        "vision": ("model.visual",),
        "projector": ("model.visual.merger",),
        "language": ("model.language_model",),
        "lm_head": ("lm_head",),
    },
    # Full-attention layers (gated: q_proj also yields the output gate), Gated-DeltaNet layers, and the MLPs.
    language_lora_targets=("q_proj", "k_proj", "v_proj", "o_proj", "in_proj_qkv", "in_proj_z", "in_proj_b",
                           "in_proj_a", "out_proj", "gate_proj", "up_proj", "down_proj"),
    image_factor=32, min_pixels=65536, max_pixels=16777216, max_aspect_ratio=200,
    tiny_config=_tiny_qwen3_5, grounding=_QWEN3_VL_GROUNDING,
    # Small pixel limits: a demo image becomes a few visual tokens.
    tiny_image_processor={"patch_size": 16, "merge_size": 2, "temporal_patch_size": 2, "min_pixels": 32 ** 2,
                          "max_pixels": (8 * 32) ** 2},
    # Packed: the Gated-DeltaNet layers carry a recurrent state along the row, so they run per sample.
    packing=True, packing_per_sample_modules=("Qwen3_5GatedDeltaNet",), video_frames=qwen3_frame_indices,
    source="https://huggingface.co/Qwen/Qwen3.5-27B",
))
