"""Every per-family fact in one frozen object.

Code outside ``vlmtune.models`` asks a :class:`FamilySpec` for what it needs (module prefixes, chat-template
markers, tiny-model config) and never branches on a family's name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from .grounding import GroundingConvention

# Components of a vision-language model, in the order a parameter table lists them.
COMPONENTS = ("vision", "projector", "language", "lm_head")

# The module layout transformers gives most LLaVA-style models (LLaVA, Gemma 3, InternVL, ...).
VISION_TOWER_COMPONENTS: dict[str, tuple[str, ...]] = {
    "vision": ("model.vision_tower",),
    "projector": ("model.multi_modal_projector",),
    "language": ("model.language_model",),
    "lm_head": ("lm_head",),
}
# Attention and MLP projections of Llama-style decoders: "all linear layers of the language model".
DECODER_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class FamilySpec:
    """Facts about one model family, keyed by the transformers ``model_type``."""

    name: str
    """transformers ``config.model_type``, e.g. ``"qwen2_5_vl"``."""
    model_class: str
    """Class in ``transformers`` that builds the model (imported lazily)."""
    processor_class: str
    """Processor class name written into ``processor_config.json``."""
    chat_template: str
    """File in ``vlmtune/models/chat_templates/`` holding the template the published checkpoints ship."""
    template_source: str
    """Where the chat template was taken from."""
    special_tokens: tuple[str, ...]
    """The family's special tokens, first one used as padding. Typed in a message they are refused (a typed
    "<|im_end|>" would end the turn), except ``text_tokens``."""
    eos_token: str
    pad_token: str
    assistant_header: str | None
    """Text that opens every assistant turn in the rendered conversation; None where it is not known (a family
    inferred from a checkpoint), and the answers are then found by rendering the chat template turn by turn."""
    turn_end: str
    """Special token that closes a turn; trained on at the end of each assistant answer."""
    components: Mapping[str, tuple[str, ...]]
    """Component name -> module-path prefixes in the loaded model (the longest matching prefix wins)."""
    language_lora_targets: tuple[str, ...]
    """Leaf names of the language model's linear layers: the layers ``lora.targets: all-linear`` (the default)
    adapts there. Training resolves its targets from the loaded model's own modules; this list says the same
    without a model, for the vLLM check of an exported adapter (``export.vllm``)."""
    image_factor: int | None = None
    """Pixels per visual token side (patch size x spatial merge) where images are resized to multiples of it
    (Qwen-VL); None for families with fixed-size or tiled images (see :attr:`resizes_within_pixel_range`)."""
    min_pixels: int | None = None
    max_pixels: int | None = None
    """Pixel limits of the published checkpoints' processors; None where the family resizes to no pixel range."""
    max_aspect_ratio: float | None = None
    """Longest over shortest image side the family's image processor accepts (Qwen-VL's ``smart_resize`` raises
    over 200); such images are refused with their sample. None: no limit."""
    video_frames: Callable[[int, float, float, int, int], list[int]] | None = None
    """``(total frames, video fps, fps, min_frames, max_frames) -> indices`` of the frames the family samples from a
    video (:mod:`.video_frames`); None for a family vlmtune does not train on videos (see :attr:`supports_video`)."""
    image_processor_class: str = ""
    """transformers image-processor class (its PIL backend is used when torchvision is missing)."""
    video_processor_class: str = ""
    """transformers video-processor class of the published processor ('' where it has none). A folder vlmtune
    writes carries its settings even without torchvision, which that class needs (``processor_compat``)."""
    tokenizer_class: str = "PreTrainedTokenizerFast"
    """transformers tokenizer class the published checkpoints use."""
    text_tokens: tuple[str, ...] = ()
    """Special tokens that belong in message text, such as InternVL's ``<ref>`` around the object a referring
    prompt names: not refused."""
    named_special_tokens: Mapping[str, str] = field(default_factory=dict)
    """Tokenizer attributes naming special tokens (keys end in ``_token``, e.g. ``context_image_token``), as the
    published tokenizer_config.json has them; some processors read their image tokens from these."""
    tiny_tokenizer: Mapping[str, Any] = field(default_factory=dict)
    """Keyword arguments of ``tokenizer_class`` for the tiny model where the published tokenizer differs from the
    default (no bos or unk token), e.g. Gemma 3's ``bos_token="<bos>"`` and ``add_bos_token=True``."""
    sentencepiece_tokenizer: bool = False
    """The published tokenizer is a SentencePiece conversion ("▁" for spaces, byte fallback; Gemma) that transformers
    rebuilds from vocab and merges on load: the tiny tokenizer is trained in ``tokenizer_class``'s own pipeline."""
    image_placeholder_text: Callable[[Any, tuple[int, int]], str] | None = field(
        repr=False, compare=False, default=None)
    """``(processor, (width, height))`` -> the text the processor writes in place of one image's placeholder, for
    families that write more than the visual tokens ``_get_num_multimodal_tokens`` counts (Gemma 3: newlines and
    begin/end-of-image tokens around them, crops); None where the placeholder becomes exactly those tokens."""
    image_token_counts: Callable[[Any, list[tuple[int, int]]], list[int]] | None = field(
        repr=False, compare=False, default=None)
    """``(processor, [(width, height), ...] of one sample's images)`` -> visual tokens of each, for families whose
    count depends on the sample's other images, which ``_get_num_multimodal_tokens`` does not see
    (LLaVA-OneVision tiles an image only when it is the sample's only one); None: that method counts them."""
    tiny_weights: Callable[[Any], None] | None = field(repr=False, compare=False, default=None)
    """Adjusts the freshly built tiny model in place where the class's own init would hide the images from it
    (Gemma 3 zero-initialises its projector, which checkpoints overwrite)."""
    tiny_config: Callable[[Mapping[str, int]], Any] = field(repr=False, compare=False, default=None)  # type: ignore[assignment]
    """Builds a small random-init config given the tokenizer's special-token ids (for tests and the demo)."""
    tiny_image_processor: Mapping[str, Any] = field(default_factory=dict)
    """Keyword arguments of ``image_processor_class`` for the tiny model (patch size, image size, pixel limits)."""
    tiny_processor: Mapping[str, Any] = field(default_factory=dict)
    """Extra keyword arguments of ``processor_class`` for the tiny model (e.g. image tokens per image)."""
    grounding: GroundingConvention | None = None
    """How boxes and points are written as text (None: the family has no grounding syntax)."""
    answer_prefix: str = ""
    """Text the chat template may write between the assistant header and the answer that belongs to the prompt,
    not the answer (Qwen3.5: the empty think block of turns after the last user message); not trained on."""
    chat_template_kwargs: Mapping[str, Any] = field(default_factory=dict)
    """Extra variables for the chat template on every rendering (Qwen3.5: ``enable_thinking=False``, so a
    generation prompt ends with the same empty think block the answers were trained behind)."""
    turn_end_replaces: str | None = None
    """For a chat template that writes no end-of-turn token (LLaVA-1.5): the text it writes after each answer
    instead (a space), which the renderer replaces with ``turn_end``, as the family's documented multi-turn format
    and its own training have it, so the model learns to stop. None: the template writes ``turn_end`` itself."""
    packing: bool = False
    """Several samples can share one row of a batch (``train.packing``): image features are computed per image and
    placed by token order, and the language model reads sample boundaries from position ids restarting at 0."""
    packing_per_sample_modules: tuple[str, ...] = ()
    """Classes of token mixers that see no attention mask (linear attention, causal convolutions): with packing
    they run on each sample's span alone, or one sample's state would flow into the next."""
    source: str = ""
    """Model card the facts above were taken from."""

    def __post_init__(self) -> None:
        pixel_range = (self.image_factor, self.min_pixels, self.max_pixels)
        if any(v is None for v in pixel_range) and any(v is not None for v in pixel_range):
            raise ValueError(f"family {self.name}: image_factor, min_pixels and max_pixels are given together "
                             f"or not at all (got {pixel_range})")
        if self.assistant_header == "":
            raise ValueError(f"family {self.name}: assistant_header '' would match everywhere; None where it is "
                             "not known")

    @property
    def resizes_within_pixel_range(self) -> bool:
        """Whether the processor resizes each image to a multiple of :attr:`image_factor` within a pixel range
        (Qwen-VL): ``data.min_pixels`` / ``data.max_pixels`` apply and a smaller image gets fewer visual tokens.
        False where images are shown at a fixed size or in tiles (LLaVA, Idefics3, Gemma 3, InternVL)."""
        return self.image_factor is not None

    @property
    def supports_video(self) -> bool:
        """Whether vlmtune renders video parts for this family (:attr:`video_frames` says which frames)."""
        return self.video_frames is not None

    @property
    def has_grounding(self) -> bool:
        """Whether the family writes boxes and points in a syntax of its own (:attr:`grounding`)."""
        return self.grounding is not None

    @property
    def answer_tokens(self) -> tuple[str, ...]:
        """Special tokens a generated answer keeps when decoded (every other one, such as the end of turn and
        padding, is dropped): the markers of the grounding syntax and the tokens that belong in message text."""
        markers = self.grounding.markers if self.grounding is not None else ()
        return tuple(dict.fromkeys((*markers, *self.text_tokens)))

    def read_chat_template(self) -> str:
        return resources.files("vlmtune.models").joinpath("chat_templates", self.chat_template).read_text()

    def component_of(self, module_name: str) -> str | None:
        """Return the component a module or parameter name belongs to, or None when it belongs to none."""
        best, best_len = None, -1
        for component, prefixes in self.components.items():
            for prefix in prefixes:
                if (module_name == prefix or module_name.startswith(prefix + ".")) and len(prefix) > best_len:
                    best, best_len = component, len(prefix)
        return best
