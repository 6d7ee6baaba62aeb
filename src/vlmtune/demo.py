"""``vlmtune demo``: the whole flow on a bundled tiny model and bundled data, in a few CPU minutes.

1. Build a tiny random-init Qwen2.5-VL (real architecture, offline tokenizer, real chat template).
2. Generate the shapes task (``data/demo.py``): train and held-out splits.
3. Make a sensible base: a short full-parameter warm-up on the training questions with *shuffled* answers,
   so the base answers in the task's vocabulary but cannot have learnt what the images show (held-out
   accuracy near chance). A random-init model would otherwise score 0 for not speaking the vocabulary.
4. LoRA fine-tune that base on the real answers (``demo.yaml`` beside this module, which the repository's
   ``configs/demo.yaml`` links to); the run's evaluation scores base (adapter off) and tuned on the held-out split
   and writes ``demo/run/eval/report.html``.
"""

from __future__ import annotations

import json
import random
from importlib import resources
from pathlib import Path

import yaml

from .config import Config, load_config
from .data.demo import COLOURS, SHAPES, make_demo_data
from .models import get_family
from .models.tiny import build_tiny
from .train import train

FAMILY = "qwen2_5_vl"
CONFIG_FILE = "demo.yaml"
"""The LoRA stage's config, shipped in the package (so an installed vlmtune runs the demo too); its paths are
relative to the folder the demo runs in."""
WARMUP = {"epochs": 2, "lr": 1e-3, "batch_size": 8}


def demo_config(root: str | Path = ".", overrides: list[str] = ()) -> Config:
    """The config of the demo's LoRA stage run under ``root``, with dotted ``overrides``."""
    cfg = yaml.safe_load(resources.files("vlmtune").joinpath(CONFIG_FILE).read_text())
    for section, key in (("model", "path"), ("data", "train"), ("data", "val"), ("train", "output_dir")):
        cfg[section][key] = str(Path(root) / cfg[section][key])
    return load_config(None, list(overrides), base=cfg)


def shuffled_answers(train_file: Path, out_file: Path, seed: int = 0) -> Path:
    """Copy of the training file whose answers are drawn at random from the right answer set."""
    rng = random.Random(seed)
    choices = {"colour": list(COLOURS), "shape": list(SHAPES)}
    lines = []
    for line in train_file.read_text().splitlines():
        record = json.loads(line)
        record["messages"][-1]["content"] = [{"type": "text", "text": rng.choice(choices[record["task"]])}]
        lines.append(json.dumps(record))
    out_file.write_text("\n".join(lines) + "\n")
    return out_file


def run_demo(root: str | Path = ".", progress: bool = True) -> dict:
    """Run the demo under ``root/demo`` and return base and tuned held-out accuracy."""
    root = Path(root)
    demo = root / "demo"
    say = print
    spec = get_family(FAMILY)
    tiny = build_tiny(spec, demo / f"tiny-{FAMILY}")
    say(f"[1/4] tiny random-init {spec.model_class} written to {tiny}")
    files = make_demo_data(demo / "data")
    say(f"[2/4] demo data: {files['train']} and held-out {files['val']}")

    warm = shuffled_answers(files["train"], demo / "data" / "warmup.jsonl")
    cfg = demo_config(root)
    warm_cfg = load_config(None, [
        f"model.path={tiny}", f"data.train={warm}", f"train.output_dir={demo / 'base'}", "train.method=full",
        f"train.epochs={WARMUP['epochs']}", f"train.lr={WARMUP['lr']}", f"train.batch_size={WARMUP['batch_size']}",
        f"train.progress={progress}", "train.logging_steps=30", "data.cache_in_memory=true",
    ])
    say("[3/4] base model: full-parameter warm-up on shuffled answers, so the base knows the answer words "
        "but not the images (chance accuracy is about 0.29)")
    train(warm_cfg, overwrite=True)  # a rerun replaces the previous demo's runs

    say("[4/4] LoRA fine-tuning the base on the real answers (configs/demo.yaml), then base vs tuned on the "
        "held-out split")
    cfg = demo_config(root, [f"train.progress={progress}"])
    result = train(cfg, overwrite=True)
    m = result.metrics
    scores = {"base_accuracy": m["base_val_exact_match"], "tuned_accuracy": m["val_exact_match"],
              "val_samples": m["val_samples"]}
    (result.run_dir / "demo_scores.json").write_text(json.dumps(scores, indent=2) + "\n")
    say("")
    say(f"held-out accuracy ({scores['val_samples']} samples): base {scores['base_accuracy']:.3f} -> "
        f"fine-tuned {scores['tuned_accuracy']:.3f}")
    say(f"report: {result.run_dir / 'eval' / 'report.html'}")
    say(f"adapter: {result.weights_dir}   run directory: {result.run_dir} (config.yaml, metrics.jsonl, "
        "metrics.json, eval/)")
    return scores
