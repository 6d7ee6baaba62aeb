"""Shared fixtures: tiny models of every registered family and the demo data, built once per session."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from PIL import Image

from vlmtune.models import family_names, get_family
from vlmtune.models.tiny import build_tiny

FAMILIES = family_names()


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """``tiny_dir(family)`` -> folder of a tiny random-init checkpoint of that family (built once)."""
    built: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in built:
            built[family] = build_tiny(get_family(family), tmp_path_factory.mktemp(f"tiny_{family}"))
        return built[family]

    return get


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def mixed_length_data(folder: Path, n: int, seed: int, sizes: list[tuple[int, int]], words: list[str],
                      max_words: int) -> Path:
    """``folder/train.jsonl``: ``n`` one-image samples whose image size (one of ``sizes``) and answer length
    (1 to ``max_words`` of ``words``) are drawn with ``seed``; the images beside it."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        w, h = rng.choice(sizes)
        Image.new("RGB", (w, h), (rng.randrange(256), 90, 160)).save(folder / f"{i}.png")
        answer = " ".join(rng.choice(words) for _ in range(rng.randint(1, max_words)))
        records.append({"messages": [
            {"role": "user", "content": [{"type": "image", "image": f"{i}.png"}, {"type": "text", "text": "What?"}]},
            {"role": "assistant", "content": answer}]})
    return write_jsonl(folder / "train.jsonl", records)


@pytest.fixture
def images(tmp_path) -> dict[str, Path]:
    """A few small images of different sizes in ``tmp_path``."""
    paths = {}
    for name, size, colour in (("red.png", (64, 48), (255, 0, 0)), ("blue.png", (90, 120), (0, 0, 255)),
                               ("green.png", (56, 56), (0, 200, 0))):
        Image.new("RGB", size, colour).save(tmp_path / name)
        paths[name] = tmp_path / name
    return paths


def conversation(first_image: str = "red.png", second_image: str = "blue.png") -> dict:
    """A multi-turn, multi-image record in the messages format."""
    return {"messages": [
        {"role": "system", "content": "You answer briefly."},
        {"role": "user", "content": [{"type": "image", "image": first_image},
                                     {"type": "text", "text": "What colour is this?"}]},
        {"role": "assistant", "content": "red"},
        {"role": "user", "content": [{"type": "text", "text": "And this one?"},
                                     {"type": "image", "image": second_image}]},
        {"role": "assistant", "content": [{"type": "text", "text": "It is blue."}]},
    ]}


def dry_run_table(folder: Path, tmp_path: Path, capsys, *overrides: str) -> dict[str, list[int]]:
    """``vlmtune train --dry-run`` on ``folder``: component -> [trainable, total] as printed."""
    from vlmtune.cli.main import main

    config = tmp_path / "c.yaml"
    config.write_text(f"model:\n  path: {folder}\ndata:\n  train: unused.jsonl\ntrain:\n  output_dir: {tmp_path}/run\n")
    assert main(["train", str(config), "--dry-run", *overrides]) == 0
    lines = capsys.readouterr().out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:3] == ["component", "trainable", "total"])
    end = next(i for i, line in enumerate(lines) if i > start and line.startswith("all "))
    return {line.split()[0]: [int(n.replace(",", "")) for n in line.split()[1:3]] for line in lines[start + 1:end + 1]}


def chat_with_images(sample) -> list[dict]:
    """The sample as a transformers chat with its PIL images inline (what ``apply_chat_template`` takes)."""
    from vlmtune.data.render import load_image

    chat, images = sample.to_chat(), iter(load_image(p) for p in sample.images)
    for message in chat:
        for part in message["content"]:
            if part["type"] == "image":
                part["image"] = next(images)
    return chat
