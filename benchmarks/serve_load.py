"""Load test of ``vlmtune serve``: N requests from C concurrent ``openai`` clients (a mix of text-only and image
requests), reporting requests/s, p50/p95 latency, failed requests and the batch sizes the server's worker formed.

    python benchmarks/serve_load.py                       # tiny Qwen2.5-VL, 200 requests, 8 clients
    python benchmarks/serve_load.py --also-unbatched      # the same load again with --max-batch-size 1
    python benchmarks/serve_load.py --model DIR --adapter a=RUN/adapter --requests 500 --concurrency 16

Starts the server itself (a ``vlmtune serve`` subprocess on a free localhost port) and stops it at the end.
Exits 1 when any request failed.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import openai
from PIL import Image

PROMPTS = ["What colour is the shape?", "Describe the image in a few words.", "Is there a circle? Answer yes or no.",
           "Write one sentence about the colours you see, then name the largest shape."]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="checkpoint folder (default: a tiny random-init Qwen2.5-VL built in --work)")
    parser.add_argument("--adapter", action="append", default=[], metavar="[NAME=]PATH",
                        help="adapters to serve; requests go to the first one (default: the base)")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument("--max-tokens", type=int, default=16, help="max_tokens of each request (default 16)")
    parser.add_argument("--image-share", type=float, default=0.5, help="share of requests with an image (0.5)")
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--also-unbatched", action="store_true", help="repeat the load with --max-batch-size 1")
    parser.add_argument("--work", help="folder for the tiny model and the server log (default: a temporary one)")
    args = parser.parse_args()

    work = Path(args.work or tempfile.mkdtemp(prefix="serve-load-"))
    work.mkdir(parents=True, exist_ok=True)
    model = args.model or str(_tiny_model(work))
    requests = _requests(args.requests, args.image_share)
    failed = 0
    for batch_size in [args.max_batch_size] + ([1] if args.also_unbatched else []):
        result = _run(model, args.adapter, batch_size, requests, args.concurrency, args.max_tokens, work)
        print(json.dumps(result, indent=2))
        failed += result["failed"]
    return 1 if failed else 0


def _tiny_model(work: Path) -> Path:
    out = work / "tiny_qwen2_5_vl"
    if not (out / "config.json").is_file():
        subprocess.run([sys.executable, "-m", "vlmtune.cli.main", "make-tiny-model", "--family", "qwen2_5_vl",
                        str(out)], check=True, stdout=subprocess.DEVNULL)
    return out


def _requests(n: int, image_share: float) -> list[list[dict]]:
    """``n`` message lists: every k-th one with an image of varying size and colour."""
    every = round(1 / image_share) if image_share > 0 else 0
    out = []
    for i in range(n):
        prompt = PROMPTS[i % len(PROMPTS)]
        if every and i % every == 0:
            buffer = io.BytesIO()
            size = (48 + 16 * (i % 7), 40 + 24 * (i % 5))
            Image.new("RGB", size, ((37 * i) % 256, (91 * i) % 256, (13 * i) % 256)).save(buffer, "PNG")
            url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
            content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": prompt}]
            out.append([{"role": "user", "content": content}])
        else:
            out.append([{"role": "user", "content": prompt}])
    return out


def _run(model: str, adapters: list[str], max_batch_size: int, requests: list[list[dict]], concurrency: int,
         max_tokens: int, work: Path) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = work / f"server-batch{max_batch_size}.log"
    argv = [sys.executable, "-m", "vlmtune.cli.main", "serve", "--model", model, "--port", str(port),
            "--max-batch-size", str(max_batch_size), "--backend", "transformers"]
    for adapter in adapters:
        argv += ["--adapter", adapter]
    env = {**os.environ, "VLMTUNE_API_KEY": ""}
    with log.open("w") as out:
        server = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        names = _wait(url, server, log)
        served = names[1] if adapters else names[0]
        before = _stats(url)
        latencies, errors = _load(url, served, requests, concurrency, max_tokens)
        wall = latencies.pop("wall")
        after = _stats(url)
    finally:
        server.terminate()
        server.wait(timeout=60)
    times = sorted(latencies.values())
    batches = {int(k): v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}
    return {
        "model": served, "max_batch_size": max_batch_size, "requests": len(requests), "concurrency": concurrency,
        "max_tokens": max_tokens, "image_requests": sum(isinstance(m[0]["content"], list) for m in requests),
        "failed": len(errors), "errors": errors[:3], "wall_s": round(wall, 2),
        "requests_per_s": round(len(times) / wall, 2) if wall else None,
        "latency_p50_ms": round(1000 * statistics.median(times)) if times else None,
        "latency_p95_ms": round(1000 * times[min(len(times) - 1, int(0.95 * len(times)))]) if times else None,
        "batch_sizes": dict(sorted(batches.items())),
        "mean_batch_size": round(sum(k * v for k, v in batches.items()) / max(1, sum(batches.values())), 2),
    }


def _load(url: str, model: str, requests: list[list[dict]], concurrency: int,
          max_tokens: int) -> tuple[dict, list[str]]:
    latencies: dict = {}
    errors: list[str] = []
    lock = threading.Lock()
    todo = iter(enumerate(requests))

    def client_loop() -> None:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=600)
        while True:
            with lock:
                item = next(todo, None)
            if item is None:
                return
            i, messages = item
            start = time.perf_counter()
            try:
                client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens)
                latencies[i] = time.perf_counter() - start
            except Exception as e:  # noqa: BLE001 - every failure is counted and reported
                with lock:
                    errors.append(f"request {i}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=client_loop) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    latencies["wall"] = time.perf_counter() - start
    return latencies, errors


def _wait(url: str, server: subprocess.Popen, log: Path, limit: float = 600) -> list[str]:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"vlmtune serve exited with {server.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/v1/models", timeout=2) as r:
                return [m["id"] for m in json.load(r)["data"]]
        except OSError:
            time.sleep(0.3)
    server.terminate()
    raise SystemExit(f"vlmtune serve did not answer within {limit} s:\n{log.read_text()}")


def _stats(url: str) -> dict[str, int]:
    with urllib.request.urlopen(f"{url}/stats", timeout=10) as r:
        return json.load(r)["batch_sizes"]


if __name__ == "__main__":
    sys.exit(main())
