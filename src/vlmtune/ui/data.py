"""The Data tab: ``vlmtune data check`` of a file, its problems by record, and samples as ``data show`` renders them."""

from __future__ import annotations

import argparse
import contextlib
import io

import gradio as gr

from ..cli import commands
from ..cli.main import build_parser
from ..core.errors import VlmtuneError
from ..data.formats import reader_names
from ..data.settings import read_options
from ..data.show import CLOSE, LEGEND, OPEN, first_samples

TRAINED = "trained"
PROBLEM_COLUMNS = ["record", "field", "problem", "kind"]


def data_args(path: str, config: str = "", model: str = "", format: str = "auto", overrides: str = "") -> list[str]:
    """The ``vlmtune data check`` arguments for the tab's fields."""
    args = ["data", "check", path.strip()]
    if config.strip():
        args += ["--config", config.strip()]
    if model.strip():
        args += ["--model", model.strip()]
    if format and format != "auto":
        args += ["--format", format]
    return args + overrides.split()


def spans(text: str) -> list[tuple[str, str | None]]:
    """``data show``'s text split into ``(piece, "trained" | None)``: the pieces inside its [[ ]] marks are the
    trained tokens."""
    pieces: list[tuple[str, str | None]] = []
    trained, rest = False, text
    while rest:
        mark = CLOSE if trained else OPEN
        head, found, rest = rest.partition(mark)
        if head:
            pieces.append((head, TRAINED if trained else None))
        if found:
            trained = not trained
    return pieces


def check(path: str, config: str, model: str, format: str, overrides: str, n: int):
    """Summary text, problem rows and up to ``n`` shown samples (with a model) for the tab's fields."""
    if not path.strip():
        return "error: give a data file", [], [], ""
    try:
        args = _parse(data_args(path, config, model, format, overrides))
        report = commands.check_report(args)
        samples, note = [], "samples need a model (a model folder, or a config with model.path)"
        if report.samples:
            d, renderer = commands.data_renderer(args, need_model=False)
            if renderer is not None:
                shown, _ = first_samples(args.path, d.format, read_options(d), renderer, int(n),
                                         d.on_too_long == "shrink")
                samples = [(f"{s.id}: {s.text_tokens} text + {s.visual_tokens} visual tokens, "
                            f"{s.trained_tokens} trained", spans(s.text)) for s in shown]
                note = LEGEND
    except (VlmtuneError, FileNotFoundError, FileExistsError, _ArgumentError) as e:
        return f"error: {e}", [], [], ""
    rows = [[p.where, p.field or "", p.problem, p.kind] for p in report.problems]
    return report.summary(), rows, samples, note


class _ArgumentError(ValueError):
    pass


def _parse(argv: list[str]) -> argparse.Namespace:
    """``argv`` parsed as the command line parses it; a bad one raises with argparse's message."""
    parser = build_parser()
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return parser.parse_args(argv)
    except SystemExit:
        raise _ArgumentError(err.getvalue().strip().splitlines()[-1]) from None


def build(model: str | None, config: str | None, max_samples: int = 8) -> None:
    """The tab's components and events, inside an open ``gr.Blocks``."""
    with gr.Row():
        path = gr.Textbox(label="data file (on this machine)", elem_id="vlmtune-data-path", scale=3)
        fmt = gr.Dropdown(["auto", *reader_names()], value="auto", label="format", scale=1)
    with gr.Row():
        cfg = gr.Textbox(config or "", label="run config (optional)", elem_id="vlmtune-data-config")
        mdl = gr.Textbox(model or "", label="model, to count tokens and render samples (optional)",
                         elem_id="vlmtune-data-model")
        overrides = gr.Textbox(label="key=value overrides (optional)")
        n = gr.Slider(1, max_samples, value=2, step=1, label="samples to show")
    run = gr.Button("check", variant="primary", elem_id="vlmtune-data-check")
    summary = gr.Textbox(label="vlmtune data check", lines=8, elem_id="vlmtune-data-summary")
    problems = gr.Dataframe(headers=PROBLEM_COLUMNS, label="problems", interactive=False,
                            elem_id="vlmtune-data-problems", wrap=True)
    note = gr.Markdown()
    shown = gr.State([])

    @gr.render(inputs=shown)
    def _samples(samples):
        for title, pieces in samples:
            gr.HighlightedText(pieces, label=title, color_map={TRAINED: "green"}, combine_adjacent=True,
                               show_legend=True, elem_classes=["vlmtune-sample"])

    run.click(check, [path, cfg, mdl, fmt, overrides, n], [summary, problems, shown, note])
