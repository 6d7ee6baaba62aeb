"""Small random-init models of the real architecture classes, with a tokenizer trained offline.

No weights can be downloaded in tests or CI, so every code path runs on these: the real model class built
from a tiny config, a byte-level BPE tokenizer trained here that carries the family's special tokens, and
the family's real chat template. The folder is an ordinary checkpoint: ``AutoProcessor`` and
``AutoModelForImageTextToText`` load it like any hub model.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GenerationConfig

from ..files import make_readable
from .processor_compat import new_processor, video_processor_defaults
from .spec import FamilySpec

_WORDS = (
    "the a an of to in on at is are was be this that it what which where who how many much there here and or "
    "not no yes with for from by image picture photo shows show describe answer question colour color shape "
    "red green blue yellow orange purple black white gray brown pink circle square triangle star left right top "
    "bottom middle centre center small large big one two three four five six seven eight nine ten zero "
    "text chart table value number box point click button screen page document title label total price date "
    "name person people dog cat car tree house sky water road sign you assistant user system helpful please"
)


def _corpus() -> list[str]:
    words = _WORDS.split()
    lines = [" ".join(words[i:i + 12]) for i in range(0, len(words), 12)]
    lines += [w.capitalize() + "." for w in words] + [f"{w}?" for w in words]
    lines += ["0123456789 (10,20),(30,40) {\"bbox\": [1, 2, 3, 4]} - : ; ! ' \" / \n"]
    return lines * 4


def train_tokenizer(spec: FamilySpec, vocab_size: int = 1024):
    """Byte-level BPE trained on a small built-in corpus, wrapped in the family's tokenizer class (a BPE in that
    class's own pipeline where the published tokenizer is a SentencePiece conversion)."""
    if spec.sentencepiece_tokenizer:
        return _sentencepiece_tokenizer(spec, vocab_size)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(spec.special_tokens),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(_corpus(), trainer=trainer)
    tokenizer_cls = getattr(transformers, spec.tokenizer_class)
    return tokenizer_cls(tokenizer_object=bpe, **_tokenizer_kwargs(spec))


def _tokenizer_kwargs(spec: FamilySpec) -> dict:
    return {"eos_token": spec.eos_token, "pad_token": spec.pad_token, "unk_token": None, "bos_token": None,
            "additional_special_tokens": None, "extra_special_tokens": list(spec.special_tokens),
            "errors": "replace", **spec.named_special_tokens, **spec.tiny_tokenizer}


def _sentencepiece_tokenizer(spec: FamilySpec, vocab_size: int):
    """BPE trained inside the tokenizer class's own pipeline ("▁" for spaces, byte fallback).

    transformers rebuilds such a class from vocab and merges when it loads a folder, so a byte-level BPE would
    not survive the round trip.
    """
    tokenizer_cls = getattr(transformers, spec.tokenizer_class)
    specials = list(spec.special_tokens)
    backend = tokenizer_cls(vocab={t: i for i, t in enumerate(specials)}, merges=[]).backend_tokenizer
    if isinstance(backend.pre_tokenizer, pre_tokenizers.Metaspace):
        # SentencePiece pieces never span words (Llama's "ASSISTANT:" then "▁red"); Llama's pipeline encodes the
        # text unsplit, which would let training merge across words.
        backend.pre_tokenizer.split = True
    backend.train_from_iterator(_corpus(), trainer=trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, show_progress=False))
    trained = json.loads(backend.to_str())["model"]
    vocab = trained["vocab"]
    for byte in range(256):  # the byte-fallback pieces of SentencePiece vocabularies
        vocab.setdefault(f"<0x{byte:02X}>", len(vocab))
    return tokenizer_cls(vocab=vocab, merges=[tuple(m) for m in trained["merges"]], **_tokenizer_kwargs(spec))


def tiny_video_processor(spec: FamilySpec) -> dict | None:
    """Settings of the tiny model's video processor: the family's real defaults, with the tiny image processor's
    frame size and normalisation where the video processor has the same setting (a frame goes through the same
    tiny vision tower as an image). None for a family whose processor has no video processor."""
    if not spec.video_processor_class:
        return None
    defaults = video_processor_defaults(spec.video_processor_class)
    shared = {k: v for k, v in spec.tiny_image_processor.items() if k in defaults}
    return video_processor_defaults(spec.video_processor_class, shared)


def build_tiny(spec: FamilySpec, out_dir: str | Path, seed: int = 0) -> Path:
    """Write a tiny random-init checkpoint of ``spec``'s real model class to ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(spec)
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in spec.special_tokens}
    ids["__vocab_size__"] = len(tokenizer)

    image_processor = getattr(transformers, spec.image_processor_class)(**spec.tiny_image_processor)
    processor = new_processor(
        spec.processor_class, tiny_video_processor(spec), image_processor=image_processor, tokenizer=tokenizer,
        chat_template=spec.read_chat_template(), **spec.tiny_processor)
    processor.save_pretrained(out)

    torch.manual_seed(seed)
    config = spec.tiny_config(ids)
    model = getattr(transformers, spec.model_class)(config)
    if spec.tiny_weights is not None:
        spec.tiny_weights(model)
    model.generation_config = GenerationConfig(
        eos_token_id=ids[spec.turn_end], pad_token_id=ids[spec.pad_token], do_sample=False)
    model.save_pretrained(out)
    make_readable(out)  # safetensors writes the weights 0600
    return out

