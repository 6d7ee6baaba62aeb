"""Rendered samples cached on disk: the chat template, tokenizer, image decoding and the image processor run
once per sample, and every later epoch, run or process reads the tensors back (safetensors).

A sample's key hashes everything its tensors depend on: its content (messages, image paths, the size a shrunk
image is shown at), each image file's size and modification time, the processor's settings (image processor, chat
template, tokenizer vocabulary), the family's masking markers, ``max_length``, the fixed ``image_size`` (where
set), the image loading rules (:data:`vlmtune.data.images.RULES`) and the vlmtune version. Changing any of them
renders afresh; stale entries are never read (delete the folder to reclaim the space).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .. import __version__
from ..core.sample import Sample
from ..files import make_readable
from .check import content_key
from .images import RULES as IMAGE_RULES
from .render import Renderer
from .videos import VideoSettings

log = logging.getLogger("vlmtune")

AUTO, CACHE_FOLDER = "auto", "cache"
"""``data.cache_dir: auto`` caches in ``RUN/cache``, under the run folder."""


class CachedRenderer:
    """A :class:`Renderer` whose :meth:`encode` reads a sample's tensors from ``cache_dir`` when they are there.

    Safe with several processes at once (DataLoader workers, data-parallel ranks): files are written under a
    temporary name and renamed into place.
    """

    def __init__(self, renderer: Renderer, cache_dir: str | Path, max_bytes: int | None = None):
        """``max_bytes``: stop writing new entries once this process has written that many bytes (entries
        already there are still read); None: no limit."""
        self.renderer = renderer
        self.root = Path(cache_dir)
        self.fingerprint = renderer_fingerprint(renderer)
        self._keys: dict[tuple, str] = {}
        self.hits = self.misses = 0
        self.max_bytes, self.written = max_bytes, 0

    def __getattr__(self, name: str) -> Any:  # everything but encode is the renderer's own
        return getattr(self.renderer, name)

    def path(self, sample: Sample) -> Path:
        # Memoised by id and messages: a preference pair's chosen and rejected sides share the record's id.
        memo = (sample.id, sample.messages)
        key = self._keys.get(memo)
        if key is None:
            h = hashlib.sha256(self.fingerprint.encode())
            h.update(content_key(sample).encode())
            for image in [*sample.images, *(part.path for part in sample.video_parts)]:
                st = os.stat(image)
                h.update(f"\0{st.st_size}:{st.st_mtime_ns}".encode())
            key = self._keys[memo] = h.hexdigest()
        return self.root / key[:2] / f"{key}.safetensors"

    def encode(self, sample: Sample) -> dict[str, torch.Tensor]:
        """``renderer.encode(sample)``, from the cache when present (written there otherwise)."""
        path = self.path(sample)
        if path.is_file():
            try:
                features = load_file(path)
                problem = _entry_problem(features)
            except (SafetensorError, OSError) as e:
                problem = str(e)
            if problem is None:
                self.hits += 1
                return features
            # A truncated or foreign file (a crash mid-write elsewhere, a disk error): render again and replace it.
            log.warning("data cache: %s (sample %s) is unreadable (%s); deleted, rendering it again", path, sample.id,
                        problem)
            path.unlink(missing_ok=True)
        features = self.renderer.encode(sample)
        self.misses += 1
        if all(isinstance(v, torch.Tensor) for v in features.values()) and self._room(features):
            _write(path, features)
        return features

    def _room(self, features: dict[str, torch.Tensor]) -> bool:
        size = sum(v.numel() * v.element_size() for v in features.values())
        if self.max_bytes is not None and self.written + size > self.max_bytes:
            if self.written <= self.max_bytes:  # said once
                log.warning("data cache: %s reached its limit of %.1f GB written by this run; further samples are "
                            "rendered each epoch (set data.cache_dir to a folder to cache them all)", self.root,
                            self.max_bytes / 1e9)
            self.written = self.max_bytes + 1
            return False
        self.written += size
        return True


def auto_cache_limit(folder: Path) -> int:
    """Bytes the automatic cache (``data.cache_dir: auto``) may write: a quarter of the free space on the disk
    holding ``folder`` (pixel tensors take far more room than the compressed image files they come from)."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return shutil.disk_usage(existing).free // 4


def _entry_problem(features: dict[str, torch.Tensor]) -> str | None:
    """Why tensors read from a cache file are not a rendered sample; None where they are."""
    ids, labels = features.get("input_ids"), features.get("labels")
    if ids is None or labels is None:
        return "no input_ids or labels in it"
    if ids.dim() != 1 or ids.shape != labels.shape:
        return f"input_ids {tuple(ids.shape)} and labels {tuple(labels.shape)} do not match"
    return None


def _write(path: Path, features: dict[str, torch.Tensor]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.contiguous() for k, v in features.items()}, tmp)
        make_readable(tmp)  # mkstemp and safetensors both make 0600 files
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def renderer_fingerprint(renderer: Renderer) -> str:
    """Hash of everything besides the sample that decides what ``renderer.encode`` returns."""
    processor, spec = renderer.processor, renderer.spec
    tokenizer = processor.tokenizer
    backend = getattr(tokenizer, "backend_tokenizer", None)
    vocab = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    parts = {
        "vlmtune": __version__, "family": spec.name, "max_length": renderer.max_length, "images": IMAGE_RULES,
        "markers": [spec.assistant_header, spec.turn_end, spec.answer_prefix, spec.turn_end_replaces,
                    sorted(spec.chat_template_kwargs.items())],
        "processor": processor.to_json_string() if hasattr(processor, "to_json_string") else repr(processor),
        "chat_template": getattr(processor, "chat_template", None),
        "tokenizer": [type(tokenizer).__name__, hashlib.sha256(vocab.encode()).hexdigest(),
                      tokenizer.padding_side, str(tokenizer.special_tokens_map)],
    }
    if renderer.image_size is not None:  # only where set: caches written without it stay valid
        parts["image_size"] = list(renderer.image_size)
    if renderer.video != VideoSettings():  # the frame sampling of videos (data.video_*), where not the default
        parts["video"] = dataclasses.asdict(renderer.video)
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
