"""The typed run configuration. Defaults live here (the dpo and grpo sections in stages.py) and only there;
unknown keys are errors."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt, field_validator, model_validator

from ..core.names import METRIC_NAMES, TASK_METRICS
from .method import Method
from .section import Section
from .sources import DataSource
from .stages import DpoConfig, GrpoConfig


class ModelConfig(Section):
    path: str
    """Hub id or local folder of the checkpoint (the same loading code for both)."""
    dtype: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """auto: bf16 on a GPU that supports it, fp32 otherwise (CPU)."""
    components: dict[Literal["vision", "projector", "language", "lm_head"], list[str]] | None = None
    """Module-path prefixes of components, e.g. ``{vision: [model.vision_model], projector: [model.aligner]}``
    (the longest matching prefix wins): settles the split of a model no registered family describes where vlmtune
    cannot tell its parts apart, and replaces a family's prefixes for the components named."""
    adapter: str | None = None
    """A LoRA adapter to continue training (a run's ``adapter/`` folder, or the run folder holding it), e.g. a
    supervised run before preference tuning: its weights load trainable over ``path`` and its own targets and rank
    replace ``lora.*``. None: new adapters from ``lora``."""


class DataConfig(Section):
    train: str | list[str] | list[DataSource]
    """A data file or a glob; a list of files or globs (the shards of one dataset); or a list of
    ``{path, weight, format}`` sources mixed by weight (see README, "Large datasets")."""
    val: str | None = None
    format: str = "auto"
    min_pixels: int | None = Field(default=None, gt=0)
    """Per-image pixel floor; None keeps the checkpoint processor's value."""
    max_pixels: int | None = Field(default=None, gt=0)
    """Per-image pixel cap (bounds visual tokens per image); None keeps the processor's value."""
    image_size: tuple[PositiveInt, PositiveInt] | None = None
    """(width, height) every image is resized to (stretched, aspect ratio not kept) before the processor, like
    qwen-vl-utils' resized_width/resized_height; the processor may still round it to its patch grid. None: the
    processor's own resizing."""
    video_fps: float = Field(default=2.0, gt=0)
    """Frames a second sampled from each video (qwen-vl-utils' FPS), within the family's frame limits."""
    video_max_frames: int | None = Field(default=None, gt=0)
    """Most frames sampled from one video; None: the checkpoint's video processor's max_frames (768)."""
    video_max_pixels: int | None = Field(default=None, gt=0)
    """Pixel cap of each video frame; None: the video processor's own (its size's longest_edge)."""
    video_total_pixels: int | None = Field(default=None, gt=0)
    """Pixel budget of a whole video (qwen-vl-utils' total_pixels): each frame is capped at its share, twice this
    over the frame count, never below 1.05 x the processor's min pixels. None: no budget."""
    max_length: int = Field(default=4096, gt=0)
    """Longest rendered sample in tokens, visual tokens included. Longer samples are never cut (see on_too_long)."""
    cache_in_memory: bool = False
    """Keep each rendered sample (pixel tensors included) in RAM after its first epoch: fast for small
    sets, too much memory for large high-resolution ones."""
    cache_dir: str | None = "auto"
    """Folder where rendered samples (ids, labels, pixel tensors) are kept on disk and reused by later epochs and
    runs; keyed by sample content, image file size and mtime, processor settings, image_size and vlmtune version.
    auto: RUN/cache under train.output_dir (kept by --overwrite and --resume), filled up to a quarter of the disk's
    free space, when the run passes over its samples more than once (train.epochs above 1, or train.max_steps
    set); a one-pass run renders each sample once and writes nothing, since writing a sample's pixel tensors costs
    more than rendering it. null: render every epoch."""
    prefetch: Literal["auto"] | bool = "auto"
    """Render the next batches in a background thread while the model trains on this one (no effect with
    train.dataloader_workers). auto: when the model trains on a GPU or another accelerator, whose training thread
    mostly waits on the device; not on CPU, where the model's own operations use every core and a second thread
    slows them more than it saves."""
    columns: dict[str, str] = Field(default_factory=dict)
    """Table/HF-dataset columns: canonical field (image, prompt, answer, system) -> column name."""
    prompt: str | None = None
    """Fixed user prompt for tables without a prompt column (e.g. image_path,caption)."""
    system: str | None = None
    """System prompt added to samples that have none."""
    media_root: str | None = None
    """Folder image paths are relative to; default: each data file's folder."""
    allow_outside_root: bool = False
    """Accept image paths that resolve outside the media root (absolute paths, ``..``)."""
    on_bad_record: Literal["drop", "fail"] = "drop"
    """A record that cannot be used (malformed, image missing or corrupt): drop it and report the count, or
    stop. Training refuses to start when no record is usable."""
    image_in_every_batch: Literal["auto"] | bool = "auto"
    """Give a batch in which no sample has an image one small placeholder image, masked out of attention and loss,
    so the vision tower runs on every batch: under ZeRO-3 / FSDP a rank that skipped it would hang the others, and
    DDP with a training vision tower fails. auto: on when several processes train and some sample has no image."""
    on_too_long: Literal["drop", "fail", "shrink"] = "drop"
    """A sample over max_length (visual tokens included): drop it and report the count, stop, or (shrink) keep it
    with its images downscaled to the largest size at which it fits (one factor for all its images, aspect ratio
    kept, none below min_pixels), dropping only samples that do not fit even so (text too long, images already at
    min_pixels, or a processor with fixed-size or tiled images, e.g. LLaVA). It is never truncated: a cut inside
    the image tokens breaks the model's inputs."""
    streaming: bool = False
    """Read data.train as a stream: records are read, checked and rendered as training reaches them, never all held
    in memory (sources mixed by weight draw by draw). Needs train.max_steps (a stream has no known length)."""
    check_samples: int = Field(default=1000, gt=0)
    """With streaming: records checked before training starts (the rest are checked as they are read, with the same
    rules, and counted in metrics.json)."""

    @model_validator(mode="after")
    def _pixels_ordered(self) -> DataConfig:
        if self.min_pixels and self.max_pixels and self.min_pixels > self.max_pixels:
            raise ValueError(f"data.min_pixels ({self.min_pixels}) is larger than data.max_pixels "
                             f"({self.max_pixels}); lower data.min_pixels or raise data.max_pixels")
        return self


ComponentTargets = Literal["all-linear", "full"] | list[str]


class LoraConfig(Section):
    r: int = Field(default=8, gt=0)
    alpha: int = Field(default=16, gt=0)
    dropout: float = Field(default=0.0, ge=0, lt=1)
    rslora: bool = False
    """Scale adapters by alpha/sqrt(r) instead of alpha/r (rank-stabilised LoRA)."""
    targets: Literal["all-linear"] | list[str] | dict[Literal["language", "vision", "projector"],
                                                       ComponentTargets] = "all-linear"
    """Per component: "all-linear", leaf names such as [q_proj, v_proj], "full" (train the component's own
    weights, no adapter) or [] (frozen). A bare value or list means the language model only, e.g.
    ``{language: [q_proj, v_proj], vision: [], projector: full}``. Names resolve to exact module paths inside
    their component, so a language target never lands on a vision layer of the same name."""

    def by_component(self) -> dict[str, ComponentTargets]:
        """Targets of every component, filled with the defaults (language all-linear, others frozen)."""
        targets = self.targets if isinstance(self.targets, dict) else {"language": self.targets}
        return {"language": targets.get("language", []), "vision": targets.get("vision", []),
                "projector": targets.get("projector", [])}


class QuantizationConfig(Section):
    """4-bit weights of the language model for QLoRA (bitsandbytes; CUDA only)."""

    components: list[Literal["language", "vision", "projector"]] = ["language"]
    """Components whose linear layers are stored in 4 bits. The output head always stays in full precision; the
    vision tower and projector do by default (they are small, and quantising them costs accuracy)."""
    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True
    compute_dtype: Literal["bf16", "fp16", "fp32"] = "bf16"

    @model_validator(mode="after")
    def _language_quantised(self) -> QuantizationConfig:
        if "language" not in self.components:
            raise ValueError(f"quantization.components ({self.components}) must include language: QLoRA trains "
                             "adapters over the 4-bit language model")
        return self


class FreezeConfig(Section):
    """Components whose own weights stay fixed in full fine-tuning. With LoRA, every component without an
    adapter is frozen unless ``lora.targets`` says ``full`` for it or its switch here is false."""

    vision: bool = True
    projector: bool | None = None
    """None: trained in full fine-tuning, frozen with LoRA."""
    language: bool = False


class TrainConfig(Section):
    output_dir: str = "runs/run"
    stage: Literal["sft", "dpo", "grpo"] = "sft"
    """sft: supervised, next-token loss on the answers; dpo: preference tuning on chosen/rejected answer pairs
    (TRL's DPOTrainer, settings in ``dpo``); grpo: reinforcement fine-tuning on sampled answers scored by the
    grpo.rewards (TRL's GRPOTrainer; start it from an SFT run's adapter, model.adapter)."""
    method: Method = Method.LORA
    """lora / dora (weight-decomposed LoRA) / qlora (LoRA over 4-bit weights, CUDA only): adapters on
    lora.targets; full: every weight of the components not frozen (see freeze) trains."""
    epochs: float = Field(default=1.0, gt=0)
    max_steps: int = -1
    """Stop after this many optimizer steps (-1: run all epochs)."""
    batch_size: int = Field(default=1, gt=0)
    """Per-device batch size."""
    grad_accum: int = Field(default=1, gt=0)
    lr: float = Field(default=2e-4, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    warmup_steps: int = Field(default=0, ge=0)
    """Optimizer steps of linear warmup from 0 to train.lr."""
    warmup_ratio: float | None = Field(default=None, gt=0, lt=1)
    """Warmup as a share of all optimizer steps, ceil(ratio x total), instead of warmup_steps."""
    scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "cosine"
    max_grad_norm: float = Field(default=1.0, gt=0)
    eval_steps: int | None = Field(default=None, gt=0)
    """Validation loss every N optimizer steps (needs data.val); None: only at the end."""
    eval_epochs: int | None = Field(default=None, gt=0)
    """Validation loss every N epochs instead of eval_steps: every N x (optimizer steps an epoch, counted from
    the usable samples once the data is read), so it falls on the ends of epochs N, 2N, ..."""
    logging_steps: int = Field(default=5, gt=0)
    seed: int = 42
    progress: bool = True
    autocast: bool = True
    """With model.dtype bf16 or fp16: compute under autocast in that dtype (mixed precision). false: no autocast,
    every operation in the dtype of its weights, as a plain Trainer without bf16=True runs a bf16 model."""
    tf32: bool | None = None
    """TF32 matrix multiplies on NVIDIA Ampere or newer GPUs (faster fp32 matmuls at 10-bit mantissa precision);
    None leaves PyTorch's setting. No effect without CUDA."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: much less memory, about a third more compute."""
    compile: bool = False
    """Compile the model with torch.compile (the Trainer's torch_compile, inductor backend). Its first steps, and
    each new batch shape, pay for compiling; worth it on a GPU for long runs of similar shapes, rarely on CPU."""
    optimizer: Literal["auto", "adamw_torch", "adamw_torch_fused", "adamw_8bit", "paged_adamw_8bit"] = "auto"
    """auto: fused AdamW on CUDA, plain AdamW on CPU; the 8-bit ones need bitsandbytes."""
    save_steps: int | None = Field(default=None, gt=0)
    """Write a checkpoint (weights, optimizer, scheduler, RNG, data position) every N steps; None: none."""
    save_total_limit: int | None = Field(default=2, gt=0)
    """Checkpoints kept: the newest ones, plus the best by validation loss when there is a data.val; None keeps
    every checkpoint."""
    early_stopping_patience: int | None = Field(default=None, gt=0)
    """Stop after this many validations without improvement (needs data.val, eval_steps and save_steps)."""
    best_by: str = "loss"
    """What "best" means for the checkpoint kept beside the newest ones, and for early stopping: the validation
    loss (lower is better), or a metric of eval.metrics / the eval.task (higher is better), e.g. exact_match:
    each validation then also generates answers for the held-out samples (the first eval.max_samples) and logs
    eval_<metric> for every metric of the task."""
    report_to: list[str] | Literal["auto", "none"] = "auto"
    """auto: TensorBoard into RUN/tensorboard when installed; or a list of transformers integrations
    (tensorboard, wandb, mlflow, swanlab), each used only if installed."""
    trace_samples: bool = False
    """Write the sample ids of every batch, per process, to RUN/samples.rank<R>.jsonl."""
    group_by_length: bool = True
    """Batch samples of similar length (text + visual tokens, counted before training) so batches hold little
    padding; batches still come in random order, reshuffled each epoch. false: random batches."""
    max_tokens_per_batch: int | None = Field(default=None, gt=0)
    """Instead of batch_size samples, fill each batch up to this many tokens counting padding (samples x longest);
    short samples then share a batch in larger numbers. Implies grouping by length."""
    packing: bool = False
    """Concatenate each batch's samples into one row without padding (padding-free packing): positions restart
    at every sample (Qwen-VL's 3-D M-RoPE computed per sample) and attention never crosses samples. batch_size
    samples form a pack; with max_tokens_per_batch a pack fills up to that many tokens. Every family but Gemma 3;
    meant for GPUs with FlashAttention 2, slower on CPU (see README)."""
    dataloader_workers: int = Field(default=0, ge=0)
    """Processes rendering batches while the model trains (0: in the training process). Pair with data.cache_dir
    rather than data.cache_in_memory, whose cache each worker would hold separately."""

    @model_validator(mode="after")
    def _one_way_each(self) -> TrainConfig:
        if self.warmup_ratio is not None and self.warmup_steps:
            raise ValueError(f"train.warmup_steps ({self.warmup_steps}) and train.warmup_ratio ({self.warmup_ratio}) "
                             "both set the warmup; keep one")
        if self.eval_steps is not None and self.eval_epochs is not None:
            raise ValueError(f"train.eval_steps ({self.eval_steps}) and train.eval_epochs ({self.eval_epochs}) both "
                             "set when to validate; keep one")
        return self


TASKS = tuple(TASK_METRICS)
"""eval.task values: the tasks `vlmtune.core.names.TASK_METRICS` gives default metrics for."""


class EvalConfig(Section):
    task: Literal[TASKS] = "vqa"  # type: ignore[valid-type]
    """Picks the default metrics: vqa (exact match, VQA accuracy), chart_qa (relaxed accuracy), doc_vqa (ANLS),
    extraction (JSON field F1, tree accuracy), grounding (IoU, accuracy@0.5, click accuracy), caption (BLEU-4,
    ROUGE-L, CIDEr)."""
    metrics: list[str] | None = None
    """Metric names instead of the task's defaults."""
    compare_base: bool = True
    """Also score the model before fine-tuning (the adapter switched off, or the base checkpoint)."""
    max_new_tokens: int = Field(default=16, gt=0)
    batch_size: int = Field(default=8, gt=0)
    max_samples: int | None = Field(default=None, gt=0)
    """Score only the first N held-out samples."""
    at_end: bool = True
    """Generate on data.val after training; write metrics.json, predictions.jsonl and report.html to RUN/eval."""

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, metrics: list[str] | None) -> list[str] | None:
        unknown = [m for m in metrics or () if m not in METRIC_NAMES]
        if unknown:
            raise ValueError(f"unknown metric(s) {', '.join(unknown)}; known: {', '.join(sorted(METRIC_NAMES))}")
        return metrics

    def metric_names(self) -> list[str]:
        return list(self.metrics or TASK_METRICS[self.task])


class Config(Section):
    model: ModelConfig
    data: DataConfig
    lora: LoraConfig = LoraConfig()
    quantization: QuantizationConfig = QuantizationConfig()
    freeze: FreezeConfig = FreezeConfig()
    train: TrainConfig = TrainConfig()
    dpo: DpoConfig = DpoConfig()
    eval: EvalConfig = EvalConfig()
    grpo: GrpoConfig = GrpoConfig()

    @model_validator(mode="after")
    def _best_by_a_scored_metric(self) -> Config:
        best, scored = self.train.best_by, self.eval.metric_names()
        if best != "loss" and best not in scored:
            raise ValueError(f"train.best_by {best!r} is neither loss nor a metric of this run "
                             f"({', '.join(scored)}: eval.metrics or the defaults of eval.task {self.eval.task})")
        return self
