"""InternVL (2.5 / 3) in transformers' native format: the ``-hf`` checkpoints, ``InternVLForConditionalGeneration``.

Sources: OpenGVLab/InternVL3-1B-hf (config.json, preprocessor/processor/tokenizer configs, chat_template.jinja)
and transformers' ``models/internvl/convert_internvl_weights_to_hf.py``, which wrote those checkpoints. Images are
cut into 448-px tiles (1-12, best aspect ratio) plus a 448-px thumbnail when there is more than one tile; each tile
becomes ``image_seq_length`` = (448 / 14)^2 * 0.5^2 = 256 ``<IMG_CONTEXT>`` tokens, framed by ``<img>`` ``</img>``.
"""

from __future__ import annotations

from collections.abc import Mapping

from .grounding import GroundingConvention
from .registry import register_family
from .spec import DECODER_LORA_TARGETS, VISION_TOWER_COMPONENTS, FamilySpec

# The Qwen2.5-VL tokenizer's control tokens, then the ones the -hf conversion added (write_tokenizer) and the
# video token the processor reads.
_SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>",
    "<img>", "</img>", "<IMG_CONTEXT>", "<quad>", "</quad>", "<ref>", "</ref>", "<box>", "</box>", "<video>",
)
# InternVLProcessor takes its image tokens from these tokenizer attributes (tokenizer_config.json of the -hf
# checkpoints: "extra_special_tokens").
_NAMED_TOKENS = {
    "start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
    "video_token": "<video>",
}

_GROUNDING = GroundingConvention(syntax="ref_box_tags", grid=1000, source=(
    "InternVL: '<ref>object</ref><box>[[x1, y1, x2, y2]]</box>' with integers on a 0-1000 grid of the image "
    "(OpenGVLab/InternVL docs, 'grounding' in the InternVL2.5/3 fine-tuning data format: boxes normalised to "
    "[0, 1000]; several boxes of one ref in one <box> list). No point syntax."))

# Tiny model: 56-px tiles of 14-px patches -> 4 x 4 patches, pixel-shuffled (downsample_ratio 0.5) to 2 x 2 = 4
# tokens a tile; at most 4 tiles + thumbnail, so an image is 4 to 20 visual tokens (plus <img> </img>).
_TINY_TILE, _TINY_PATCH, _TINY_MAX_TILES = 56, 14, 4
_TINY_IMAGE_SEQ_LENGTH = (_TINY_TILE // _TINY_PATCH) ** 2 // 4


def _tiny_internvl(ids: Mapping[str, int]):
    from transformers import InternVLConfig

    # A large initializer_range makes the random-init model learn a small task in tens of CPU steps.
    return InternVLConfig(
        text_config=dict(
            model_type="qwen2", hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=4096, initializer_range=0.2, tie_word_embeddings=False,
            vocab_size=ids["__vocab_size__"], bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
            pad_token_id=ids["<|endoftext|>"]),
        vision_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            image_size=_TINY_TILE, patch_size=_TINY_PATCH, initializer_range=0.2),
        image_token_id=ids["<IMG_CONTEXT>"], image_seq_length=_TINY_IMAGE_SEQ_LENGTH, downsample_ratio=0.5,
        tie_word_embeddings=False,
    )


INTERNVL = register_family(FamilySpec(
    name="internvl", model_class="InternVLForConditionalGeneration", processor_class="InternVLProcessor",
    packing=True,
    chat_template="internvl.jinja",
    template_source=(
        "OpenGVLab/InternVL3-1B-hf chat_template.jinja (481 bytes, '<IMG_CONTEXT>\\n' per image); the same text as "
        "chat_template in huggingface/transformers models/internvl/convert_internvl_weights_to_hf.py"),
    special_tokens=_SPECIAL_TOKENS, named_special_tokens=_NAMED_TOKENS, tokenizer_class="Qwen2Tokenizer",
    image_processor_class="GotOcr2ImageProcessor", video_processor_class="InternVLVideoProcessor",
    eos_token="<|im_end|>", pad_token="<|endoftext|>",
    assistant_header="<|im_start|>assistant\n", turn_end="<|im_end|>",
    components=VISION_TOWER_COMPONENTS,
    language_lora_targets=DECODER_LORA_TARGETS,
    tiny_config=_tiny_internvl, grounding=_GROUNDING,
    # Referring prompts name their object in tags ("... this sentence describes: <ref>the man</ref>").
    text_tokens=("<ref>", "</ref>", "<box>", "</box>", "<quad>", "</quad>"),
    # The real processor: 448-px tiles, 1-12 of them, ImageNet mean/std (preprocessor_config.json).
    tiny_image_processor={
        "size": {"height": _TINY_TILE, "width": _TINY_TILE}, "min_patches": 1, "max_patches": _TINY_MAX_TILES,
        "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
    },
    tiny_processor={"image_seq_length": _TINY_IMAGE_SEQ_LENGTH},
    source="https://huggingface.co/OpenGVLab/InternVL3-1B-hf",
))
