"""Make a mixed-resolution image dataset and a bench config, then (with --run) benchmark vlmtune against the common
recipe on it.

    python benchmarks/mixed_images.py --out bench-data            # tiny Qwen2-VL, 200 samples, bench.yaml
    python benchmarks/mixed_images.py --out bench-data --run      # ... and vlmtune bench --baseline on it
    python benchmarks/mixed_images.py --out bench-data --model Qwen/Qwen2.5-VL-7B-Instruct   # a real checkpoint
    python benchmarks/mixed_images.py --out bench-7b --family qwen2_5_vl --run -- \
        --random-init benchmarks/qwen2_5_vl_7b.json                # GPU: Qwen2.5-VL-7B's shape, random weights

Each sample: one image 56-448 px a side (random size, colour and shape), a fixed question, an answer of 1-40 words.
The config trains LoRA r=64 (alpha 16) on the language model, batch 4, images capped at 448x448 pixels, rendered
samples cached in OUT/cache and in memory. It sets ``train.max_tokens_per_batch`` to 4 x the longest sample: no
batch ever holds more tokens than the baseline's largest possible batch of 4, so both runs are bounded by the same
peak memory.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
from pathlib import Path

from PIL import Image, ImageDraw

WORDS = ("the a red green blue yellow circle square triangle shape image shows small large left right top bottom "
         "middle corner of on in with and picture colour bright dark one two three near far above below").split()
BATCH, MAX_PIXELS = 4, 448 * 448


def make_images(out: Path, n: int, seed: int) -> Path:
    """``n`` records of the messages format in ``out/train.jsonl``, images in ``out/images``."""
    rng = random.Random(seed)
    (out / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        w, h = rng.randint(56, 448), rng.randint(56, 448)
        image = Image.new("RGB", (w, h), tuple(rng.randrange(256) for _ in range(3)))
        box = sorted(rng.sample(range(w), 2)) + sorted(rng.sample(range(h), 2))
        ImageDraw.Draw(image).ellipse((box[0], box[2], box[1], box[3]), fill=tuple(rng.randrange(256) for _ in "rgb"))
        image.save(out / "images" / f"{i:04d}.png")
        answer = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 40)))
        records.append({"messages": [
            {"role": "user", "content": [{"type": "image", "image": f"images/{i:04d}.png"},
                                         {"type": "text", "text": "Describe the image."}]},
            {"role": "assistant", "content": answer}]})
    path = out / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def longest_sample(model: str, data: Path) -> int:
    """Tokens of the longest sample (visual included), counted from image sizes as training does."""
    from vlmtune.data import Renderer
    from vlmtune.data.check import check_dataset
    from vlmtune.models import load_processor, spec_for

    spec = spec_for(model, check_split=False)
    renderer = Renderer(load_processor(model, spec, None, MAX_PIXELS), spec)
    return max(t + v for t, v in check_dataset(data, renderer=renderer).lengths)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="bench-data", help="output folder")
    parser.add_argument("--n", type=int, default=200, help="samples (default 200)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", help="checkpoint (default: a tiny random-init model written to OUT/model)")
    parser.add_argument("--family", default="qwen2_vl", help="family of the tiny model (default qwen2_vl; "
                        "qwen2_5_vl to pair with --random-init benchmarks/qwen2_5_vl_7b.json)")
    parser.add_argument("--run", action="store_true", help="then run vlmtune bench --baseline on it")
    parser.add_argument("bench_args", nargs="*", help="extra vlmtune bench arguments, after --")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    model = args.model
    if model is None:
        from vlmtune.models import get_family
        from vlmtune.models.tiny import build_tiny

        model = str(out / "model")
        if not (out / "model" / "config.json").is_file():
            build_tiny(get_family(args.family), model)
    data = make_images(out, args.n, args.seed)
    budget = BATCH * longest_sample(model, data)
    config = {
        "model": {"path": model, "dtype": "auto"},
        "data": {"train": str(data), "max_pixels": MAX_PIXELS, "cache_dir": str(out / "cache"),
                 "cache_in_memory": True},  # 200 small samples: kept in RAM too, as the baseline keeps its table
        "lora": {"r": 64, "alpha": 16, "targets": "all-linear"},
        "train": {"output_dir": str(out / "run"), "batch_size": BATCH, "max_tokens_per_batch": budget,
                  "lr": 1e-4, "seed": 0},
    }
    config_path = out / "bench.yaml"
    config_path.write_text(json.dumps(config, indent=2) + "\n")  # JSON is YAML
    plain = {"model": {"path": model}, "data": {"train": str(data), "max_pixels": MAX_PIXELS},
             "lora": {"r": 64, "alpha": 16, "dropout": 0.05},  # nothing about speed: vlmtune's defaults decide
             "train": {"output_dir": str(out / "plain-run"), "batch_size": BATCH, "lr": 1e-4, "epochs": 1}}
    (out / "plain.yaml").write_text(json.dumps(plain, indent=2) + "\n")
    command = [sys.executable, "-m", "vlmtune.cli.main", "bench", str(config_path), "--baseline", "--steps", "40",
               "--warmup", "5", *args.bench_args]
    print(f"wrote {data} ({args.n} samples), {config_path} (token budget {budget} = {BATCH} x longest sample), "
          f"{out / 'plain.yaml'} (model, data and LoRA only)")
    print("run: vlmtune bench " + " ".join(command[4:]))
    return subprocess.call(command) if args.run else 0


if __name__ == "__main__":
    sys.exit(main())
