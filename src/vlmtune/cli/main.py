"""``vlmtune`` command line: one subcommand per stage."""

from __future__ import annotations

import argparse
import logging
import sys

from ..core.errors import VlmtuneError
from ..core.names import TASK_METRICS
from ..quiet import quiet_progress_bars, quiet_third_party
from ..serve.command import add_arguments as serve_arguments
from . import commands
from .os_errors import describe_error


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlmtune", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="fine-tune a model from a YAML config")
    p.add_argument("config", help="YAML config file")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. train.lr=1e-4")
    p.add_argument("--dry-run", action="store_true",
                   help="print the trainable-parameter table per component and exit without training")
    p.add_argument("--resume", nargs="?", const="auto", metavar="auto|CHECKPOINT",
                   help="continue from the newest complete checkpoint of this run (auto) or from CHECKPOINT")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run already in train.output_dir (only files vlmtune wrote are removed)")
    p.add_argument("--force", action="store_true",
                   help="with --resume: continue even though config keys changed that break an exact resume")
    p.set_defaults(run=commands.train)

    p = sub.add_parser("predict", help="generate an answer for an image and a prompt")
    p.add_argument("--model", help="base model: hub id or folder (default: the run config's model.path)")
    p.add_argument("--adapter", help="LoRA adapter folder written by `vlmtune train`")
    _run_config_options(p)
    p.add_argument("--image", action="append", default=[], help="image file (repeat for several)")
    p.add_argument("--prompt", help="the question (default: the run config's data.prompt)")
    p.add_argument("--system", help="system prompt (default: the run config's data.system)")
    p.add_argument("--max-new-tokens", type=int, help="default: eval.max_new_tokens")
    p.add_argument("--min-pixels", type=int)
    p.add_argument("--max-pixels", type=int)
    _image_size_option(p)
    p.set_defaults(run=commands.predict)

    p = sub.add_parser("eval", help="score base and fine-tuned on held-out data; write metrics, predictions, report")
    p.add_argument("--model", help="base model (or a fully fine-tuned one): hub id or folder (default: the run "
                   "config's model.path)")
    p.add_argument("--adapter", help="LoRA adapter folder; the base is the same model with it switched off")
    _run_config_options(p)
    p.add_argument("--base-model", help="separate base checkpoint to compare a fully fine-tuned --model against")
    p.add_argument("--data", help="held-out data file (any readable format; default: the run config's data.val)")
    p.add_argument("--format", help="default: data.format")
    p.add_argument("--task", help=f"picks default metrics (eval.task): {', '.join(TASK_METRICS)}")
    p.add_argument("--metric", action="append", help="metric name (repeat); default: eval.metrics or the task's")
    p.add_argument("--compare-base", action=argparse.BooleanOptionalAction,
                   help="also score the model before fine-tuning (default: eval.compare_base)")
    p.add_argument("--max-new-tokens", type=int, help="default: eval.max_new_tokens")
    p.add_argument("--batch-size", type=int, help="default: eval.batch_size")
    p.add_argument("--max-samples", type=int, help="default: eval.max_samples")
    p.add_argument("--min-pixels", type=int)
    p.add_argument("--max-pixels", type=int)
    _image_size_option(p)
    p.add_argument("--loss-log", help="a run's metrics.jsonl, for the report's loss curves")
    p.add_argument("-o", "--output-dir", required=True)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(run=commands.evaluate)

    p = sub.add_parser("export", help="export a LoRA adapter for serving: clean adapter + model card, or merged")
    p.add_argument("--model", help="base model the adapter was trained on: hub id or folder (default: the run "
                   "config's model.path)")
    p.add_argument("--adapter", required=True, help="adapter folder written by `vlmtune train` (RUN/adapter)")
    _run_config_options(p)
    p.add_argument("-o", "--output", required=True, help="output folder (new or empty)")
    p.add_argument("--merge", action="store_true", help="merge the adapter into the base: a full checkpoint")
    p.add_argument("--base-model-name", help="base named in the exported adapter, e.g. the hub id (default: --model)")
    p.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], help="merged weights' dtype (default: the base's)")
    p.add_argument("--min-pixels", type=int, help="image settings the run trained with (default: the run folder's)")
    p.add_argument("--max-pixels", type=int)
    _image_size_option(p)
    p.set_defaults(run=commands.export)

    p = sub.add_parser("serve", help="serve the base model and its adapters over an OpenAI-compatible HTTP API")
    serve_arguments(p)
    _run_config_options(p)
    _image_size_option(p)
    p.set_defaults(run=commands.serve)

    p = sub.add_parser("bench", help="measure training speed and memory (and the common recipe's with --baseline)")
    p.add_argument("config", help="YAML config file")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. train.batch_size=8")
    p.add_argument("--steps", type=int, default=20, help="measured optimizer steps (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="steps run before measuring (default 3)")
    p.add_argument("--baseline", action="store_true", help="also run the common recipe (datasets.map + "
                   "DataCollatorForSeq2Seq + Trainer, random batches) on the same data and print the ratio")
    p.add_argument("--random-init", nargs="?", const=True, default=False, metavar="CONFIG_JSON",
                   help="random weights from the model's config, or from CONFIG_JSON's architecture (a GPU-sized "
                   "model such as benchmarks/qwen2_5_vl_7b.json) with the checkpoint's processor")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--json", metavar="OUT", help="also write the result as JSON to OUT")
    p.set_defaults(run=commands.bench)

    p = sub.add_parser("estimate", help="estimate GPU memory and step time for full / LoRA / QLoRA, before training")
    p.add_argument("config", help="YAML config file")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. train.batch_size=8")
    p.add_argument("--data", help="data file for sequence lengths (default: the config's data.train)")
    p.add_argument("--gpu", default="H100", help="GPU to estimate for (default H100): B200, H200, H100, H100 PCIe, "
                   "A100, L40S, L4, ...")
    p.add_argument("--architecture", metavar="CONFIG_JSON", help="estimate this architecture (config.json or "
                   "folder) with the checkpoint's processor, e.g. benchmarks/qwen2_5_vl_7b.json")
    p.add_argument("--mfu", type=float, help="model FLOPs utilisation to assume instead of the defaults")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=commands.estimate)

    _add_data_commands(sub)

    p = sub.add_parser("ui", help="web UI: chat with base and tuned side by side, runs, data check, training")
    p.add_argument("--runs", default="runs", help="folder whose run folders the Runs tab lists (default: runs)")
    p.add_argument("--model", help="base model to chat with: hub id or folder (default: the --config's model.path)")
    p.add_argument("--adapter", action="append", default=[], metavar="[NAME=]PATH",
                   help="LoRA adapter to chat with beside the base, under NAME (default: its run's name; repeat "
                   "for several)")
    _run_config_options(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=7860, help="default: 7860")
    p.set_defaults(run=commands.ui)

    config = sub.add_parser("config", help="check a config").add_subparsers(
        dest="config_command", required=True, metavar="ACTION")
    p = config.add_parser("validate", help="list every problem of a config at once; exit 1 if any")
    p.add_argument("config", help="YAML config file")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. train.lr=1e-4")
    p.set_defaults(run=commands.config_validate)

    p = sub.add_parser("make-tiny-model", help="write a tiny random-init model of a family (no download)")
    p.add_argument("--family", required=True, help="transformers model_type, e.g. qwen2_5_vl")
    p.add_argument("out_dir")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=commands.make_tiny_model)

    p = sub.add_parser("demo", help="build the tiny model and demo data, fine-tune, and compare base vs tuned")
    p.add_argument("--root", default=".", help="folder under which demo/ is written")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(run=commands.demo)
    return parser


def _run_config_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="run config to follow (default: RUN/config.yaml of the run whose --adapter or "
                   "--model is given); the command's options win")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides of the run config, e.g. "
                   "data.system='Answer in one word.'")


def _image_size_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image-size", nargs=2, type=_positive_int, metavar=("W", "H"),
                   help="resize every image to exactly W x H pixels before the processor, as the run's "
                   "data.image_size did (stretched, aspect ratio not kept)")


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive whole number of pixels, got {value!r}")
    return number


def _add_data_commands(sub) -> None:
    data = sub.add_parser("data", help="check, convert and split datasets").add_subparsers(
        dest="data_command", required=True, metavar="ACTION")

    def source(p: argparse.ArgumentParser) -> None:
        p.add_argument("path", help="data file (or folder, or dataset_info.json#NAME)")
        _run_config_options(p)
        p.add_argument("--format", help="reader name (default: data.format, auto: detected)")
        p.add_argument("--column", action="append", metavar="FIELD=COLUMN",
                       help="table/HF column for a field: image, prompt, answer, system")
        p.add_argument("--prompt", help="fixed user prompt for rows without a prompt column")
        p.add_argument("--system", help="system prompt for samples that have none")
        p.add_argument("--media-root", help="folder image paths are relative to (default: the data file's)")
        p.add_argument("--allow-outside-root", action="store_true", default=None,
                       help="accept image paths outside the media root (absolute or ..)")

    p = data.add_parser("check", help="report every problem in a dataset, with its line; exit 1 if any")
    source(p)
    p.add_argument("--model", help="checkpoint folder: also count tokens and flag samples over --max-length "
                   "(default: the --config's model.path)")
    p.add_argument("--max-length", type=int, help="token budget per sample (default: data.max_length)")
    p.add_argument("--on-too-long", choices=["drop", "shrink"],
                   help="shrink: count samples over --max-length as usable where downscaling their images makes "
                   "them fit, as data.on_too_long=shrink trains them (default: data.on_too_long; drop and fail: "
                   "each is a problem)")
    p.add_argument("--min-pixels", type=int)
    p.add_argument("--max-pixels", type=int)
    _image_size_option(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=commands.data_check)

    p = data.add_parser("show", help="the first samples as training sees them: chat template text, trained "
                        "tokens marked, token counts")
    source(p)
    p.add_argument("--model", help="checkpoint folder or hub id whose processor renders the samples (default: the "
                   "--config's model.path)")
    p.add_argument("-n", type=int, default=2, help="how many samples (default 2)")
    p.add_argument("--max-length", type=int, help="token budget per sample (default: data.max_length)")
    p.add_argument("--on-too-long", choices=["drop", "shrink"],
                   help="shrink: show samples over --max-length with their images downscaled to fit, as "
                   "data.on_too_long=shrink trains them (default: data.on_too_long; otherwise they are skipped)")
    p.add_argument("--min-pixels", type=int)
    p.add_argument("--max-pixels", type=int)
    _image_size_option(p)
    p.set_defaults(run=commands.data_show)

    p = data.add_parser("convert", help="write a dataset in the canonical messages JSONL form")
    source(p)
    p.add_argument("--to", default="messages", choices=["messages"])
    p.add_argument("-o", "--output", required=True, help="output .jsonl file")
    p.set_defaults(run=commands.data_convert)

    p = data.add_parser("split", help="deterministic train/validation split")
    source(p)
    p.add_argument("--val", type=float, default=0.1, help="validation fraction (default 0.1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output-dir", help="folder for train.jsonl and val.jsonl (default: the input's)")
    p.set_defaults(run=commands.data_split)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse stops collecting `train`'s KEY=VALUE overrides at the first option (`--dry-run a=1 b=2`).
    if extra and getattr(args, "overrides", None) is not None and all("=" in e for e in extra):
        args.overrides += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    quiet_third_party()
    if getattr(args, "no_progress", False):
        quiet_progress_bars()
    try:
        return args.run(args) or 0
    except VlmtuneError as e:  # the user's input, data, config or model: the message says what to change
        return _failed(args, str(e))
    except Exception as e:
        # The file system's errors (a full disk, a read-only folder, a missing file): one line, no traceback.
        message = describe_error(e, args)
        if message is None and not isinstance(e, FileNotFoundError | FileExistsError):
            raise
        return _failed(args, message or str(e))


def _failed(args: argparse.Namespace, message: str) -> int:
    """Print ``vlmtune COMMAND: error: MESSAGE`` and return the exit status of a user error."""
    name = " ".join(filter(None, (args.command, getattr(args, "data_command", None),
                              getattr(args, "config_command", None))))
    print(f"vlmtune {name}: error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
