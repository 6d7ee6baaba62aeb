"""``vlmtune estimate``: before any GPU is used, what a config will cost: visual tokens per image, sequence lengths
of the data, trainable parameters (the model built on the meta device: no weights are read), and peak GPU memory
and step time for full fine-tuning, LoRA and QLoRA on a chosen GPU.

Memory (bytes; ``b`` = bytes per weight of the model dtype, 2 for bf16)::

    weights      = params · b                       QLoRA: language-model Linear weights at 0.516 (NF4 + double-
                                                      quantised block scales), the rest at b
    train state  full: trainable · 3b               gradient + AdamW's two moments, in the weights' dtype
                 LoRA: adapter · 16                 fp32 adapter (PEFT keeps adapters in fp32), gradient, 2 moments
    activations  L · T · (6h + 2·kv + 4i) · b       saved per decoder layer and token (norm inputs/outputs, q/k/v,
                                                      attention output, gate/up/act/product of the MLP; FlashAttention
                                                      / SDPA keep no s² matrix); k = 6 + 2·kv/h + 4·i/h
                 with gradient checkpointing: L · T · h · b + T · (6h + 2·kv + 4i) · b (layer inputs + one layer)
    logits       T_text · V · (b + 8)               logits, their fp32 copy for the loss, its gradient; vlmtune
                                                      computes them only where an answer token is predicted, at most
                                                      the batch's text tokens (never image tokens)
    overhead     1 GiB                              CUDA context, cuBLAS workspace (fragmentation adds 5-15 % more)

``T`` = padded tokens of the largest batch (from the batch plan over the data; without data every sample is
taken at ``data.max_length``), ``L, h, kv, i, V`` = the language model's layers, hidden size, key/value width,
MLP width and vocabulary. A frozen vision tower keeps no activations (it runs without gradient).

Step time = FLOPs / (peak · MFU): FLOPs of the mean batch by :mod:`.flops` (6·N·tokens where weights train, 4·N
where frozen weights pass gradients, 2·N forward-only), peak = the GPU's dense bf16 peak (:mod:`.gpus`), MFU an
assumption (:data:`MFU`) to replace with one measured by ``vlmtune bench`` on the card.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..config import Config, Method
from ..core.errors import ConfigError
from ..core.sample import ImagePart, Message, Sample, TextPart
from ..data import Renderer
from ..data.check import check_dataset
from ..data.mix import train_sources
from ..data.settings import read_options
from ..models import resolve_dtype
from ..train.lora import parameter_table
from ..train.prepare import prepare
from ..train.sampler import LengthGroupedBatchSampler
from .arch import architecture_config, meta_model
from .flops import matmul_weights, step_tokens, train_flops
from .gpus import Gpu, find_gpu, gpu_names

TYPICAL_SIZES = ((224, 224), (448, 448), (640, 480), (1024, 768), (1280, 720), (1920, 1080))
MFU = {Method.FULL: 0.40, Method.LORA: 0.35, Method.DORA: 0.35, Method.QLORA: 0.20}
"""Assumed model-FLOPs utilisation: bf16 training of a 7B model with FlashAttention commonly reaches 35-45 % of an
H100's dense peak; LoRA's small adapter matmuls run less efficiently, and QLoRA dequantises every 4-bit weight on
each use. Assumptions, not measurements: ``--mfu`` replaces them."""
NF4_BYTES = 0.5 + (8 / 64 + 32 / (64 * 256)) / 8
"""4 bits per weight, an 8-bit scale per block of 64 and an fp32 scale per 256 blocks (double quantisation)."""
ADAPTER_BYTES = 16
OVERHEAD_BYTES = 2**30
GIB = 2**30


def estimate(cfg: Config, data: str | None = None, gpu_name: str = "H100", mfu: float | None = None,
             architecture: str | None = None) -> dict[str, Any]:
    """Everything ``vlmtune estimate`` prints, as a dict (see the module docstring for the formulas).

    ``architecture``: a config.json or folder whose architecture replaces ``cfg.model.path``'s (its processor and
    data rendering stay), e.g. a 7B config estimated with a tiny checkpoint's processor.
    """
    gpu = find_gpu(gpu_name)
    if gpu is None:
        raise ConfigError(f"--gpu {gpu_name!r}: unknown; known: {', '.join(gpu_names())}")
    prepared = prepare(cfg, splits=())  # the data below is counted, not filtered: its unusable records are shown
    spec, renderer = prepared.spec, prepared.renderer
    result: dict[str, Any] = {"model": cfg.model.path, "family": spec.name, "gpu": gpu.name,
                              "visual_tokens_per_image": visual_tokens(renderer)}
    lengths = _data_lengths(cfg, renderer, data, result)

    config = architecture_config(cfg.model.path, architecture)
    dtype = torch.bfloat16 if cfg.model.dtype == "auto" else resolve_dtype(cfg.model.dtype)
    shape = _shape(config)
    batches = _batches(cfg, lengths)
    result["batch"] = batches
    result["model_shape"] = shape
    methods: dict[str, Any] = {}
    for method in (Method.FULL, Method.DORA if cfg.train.method.dora else Method.LORA, Method.QLORA):
        # Counted on unquantised meta weights: 4-bit storage changes no shape, _memory prices it.
        model = meta_model(cfg, spec, config, dtype, method.unquantized)
        table = parameter_table(model, spec)
        weights = matmul_weights(model, spec)
        memory = _memory(method, model, spec, shape, batches, dtype, cfg)
        tokens = step_tokens(batches["mean_tokens"], batches["mean_visual"], shape["patches_per_visual_token"])
        flops = train_flops(weights, tokens, cfg.train.gradient_checkpointing) * cfg.train.grad_accum
        used_mfu = mfu if mfu is not None else MFU[method]
        methods[method.value] = {
            "parameters": {c: {"trainable": t, "total": n} for c, (t, n) in table.items()},
            "trainable": sum(t for t, _ in table.values()), "total": sum(n for _, n in table.values()),
            "memory_gib": {k: v / GIB for k, v in memory.items()},
            "fits": memory["total"] <= gpu.memory_gib * GIB,
            "flops_per_step": flops, "mfu": used_mfu,
            "step_s": flops / (gpu.bf16_tflops * 1e12 * used_mfu),
        }
        del model
    result["methods"] = methods
    return result


def visual_tokens(renderer: Renderer, sizes=TYPICAL_SIZES) -> dict[str, int]:
    """``"WxH"`` -> visual tokens of one such image at the processor's pixel limits."""
    probe = Sample(messages=(Message("user", (ImagePart(Path("probe.png")), TextPart("?"))),
                             Message("assistant", (TextPart("."),))), id="probe")
    return {f"{w}x{h}": renderer.count_tokens(probe, [(w, h)])[1] for w, h in sizes}


def _data_lengths(cfg: Config, renderer: Renderer, data: str | None, result: dict) -> list[int] | None:
    path = data or train_sources(cfg.data)[0].files[0]  # several sources: the lengths of the first one's first file
    if not Path(path).exists():
        result["data"] = None
        return None
    report = check_dataset(path, cfg.data.format, read_options(cfg.data), renderer,
                           shrink=cfg.data.on_too_long == "shrink")
    result["data"] = {"file": str(path), "samples": len(report.samples), "unusable": len(report.problems),
                      "images_per_sample": report.images / max(1, len(report.samples)),
                      "tokens": report.length_stats()}
    return report.lengths or None


def _batches(cfg: Config, counts: list[tuple[int, int]] | None) -> dict[str, Any]:
    """Largest padded batch (memory) and mean real tokens per batch (time), from the run's own batch plan."""
    t = cfg.train
    if counts is None:
        n = (t.max_tokens_per_batch // cfg.data.max_length if t.max_tokens_per_batch else t.batch_size) or 1
        return {"source": f"no data: {n} samples of data.max_length={cfg.data.max_length}",
                "max_padded_tokens": n * cfg.data.max_length, "mean_tokens": n * cfg.data.max_length,
                "max_text_tokens": n * cfg.data.max_length, "mean_visual": 0.0, "mean_samples": n}
    lengths = [text + visual for text, visual in counts]
    if t.group_by_length or t.max_tokens_per_batch:
        plan = LengthGroupedBatchSampler(lengths, None if t.max_tokens_per_batch else t.batch_size,
                                         t.max_tokens_per_batch, t.seed).plan(0)
        source = "the run's length-grouped batch plan"
    else:  # random batches: the worst case puts the longest samples together
        order = sorted(range(len(lengths)), key=lengths.__getitem__, reverse=True)
        plan = [order[i:i + t.batch_size] for i in range(0, len(order), t.batch_size)]
        source = "random batches (largest: the longest samples together)"
    return {"source": source, "max_padded_tokens": max(len(b) * max(lengths[i] for i in b) for b in plan),
            "max_text_tokens": max(len(b) * max(counts[i][0] for i in b) for b in plan),
            "mean_tokens": sum(lengths) / len(plan), "mean_visual": sum(v for _, v in counts) / len(plan),
            "mean_samples": len(lengths) / len(plan)}


def _shape(config) -> dict[str, Any]:
    text = config.get_text_config()
    h, heads = text.hidden_size, text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or h // heads
    kv = (getattr(text, "num_key_value_heads", None) or heads) * head_dim
    vision = getattr(config, "vision_config", None)
    merge = getattr(vision, "spatial_merge_size", None) or 1
    return {"layers": text.num_hidden_layers, "hidden": h, "kv_width": kv, "intermediate": text.intermediate_size,
            "vocab": text.vocab_size, "k": 6 + 2 * kv / h + 4 * text.intermediate_size / h,
            "patches_per_visual_token": merge**2,
            "vision_layers": getattr(vision, "depth", None) or getattr(vision, "num_hidden_layers", 0),
            "vision_hidden": getattr(vision, "embed_dim", None) or getattr(vision, "hidden_size", 0)}


def _memory(method: Method, model, spec, shape: dict, batches: dict, dtype: torch.dtype, cfg: Config
            ) -> dict[str, float]:
    tokens = batches["max_padded_tokens"]
    b = torch.finfo(dtype).bits / 8
    moments = 2 if "8bit" in cfg.train.optimizer else 2 * b
    quantised = set()
    if method.quantized:  # bitsandbytes replaces the frozen Linear layers of the language model
        quantised = {id(m.weight) for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)
                     and "lora_" not in name and spec.component_of(name.removeprefix("base_model.model.")
                                                                   .replace(".base_layer", "")) == "language"}
    weights = state = 0.0
    for name, p in model.named_parameters():
        if id(p) in quantised:
            weights += p.numel() * NF4_BYTES
        elif p.requires_grad and "lora_" in name:
            state += p.numel() * ADAPTER_BYTES
        else:
            weights += p.numel() * b
            state += p.numel() * (b + moments) if p.requires_grad else 0
    per_layer = tokens * (6 * shape["hidden"] + 2 * shape["kv_width"] + 4 * shape["intermediate"]) * b
    if cfg.train.gradient_checkpointing:
        activations = shape["layers"] * tokens * shape["hidden"] * b + per_layer
    else:
        activations = shape["layers"] * per_layer
    logits = batches["max_text_tokens"] * shape["vocab"] * (b + 8)
    total = weights + state + activations + logits + OVERHEAD_BYTES
    return {"weights": weights, "train_state": state, "activations": activations, "logits": logits,
            "overhead": OVERHEAD_BYTES, "total": total}


def format_estimate(r: dict[str, Any], gpu: Gpu | None = None) -> str:
    """The estimate as text, formulas included."""
    gpu = gpu or find_gpu(r["gpu"])
    lines = [f"{r['model']} (family {r['family']}) on {gpu.name} ({gpu.memory_gib:g} GiB, dense bf16 "
             f"{gpu.bf16_tflops:g} TFLOP/s)", "", "visual tokens per image (at the processor's pixel limits):"]
    lines.append("  " + "  ".join(f"{size}: {n}" for size, n in r["visual_tokens_per_image"].items()))
    if r["data"]:
        d = r["data"]
        lines += ["", f"data {d['file']}: {d['samples']} usable samples ({d['unusable']} unusable), "
                  f"{d['images_per_sample']:.2f} images per sample; tokens per sample:"]
        for name, s in d["tokens"].items():
            lines.append(f"  {name:<6} min {s['min']:.0f}  median {s['median']:.0f}  mean {s['mean']:.0f}  "
                         f"p95 {s['p95']:.0f}  max {s['max']:.0f}")
    b, s = r["batch"], r["model_shape"]
    lines += ["", f"batches ({b['source']}): largest {b['max_padded_tokens']:.0f} padded tokens, mean "
              f"{b['mean_tokens']:.0f} real tokens and {b['mean_samples']:.1f} samples",
              f"language model: L={s['layers']} h={s['hidden']} kv={s['kv_width']} i={s['intermediate']} "
              f"V={s['vocab']} -> k = 6 + 2kv/h + 4i/h = {s['k']:.1f}", ""]
    header = f"{'':<22}" + "".join(f"{m:>14}" for m in r["methods"])
    lines.append(header)
    rows = [("trainable params", lambda m: f"{m['trainable']:,}"), ("total params", lambda m: f"{m['total']:,}")]
    rows += [(f"{k} GiB", lambda m, k=k: f"{m['memory_gib'][k]:.2f}")
             for k in ("weights", "train_state", "activations", "logits", "overhead", "total")]
    rows += [("fits", lambda m: "yes" if m["fits"] else "NO"),
             ("TFLOP per step", lambda m: f"{m['flops_per_step'] / 1e12:.3g}"),
             ("MFU assumed", lambda m: f"{m['mfu']:.0%}"), ("step time s", lambda m: f"{m['step_s']:.3g}")]
    for label, cell in rows:
        lines.append(f"{label:<22}" + "".join(f"{cell(m):>14}" for m in r["methods"].values()))
    lines += ["", "memory = weights (params x b; QLoRA: language Linear weights at 0.516 B)",
              "       + train state (full: trainable x 3b = gradient + 2 AdamW moments; LoRA: adapter x 16 B in fp32)",
              "       + activations (L x T x (6h + 2kv + 4i) x b; gradient checkpointing: L x T x h x b + one layer)",
              "       + logits (T_text x V x (b + 8): only where answers are predicted, at most the text tokens)",
              "       + 1 GiB overhead; T = padded tokens of the largest batch",
              "step time = FLOPs / (peak x MFU); FLOPs per component and token: 2N forward + 2N gradient through",
              "       frozen or trained weights + 2N_trained weight gradients (vlmtune.perf.flops)",
              "MFU is an assumption (--mfu replaces it): measure it on the card with vlmtune bench"]
    return "\n".join(lines)
