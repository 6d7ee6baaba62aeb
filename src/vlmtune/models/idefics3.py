"""SmolVLM2 (``smolvlm``) and Idefics3 (``idefics3``): a SigLIP-style vision tower, a pixel-shuffle connector, a Llama
decoder.

``model_type`` ``smolvlm`` is the SmolVLM2 checkpoints (HuggingFaceTB/SmolVLM2-256M-Video-Instruct, -500M, -2.2B);
``idefics3`` is HuggingFaceM4/Idefics3-8B-Llama3 and also the first SmolVLM checkpoints (HuggingFaceTB/SmolVLM-Instruct,
-256M, -500M), which ship the SmolVLM template: both templates end a turn with ``<end_of_utterance>`` and open an answer
with ``Assistant:``, so one masking rule serves them all. Sources: their model cards and generation_config.json
(``<end_of_utterance>`` ends generation; pad is ``<|im_end|>`` / ``<|reserved_special_token_0|>``), SmolVLM2's
processor_config.json (image_seq_len 64), and transformers' ``Idefics3Processor`` / ``SmolVLMProcessor`` and their
tests for the token layout.

An image is resized so its longest edge is ``size["longest_edge"]``, then up to multiples of ``max_image_size`` and
cut into rows x cols tiles of that size, plus the whole image shrunk to one tile (the global image). ``<image>`` in
the template text becomes, per tile, ``<fake_token_around_image><row_r_col_c>`` and ``image_seq_len`` ``<image>``
tokens, a newline after each row, then ``\\n<fake_token_around_image><global-img>``, the global image's ``<image>``
tokens and a closing ``<fake_token_around_image>``. A tile is ``image_seq_len`` = (tile / patch)^2 / scale_factor^2
tokens: (512 / 16)^2 / 4^2 = 64 for SmolVLM2-256M, (364 / 14)^2 / 2^2 = 169 for Idefics3-8B.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .registry import register_family
from .spec import DECODER_LORA_TARGETS, FamilySpec

# Tokens both processors expand an image into; the tokenizers carry each of them as one added token.
_ROW_COL = tuple(f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7))
_IMAGE_TOKENS = ("<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>", *_ROW_COL)

# Tiny models: 32-px tiles of 8-px patches -> 4 x 4 patches, pixel-shuffled (scale_factor 2) to 4 tokens a tile.
# Images are resized to a 64-px longest edge, so a square one is 2 x 2 tiles + the global image: 20 <image> tokens.
_TINY_TILE, _TINY_PATCH, _TINY_SCALE = 32, 8, 2
_TINY_IMAGE_SEQ_LEN = (_TINY_TILE // _TINY_PATCH) ** 2 // _TINY_SCALE ** 2
_TINY_IMAGE_PROCESSOR = {"size": {"longest_edge": 2 * _TINY_TILE}, "max_image_size": {"longest_edge": _TINY_TILE},
                         "do_image_splitting": True}


def _tiny(config_class: str, ids: Mapping[str, int], bos: str, pad: str):
    import transformers

    # A large initializer_range makes the random-init model learn a small task in tens of CPU steps.
    return getattr(transformers, config_class)(
        text_config=dict(
            model_type="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=4096, initializer_range=0.2, tie_word_embeddings=False,
            vocab_size=ids["__vocab_size__"], bos_token_id=ids[bos], eos_token_id=ids["<end_of_utterance>"],
            pad_token_id=ids[pad]),
        vision_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            image_size=_TINY_TILE, patch_size=_TINY_PATCH, initializer_range=0.2),
        image_token_id=ids["<image>"], scale_factor=_TINY_SCALE, pad_token_id=ids[pad], tie_word_embeddings=False,
    )


def _tiny_smolvlm(ids: Mapping[str, int]):
    return _tiny("SmolVLMConfig", ids, bos="<|im_start|>", pad="<|im_end|>")


def _tiny_idefics3(ids: Mapping[str, int]):
    return _tiny("Idefics3Config", ids, bos="<|begin_of_text|>", pad="<|reserved_special_token_0|>")


def smolvlm_image_text(processor: Any, size: tuple[int, int]) -> str:
    """The text SmolVLMProcessor writes in place of one ``(width, height)`` image's ``<image>`` placeholder.

    SmolVLMProcessor has no ``_get_num_multimodal_tokens`` to count visual tokens from sizes, so the count is
    taken from this text, built by the processor's own expansion from the tile grid its image processor reports.
    """
    width, height = size
    _, rows, cols = processor.image_processor.get_number_of_image_patches(height, width, {})
    return processor.replace_image_token({"rows": [[rows]], "cols": [[cols]]}, 0)


_COMPONENTS = {
    "vision": ("model.vision_model",),
    "projector": ("model.connector",),
    "language": ("model.text_model",),
    "lm_head": ("lm_head",),
}
_COMMON = dict(
    # Both templates answer "Assistant: <text>" but prompt generation with "Assistant:" (no space): the space is
    # the first thing the model writes, and is trained on. The header begins with the user turn's
    # <end_of_utterance>, a control token no message can contain, so text that says "Assistant:" is never
    # mistaken for a turn.
    assistant_header="<end_of_utterance>\nAssistant:", turn_end="<end_of_utterance>",
    eos_token="<end_of_utterance>", components=_COMPONENTS,
    language_lora_targets=DECODER_LORA_TARGETS,
    tiny_image_processor=_TINY_IMAGE_PROCESSOR, tiny_processor={"image_seq_len": _TINY_IMAGE_SEQ_LEN},
)

SMOLVLM = register_family(FamilySpec(
    name="smolvlm", model_class="SmolVLMForConditionalGeneration", processor_class="SmolVLMProcessor",
    packing=True,
    chat_template="smolvlm.jinja",
    template_source=(
        "HuggingFaceTB/SmolVLM2-256M-Video-Instruct chat_template, byte-identical to SmolVLM's (trl 1.16 "
        "trl/chat_templates/smolvlm.jinja; the same string as prepare_processor_dict in huggingface/transformers "
        "tests/models/smolvlm/test_processing_smolvlm.py)"),
    special_tokens=("<|endoftext|>", "<|im_start|>", "<|im_end|>", *_IMAGE_TOKENS),
    # SmolVLMProcessor reads its image tokens from these tokenizer attributes (tokenizer_config.json).
    named_special_tokens={"fake_image_token": "<fake_token_around_image>", "image_token": "<image>",
                          "global_image_token": "<global-img>", "end_of_utterance_token": "<end_of_utterance>"},
    tokenizer_class="GPT2Tokenizer", image_processor_class="SmolVLMImageProcessor",
    video_processor_class="SmolVLMVideoProcessor", pad_token="<|im_end|>",
    tiny_tokenizer={"bos_token": "<|im_start|>"}, tiny_config=_tiny_smolvlm,
    image_placeholder_text=smolvlm_image_text,
    source="https://huggingface.co/HuggingFaceTB/SmolVLM2-256M-Video-Instruct", **_COMMON,
))
IDEFICS3 = register_family(FamilySpec(
    name="idefics3", model_class="Idefics3ForConditionalGeneration", processor_class="Idefics3Processor",
    packing=True,
    chat_template="idefics3.jinja",
    template_source=(
        "HuggingFaceM4/Idefics3-8B-Llama3 chat_template.json (trl 1.16 trl/chat_templates/idefics3.jinja; rendering "
        "checked against test_apply_chat_template in huggingface/transformers "
        "tests/models/idefics3/test_processing_idefics3.py)"),
    special_tokens=("<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", *_IMAGE_TOKENS),
    image_processor_class="Idefics3ImageProcessor", pad_token="<|reserved_special_token_0|>",
    # Like Llama 3's, the tokenizer adds <|begin_of_text|>, which the template also writes (rendering adds one).
    tiny_tokenizer={"bos_token": "<|begin_of_text|>", "add_bos_token": True}, tiny_config=_tiny_idefics3,
    source="https://huggingface.co/HuggingFaceM4/Idefics3-8B-Llama3", **_COMMON,
))
