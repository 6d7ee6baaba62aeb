"""LLaVA-1.5 and LLaVA-OneVision, as the llava-hf checkpoints have them.

LLaVA-1.5 (``llava``): CLIP ViT-L/14-336, two-layer MLP projector, Vicuna-7B/13B (Llama). Sources: the model card
and config / tokenizer / processor files of llava-hf/llava-1.5-7b-hf; transformers 5.24 ``models/llava`` and
docs/source/en/model_doc/llava.md; haotian-liu/LLaVA ``llava/conversation.py`` and ``llava/train/train.py``.
The chat template is the string in transformers' tests/models/llava/test_processing_llava.py, which renders what
test_processor_llava.py expects from the checkpoint (``"USER: <image>\\nWhat is shown in this image? ASSISTANT:"``).
It writes ``USER: `` / ``ASSISTANT: `` before each turn, a turn's images first as ``<image>\\n`` each, a space
after every text, a system message as its bare text before the first turn (no default one), and ``ASSISTANT:``
as the generation prompt. Nothing closes an answer: a space follows it. The documented multi-turn format is
``USER: <image>\\n<prompt1> ASSISTANT: <answer1></s>USER: <prompt2> ASSISTANT:`` (llava.md), as LLaVA's own
training wrote it (``conv_vicuna_v1``) and labelled it (answer + ``</s>``, ``preprocess_v1``): that taught the
model to end answers with ``</s>``, the eos_token_id generation stops on. So ``turn_end_replaces=" "``: the
renderer writes ``</s>`` in place of the space after each answer and trains on it; on the template's bare text
the model would learn that an answer runs on into the next ``USER:``. The tokenizer is Llama's legacy
SentencePiece one, adding ``<s>`` (transformers 5 loads llava tokenizers from tokenizer.json as they are).

LLaVA-OneVision (``llava_onevision``): SigLIP-so400m, MLP projector, Qwen2; one image is cut into up to 6 x 6
384-px tiles plus a base view ("anyres_max_9" pools them to at most 9 tiles' worth), each of several images of a
sample is its base view only. Sources: llava-hf/llava-onevision-qwen2-7b-ov-hf; transformers 5.24
``models/llava_onevision``. The chat template is the string in transformers'
tests/models/llava_onevision/test_processing_llava_onevision.py, which renders what test_processor_llava_onevision.py
expects from the checkpoint: ``<|im_start|>{role} ``, the turn's images as ``<image>``, each text as
``\\n{text}``, then ``<|im_end|>`` (no newline between turns); the generation prompt is
``<|im_start|>assistant\\n``, without the space rendered turns have (``<|im_start|>assistant \\n{answer}``).
"""

from __future__ import annotations

from collections.abc import Mapping

from .registry import register_family
from .spec import DECODER_LORA_TARGETS, VISION_TOWER_COMPONENTS, FamilySpec

# In the published vocabulary's order: <unk> 0, <s> 1, </s> 2; <image> 32000 and <pad> 32001 were added.
_LLAVA_SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<image>", "<pad>")

# Tiny model: 56-px crops of 14-px patches -> 4 x 4 = 16 image tokens (the real one: 336 px, 24 x 24 = 576).
_TINY_IMAGE, _TINY_PATCH = 56, 14


def _tiny_llava(ids: Mapping[str, int]):
    from transformers import LlavaConfig

    # A large initializer_range makes the random-init model learn a small task in tens of CPU steps.
    return LlavaConfig(
        text_config=dict(
            model_type="llama", vocab_size=ids["__vocab_size__"], hidden_size=64, intermediate_size=128,
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=4096,
            initializer_range=0.2, tie_word_embeddings=False, bos_token_id=ids["<s>"], eos_token_id=ids["</s>"],
            pad_token_id=ids["<pad>"]),
        # Features are taken from the penultimate layer (vision_feature_layer=-2), as in the real model.
        vision_config=dict(
            model_type="clip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, image_size=_TINY_IMAGE, patch_size=_TINY_PATCH, projection_dim=32,
            initializer_range=0.2),
        image_token_index=ids["<image>"], image_seq_length=(_TINY_IMAGE // _TINY_PATCH) ** 2,
        vision_feature_layer=-2, vision_feature_select_strategy="default", projector_hidden_act="gelu",
        tie_word_embeddings=False,
    )


LLAVA = register_family(FamilySpec(
    name="llava", model_class="LlavaForConditionalGeneration", processor_class="LlavaProcessor",
    packing=True,
    chat_template="llava_1_5.jinja",
    template_source=("llava-hf/llava-1.5-7b-hf chat template, as in huggingface/transformers "
                     "tests/models/llava/test_processing_llava.py prepare_processor_dict"),
    special_tokens=_LLAVA_SPECIAL_TOKENS, tokenizer_class="LlamaTokenizer", sentencepiece_tokenizer=True,
    # legacy: like the published tokenizer.json, "▁" starts the text after every special token ("<image>▁\n").
    tiny_tokenizer={"bos_token": "<s>", "unk_token": "<unk>", "add_bos_token": True, "legacy": True},
    image_processor_class="CLIPImageProcessor", eos_token="</s>", pad_token="<pad>",
    assistant_header="ASSISTANT:", turn_end="</s>", turn_end_replaces=" ",
    components=VISION_TOWER_COMPONENTS,
    language_lora_targets=DECODER_LORA_TARGETS,
    tiny_config=_tiny_llava,
    # The real processor: shortest edge resized to 336 (bicubic), centre crop 336 x 336, OpenAI CLIP mean/std.
    tiny_image_processor={"size": {"shortest_edge": _TINY_IMAGE},
                          "crop_size": {"height": _TINY_IMAGE, "width": _TINY_IMAGE}},
    # As llava-hf/llava-1.5-7b-hf's processor_config.json: CLIP's CLS token is counted, then dropped ("default").
    tiny_processor={"patch_size": _TINY_PATCH, "vision_feature_select_strategy": "default",
                    "num_additional_image_tokens": 1},
    source="https://huggingface.co/llava-hf/llava-1.5-7b-hf",
))


# LLaVA-OneVision ------------------------------------------------------------------------------------------------

# As llava-hf/llava-onevision-qwen2-7b-ov-hf adds them to the Qwen2 vocabulary (151643..151647).
_ONEVISION_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>")

# Tiny model: 28-px tiles of 14-px patches -> 2 x 2 = 4 tokens a tile (the real one: 384-px tiles, 27 x 27 = 729),
# on the real checkpoints' grid of 1..6 x 1..6 tiles.
_OV_TILE, _OV_PATCH = 28, 14
_OV_TOKENS = (_OV_TILE // _OV_PATCH) ** 2
_OV_PINPOINTS = [[_OV_TILE * i, _OV_TILE * j] for i in range(1, 7) for j in range(1, 7)]


def _tiny_onevision(ids: Mapping[str, int]):
    from transformers import LlavaOnevisionConfig

    return LlavaOnevisionConfig(
        text_config=dict(
            model_type="qwen2", vocab_size=ids["__vocab_size__"], hidden_size=64, intermediate_size=128,
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
            initializer_range=0.2, tie_word_embeddings=False, bos_token_id=ids["<|endoftext|>"],
            eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"]),
        vision_config=dict(
            model_type="siglip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, image_size=_OV_TILE, patch_size=_OV_PATCH, vision_use_head=False),
        image_token_index=ids["<image>"], video_token_index=ids["<video>"], image_grid_pinpoints=_OV_PINPOINTS,
        vision_feature_layer=-1, vision_feature_select_strategy="full", vision_aspect_ratio="anyres_max_9",
        projector_hidden_act="gelu", initializer_range=0.2, tie_word_embeddings=False,
    )


def _onevision_image_tokens(processor, sizes: list[tuple[int, int]]) -> list[int]:
    """Visual tokens of each image of one sample: tiled (any resolution) when it is the sample's only image,
    else the base tile and one newline (what the processor writes; its ``_get_num_multimodal_tokens`` always
    counts the tiled form)."""
    if len(sizes) == 1:
        return processor._get_num_multimodal_tokens(image_sizes=[(h, w) for w, h in sizes])["num_image_tokens"]
    return [processor.num_image_tokens + 1] * len(sizes)


LLAVA_ONEVISION = register_family(FamilySpec(
    name="llava_onevision", model_class="LlavaOnevisionForConditionalGeneration",
    packing=True,
    processor_class="LlavaOnevisionProcessor", chat_template="llava_onevision.jinja",
    template_source=("llava-hf/llava-onevision-qwen2-7b-ov-hf chat_template.json, as in huggingface/transformers "
                     "tests/models/llava_onevision/test_processing_llava_onevision.py prepare_processor_dict"),
    special_tokens=_ONEVISION_SPECIAL_TOKENS, tokenizer_class="Qwen2Tokenizer",
    image_processor_class="LlavaOnevisionImageProcessor",
    video_processor_class="LlavaOnevisionVideoProcessor", eos_token="<|im_end|>", pad_token="<|endoftext|>",
    # The header of rendered turns, " \n" included (one Qwen2 pre-token): only the answer and <|im_end|> train.
    assistant_header="<|im_start|>assistant \n", turn_end="<|im_end|>",
    components={**VISION_TOWER_COMPONENTS, "projector": ("model.multi_modal_projector", "model.image_newline")},
    language_lora_targets=DECODER_LORA_TARGETS,
    image_token_counts=_onevision_image_tokens,
    tiny_config=_tiny_onevision,
    # The real processor: 384-px tiles on the 36 grid pinpoints, SigLIP's mean = std = 0.5.
    tiny_image_processor={"size": {"height": _OV_TILE, "width": _OV_TILE}, "image_grid_pinpoints": _OV_PINPOINTS,
                          "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]},
    tiny_processor={"num_image_tokens": _OV_TOKENS, "vision_feature_select_strategy": "full",
                    "vision_aspect_ratio": "anyres_max_9"},
    source="https://huggingface.co/llava-hf/llava-onevision-qwen2-7b-ov-hf",
))
