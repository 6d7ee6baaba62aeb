"""Streaming at scale (``data.streaming``): writes a JSONL of 1,000,000 records (tiny images: a few distinct files
reused, one record in ten with its image inline as a base64 ``data:`` URI), trains N steps of the tiny model on it
as a stream, and reports the training process's resident memory over time (it should stay flat: no record is held
after its batch) and samples/s.

    PYTHONPATH=src python benchmarks/stream_scale.py --out stream-bench             # 1M records, 300 steps
    PYTHONPATH=src python benchmarks/stream_scale.py --out stream-bench --records 100000 --steps 100

The data and the tiny model are written once and reused by later runs with the same --out. Prints one JSON object:
records, steps, samples_per_s (from the run's own train_runtime), start_s (process start to the first step,
which includes the check of the first data.check_samples records), and rss_mb: the RSS at each tenth of the
training steps, sampled from /proc every 0.2 s.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from PIL import Image

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (40, 60, 220), "yellow": (230, 210, 40)}


def write_data(out: Path, records: int) -> Path:
    """``out/train.jsonl`` with ``records`` records (kept when it already holds that many)."""
    path = out / "train.jsonl"
    marker = out / f"train.{records}.done"
    if marker.is_file():
        return path
    inline = {}
    for name, colour in COLOURS.items():
        Image.new("RGB", (28, 28), colour).save(out / f"{name}.png")
        buffer = io.BytesIO()
        Image.new("RGB", (28, 28), colour).save(buffer, "PNG")
        inline[name] = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    names = list(COLOURS)
    with open(path, "w") as f:
        for i in range(records):
            name = names[i % len(names)]
            image = {"type": "image_url", "image_url": {"url": inline[name]}} if i % 10 == 0 else \
                {"type": "image", "image": f"{name}.png"}
            f.write(json.dumps({"messages": [
                {"role": "user", "content": [image, {"type": "text", "text": f"Record {i}: which colour is it?"}]},
                {"role": "assistant", "content": name}]}) + "\n")
    marker.touch()
    return path


def tiny_model(out: Path) -> Path:
    folder = out / "model"
    if not (folder / "config.json").is_file():
        subprocess.run([sys.executable, "-m", "vlmtune.cli.main", "make-tiny-model", "--family", "qwen2_vl",
                        str(folder)], check=True, stdout=subprocess.DEVNULL)
    return folder


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", type=int, default=0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    made = time.perf_counter()
    data = write_data(args.out, args.records)
    written_s = time.perf_counter() - made
    config = args.out / "stream.yaml"
    run = args.out / "run"
    config.write_text(json.dumps({
        "model": {"path": str(tiny_model(args.out))},
        "data": {"train": str(data), "streaming": True, "max_length": 512},
        "lora": {"r": 8},
        "train": {"output_dir": str(run), "max_steps": args.steps, "batch_size": args.batch_size,
                  "logging_steps": 1, "progress": False, "report_to": "none",
                  "dataloader_workers": args.workers}}))
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "vlmtune.cli.main", "train", str(config), "--overwrite"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    samples: list[tuple[float, float]] = []  # (seconds since start, RSS MB)

    def watch() -> None:
        while proc.poll() is None:
            value = rss_mb(proc.pid)
            if value is not None:
                samples.append((time.perf_counter() - started, value))
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    if proc.wait() != 0:
        sys.exit(f"training failed; see {run / 'train.log'}")
    watcher.join()
    metrics = json.loads((run / "metrics.json").read_text())
    logs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    runtime = metrics["train_runtime_s"]
    training_from = samples[-1][0] - runtime if samples else 0.0
    during = [(t, m) for t, m in samples if t >= training_from]
    tenths = [max((m for t, m in during if runtime * (k - 1) / 10 <= t - training_from <= runtime * k / 10),
                  default=None) for k in range(1, 11)]
    print(json.dumps({
        "records": args.records, "data_written_s": round(written_s, 1), "steps": metrics["steps"],
        "batch_size": args.batch_size, "workers": args.workers,
        "samples_per_s": round(metrics["steps"] * args.batch_size / runtime, 1),
        "start_s": round(training_from, 1), "logged_steps": sum(1 for e in logs if "loss" in e),
        "rss_mb": [round(m, 0) if m is not None else None for m in tenths],
        "peak_rss_mb": round(max(m for _, m in samples), 0),
        "stream_dropped": metrics.get("stream_dropped"),
    }, indent=2))


if __name__ == "__main__":
    main()
