"""The bundled demo task, generated deterministically: one coloured shape per image, asked about.

Questions ask for the shape's colour or its shape; answers are one word, so held-out accuracy is an exact
match. Chance is 1/4 for colour and 1/3 for shape.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = {"red": (220, 30, 30), "green": (30, 170, 50), "blue": (30, 60, 220), "yellow": (235, 200, 20)}
SHAPES = ("circle", "square", "triangle")
QUESTIONS = {"colour": "What colour is the shape?", "shape": "What shape is this?"}


SIZE = 112
"""Image side in pixels: 4x4 visual tokens for Qwen2.5-VL. The tiny model's vision tower is random and
frozen, so shapes are drawn large and near the centre, where its features tell them apart."""


def draw_shape(shape: str, colour: str, rng: random.Random, size: int = SIZE) -> Image.Image:
    image = Image.new("RGB", (size, size), (245, 245, 245))
    side = rng.randint(size * 4 // 5, size - 6)
    x0, y0 = rng.randint(2, size - side - 2), rng.randint(2, size - side - 2)
    box = (x0, y0, x0 + side, y0 + side)
    draw, fill = ImageDraw.Draw(image), COLOURS[colour]
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([(x0 + side / 2, y0), (x0, y0 + side), (x0 + side, y0 + side)], fill=fill)
    return image


def make_demo_data(out_dir: str | Path, n_train: int = 600, n_val: int = 100, seed: int = 0) -> dict[str, Path]:
    """Write images and ``train.jsonl`` / ``val.jsonl`` (messages format) to ``out_dir``."""
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    paths = {}
    for split, n in (("train", n_train), ("val", n_val)):
        records = []
        for i in range(n):
            shape, colour = rng.choice(SHAPES), rng.choice(list(COLOURS))
            name = f"images/{split}_{i:04d}.png"
            draw_shape(shape, colour, rng).save(out / name)
            kind = rng.choice(list(QUESTIONS))
            answer = colour if kind == "colour" else shape
            records.append({"messages": [
                {"role": "user", "content": [{"type": "image", "image": name},
                                             {"type": "text", "text": QUESTIONS[kind]}]},
                {"role": "assistant", "content": [{"type": "text", "text": answer}]},
            ], "task": kind})
        paths[split] = out / f"{split}.jsonl"
        paths[split].write_text("".join(json.dumps(r) + "\n" for r in records))
    return paths


def make_grounding_data(out_dir: str | Path, n_train: int = 200, n_val: int = 50, seed: int = 0,
                        size: int = SIZE) -> dict[str, Path]:
    """A grounding task: one coloured square of random side and place on a blank image, asked for its box (the
    answer is the square's box, in pixels). Writes ``train.jsonl`` / ``val.jsonl`` (messages format) to
    ``out_dir``."""
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    paths = {}
    for split, n in (("train", n_train), ("val", n_val)):
        records = []
        for i in range(n):
            colour = rng.choice(list(COLOURS))
            side = rng.randint(size // 4, size * 3 // 5)
            x0, y0 = rng.randint(0, size - side), rng.randint(0, size - side)
            image = Image.new("RGB", (size, size), (245, 245, 245))
            ImageDraw.Draw(image).rectangle((x0, y0, x0 + side - 1, y0 + side - 1), fill=COLOURS[colour])
            name = f"images/{split}_box_{i:04d}.png"
            image.save(out / name)
            records.append({"messages": [
                {"role": "user", "content": [{"type": "image", "image": name},
                                             {"type": "text", "text": f"Where is the {colour} square?"}]},
                {"role": "assistant", "content": [{"type": "box", "box": [x0, y0, x0 + side, y0 + side]}]},
            ]})
        paths[split] = out / f"{split}.jsonl"
        paths[split].write_text("".join(json.dumps(r) + "\n" for r in records))
    return paths
