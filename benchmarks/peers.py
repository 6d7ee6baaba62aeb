"""vlmtune, TRL and LLaMA-Factory side by side: the same model, data and LoRA through each, one table.

    python benchmarks/peers.py --out /tmp/peers                      # tiny Qwen2-VL, 200 samples, 2 torch threads
    python benchmarks/peers.py --out /tmp/peers --real-vocab          # Qwen's 151,936-token vocabulary, hidden 256
    python benchmarks/peers.py --out /tmp/peers --rounds 2 --json /tmp/peers/peers.json

The model is a random-init Qwen2-VL (hidden 128, 2 layers, 2-block vision tower; ``--real-vocab``: hidden 256, 4x
MLP, 151,936-token vocabulary, 80 M parameters, where the LM head dominates as on real checkpoints) with the
project's tiny tokenizer and Qwen2-VL's chat template; the processor is saved with ``max_pixels`` 448x448. The data:
200 samples of ``mixed_images.py`` (one image 56-448 px a side, a 1-40-word answer). Each tool trains one epoch with
LoRA r=64, alpha 16, dropout 0.05 on the language model's linear layers, batch 4, lr 1e-4, fp32, its own defaults
otherwise, in its own subprocess with ``--threads`` torch threads: vlmtune from a plain config (model, data, LoRA,
batch; its defaults decide the rest) in a fresh run folder, TRL 1.16 ``SFTTrainer``, LLaMA-Factory 0.9.5
(``lora_target: all``). TRL and LLaMA-Factory run in virtual environments made (once) under ``--venvs`` with
pinned versions; they are not dependencies of vlmtune.

Reported per tool: samples/s (the Trainer's ``train_samples_per_second`` over the epoch, rendering included where
the tool renders while training: vlmtune and TRL do, LLaMA-Factory tokenises before ``train()``), padding share of
the token slots, real tokens per sample (the same data seen the same way), peak RSS, and the ratio to the best peer.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from mixed_images import MAX_PIXELS, make_images  # noqa: E402

TORCH = ["torch==2.14.1", "torchvision==0.29.1"]
"""The Qwen-VL processors need torchvision; this pair installs from local wheels where the project's Makefile
takes them, and runs on CPU and CUDA alike."""
ENVIRONMENTS = {
    "trl": [*TORCH, "trl==1.16.0", "transformers==5.24.0", "peft==0.21.2", "accelerate==1.15.0"],
    "llamafactory": [*TORCH, "llamafactory==0.9.5", "transformers<=5.6", "peft<=0.18.1", "accelerate<=1.11"],
}
"""LLaMA-Factory 0.9.5 needs transformers <= 5.6, peft <= 0.18.1, accelerate <= 1.11."""
TOOLS = ("vlmtune", "trl", "llamafactory")
MARKER = "vlmtune-peers.json"


def build_model(out: Path, real_vocab: bool) -> Path:
    """The tiny Qwen2-VL of the comparison in ``out`` (reused when there)."""
    if (out / "config.json").is_file():
        return out
    import torch
    import transformers

    from vlmtune.models import get_family, load_processor
    from vlmtune.models.tiny import build_tiny

    spec = get_family("qwen2_vl")
    build_tiny(spec, out)
    config = transformers.AutoConfig.from_pretrained(out)
    hidden = 256 if real_vocab else 128
    text = config.text_config
    text.hidden_size, text.intermediate_size = hidden, 4 * hidden if real_vocab else 2 * hidden
    text.rope_parameters["mrope_section"] = [hidden // 32, hidden * 3 // 64, hidden * 3 // 64]  # sums to head_dim/2
    if real_vocab:
        text.vocab_size = 151_936
    config.vision_config.hidden_size = hidden  # the merger's output feeds the language model
    torch.manual_seed(0)
    model = transformers.Qwen2VLForConditionalGeneration(config)
    model.save_pretrained(out)
    load_processor(out, spec, None, MAX_PIXELS).save_pretrained(out)  # every tool sees 448x448 at most
    return out


def llamafactory_data(data: Path, out: Path) -> Path:
    """The same samples as LLaMA-Factory's sharegpt format, registered in ``dataset_info.json``."""
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for line in data.read_text().splitlines():
        user, assistant = json.loads(line)["messages"]
        records.append({"messages": [{"role": "user", "content": "<image>" + user["content"][1]["text"]},
                                     {"role": "assistant", "content": assistant["content"]}],
                        "images": [str(data.parent / user["content"][0]["image"])]})
    (out / "peers.json").write_text(json.dumps(records))
    (out / "dataset_info.json").write_text(json.dumps({"peers": {
        "file_name": "peers.json", "formatting": "sharegpt", "columns": {"messages": "messages", "images": "images"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}}}))
    return out


def environment(venvs: Path, tool: str) -> Path:
    """The Python of ``tool``'s virtual environment, made and installed with the pinned packages if not yet."""
    if tool == "vlmtune":
        return Path(sys.executable)
    folder, packages = venvs / tool, ENVIRONMENTS[tool]
    python = folder / "bin" / "python"
    marker = folder / MARKER
    if python.is_file() and marker.is_file() and json.loads(marker.read_text()) == packages:
        return python
    print(f"installing {tool} into {folder} (minutes): {' '.join(packages)}", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(folder)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *packages], check=True)
    marker.write_text(json.dumps(packages))
    return python


def run_tool(tool: str, python: Path, spec: dict, work: Path, log: Path) -> dict:
    """One training run of ``tool`` in a subprocess; its measured figures."""
    shutil.rmtree(work, ignore_errors=True)  # a fresh run folder: nothing rendered or cached by an earlier round
    work.mkdir(parents=True)
    spec = {**spec, "work": str(work), "result": str(work / "result.json")}
    (work / "spec.json").write_text(json.dumps(spec))
    threads = str(spec["threads"])
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1", "DISABLE_VERSION_CHECK": "1", "CUDA_VISIBLE_DEVICES": ""}
    if tool != "vlmtune":
        env.pop("PYTHONPATH", None)  # the tool's own environment only
    start = time.perf_counter()
    with open(log, "w") as out:
        code = subprocess.call([str(python), str(HERE / "peer_driver.py"), tool, str(work / "spec.json")],
                               stdout=out, stderr=subprocess.STDOUT, env=env, cwd=work)
    if code != 0 or not (work / "result.json").is_file():
        tail = log.read_text().splitlines()[-5:]
        return {"error": f"exit {code}; see {log}: " + " | ".join(tail)}
    return {**json.loads((work / "result.json").read_text()), "wall_s": time.perf_counter() - start}


def format_table(result: dict) -> str:
    """One line per tool and round: samples/s, padding, tokens per sample, peak RSS, ratio to the best peer."""
    lines = [f"{result['model']}; {result['samples']} samples, batch 4, LoRA r64 a16 on the language model, fp32, "
             f"{result['threads']} torch threads; load average {result['load_average'][0]:.2f} -> "
             f"{result['load_average'][1]:.2f}",
             f"{'tool':<28}{'round':>6}{'samples/s':>11}{'padding':>9}{'tokens/sample':>15}{'peak RSS MB':>13}"
             f"{'vs best peer':>14}"]
    for row in result["runs"]:
        name = f"{row['tool']} {row.get('version', '')}".strip()
        if "error" in row:
            lines.append(f"{name:<28}{row['round']:>6}  failed: {row['error'][:200]}")
            continue
        best = result["best_peer"].get(str(row["round"]))
        ratio = f"{row['samples_per_s'] / best:.2f}x" if best and row["tool"] == "vlmtune" else ""
        padding = f"{row['padding_share']:.1%}" if row.get("padding_share") is not None else "-"
        per_sample = row["real_tokens"] / result["samples"]
        lines.append(f"{name:<28}{row['round']:>6}{row['samples_per_s']:>11.2f}{padding:>9}{per_sample:>15.1f}"
                     f"{row['peak_rss_mb']:>13.0f}{ratio:>14}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="peers", help="work folder: model, data, runs, logs")
    parser.add_argument("--venvs", default=str(Path.home() / ".cache" / "vlmtune-peers"),
                        help="where the TRL and LLaMA-Factory environments are made (default ~/.cache/vlmtune-peers)")
    parser.add_argument("--real-vocab", action="store_true", help="151,936-token vocabulary, hidden 256 (80 M)")
    parser.add_argument("--rounds", type=int, default=1, help="runs of every tool, interleaved (default 1)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of each run (default 2)")
    parser.add_argument("--samples", type=int, default=200, help="training samples (default 200)")
    parser.add_argument("--tools", default=",".join(TOOLS), help=f"comma-separated subset of {','.join(TOOLS)}")
    parser.add_argument("--json", help="also write the result as JSON here")
    args = parser.parse_args()
    tools = [t for t in args.tools.split(",") if t]
    unknown = sorted(set(tools) - set(TOOLS))
    if unknown:
        parser.error(f"--tools: unknown {', '.join(unknown)}; known: {', '.join(TOOLS)}")
    out = Path(args.out).resolve()
    model = build_model(out / ("model-real-vocab" if args.real_vocab else "model"), args.real_vocab)
    data = make_images(out / "data", args.samples, seed=0)
    spec = {"model": str(model), "data": str(data), "threads": args.threads,
            "llamafactory_data": str(llamafactory_data(data, out / "llamafactory-data"))}
    pythons = {tool: environment(Path(args.venvs), tool) for tool in tools}
    load_before = os.getloadavg()[0]
    runs = []
    for round_ in range(1, args.rounds + 1):
        for tool in tools:
            print(f"round {round_}: {tool} ...", flush=True)
            row = run_tool(tool, pythons[tool], spec, out / "runs" / tool, out / f"{tool}.round{round_}.log")
            runs.append({"tool": tool, "round": round_, **row})
            with open(out / "runs.jsonl", "a") as f:  # kept as it goes: a long comparison stopped midway keeps these
                f.write(json.dumps(runs[-1]) + "\n")
            print(f"  {row.get('samples_per_s', row.get('error'))}", flush=True)
    peers = [r for r in runs if r["tool"] != "vlmtune" and "error" not in r]
    best = {str(n): max((r["samples_per_s"] for r in peers if r["round"] == n), default=None)
            for n in range(1, args.rounds + 1)}
    result = {"model": f"{'real-vocabulary' if args.real_vocab else 'tiny'} Qwen2-VL ({model})",
              "samples": args.samples, "threads": args.threads, "load_average": [load_before, os.getloadavg()[0]],
              "best_peer": best, "runs": runs}
    print(format_table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if all("error" not in r for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
