"""The Runs tab: every run folder under the runs folder, its config, live loss curve, progress and evaluation."""

from __future__ import annotations

import html
from pathlib import Path
from urllib.parse import quote

import gradio as gr
import pandas as pd

from ..train.run_folder import LOCK_NAME
from . import run_info

REFRESH_S = 2.0
"""How often the selected run is read again while the page is open."""


def curve_frame(run: Path) -> pd.DataFrame:
    """The loss points of ``run`` as the plot takes them: columns step, loss, series."""
    return pd.DataFrame(run_info.loss_points(run), columns=["step", "loss", "series"])


def report_link(root: Path, run: Path) -> str:
    """An HTML link opening the run's report.html (served by the app's report route), or a note without one."""
    if run_info.report_path(run) is None:
        return "<p>no report.html yet (written by the held-out evaluation at the end of a run with data.val)</p>"
    href = "report/" + quote(run_info.run_name(root, run))
    return f'<p><a id="vlmtune-report-link" href="{href}" target="_blank">open report.html</a></p>'


def _snapshot(run: Path) -> tuple:
    """What changes while a run trains: the refresh redraws only when this does."""
    names = ("metrics.jsonl", "metrics.json", "train.log", LOCK_NAME, "eval/metrics.json", "config.yaml")
    stamps = []
    for name in names:
        try:
            stat = (run / name).stat()
            stamps.append((stat.st_mtime_ns, stat.st_size))
        except OSError:
            stamps.append(None)
    return str(run), tuple(stamps)


def build(demo: gr.Blocks, root: Path) -> None:
    """The tab's components and events, inside ``demo`` (open)."""
    def names() -> list[str]:
        return [run_info.run_name(root, r) for r in run_info.find_runs(root)]

    def show(name: str | None, seen: tuple | None = None, force: bool = True):
        known = names()
        # Only a listed run: the name comes from the browser and must not reach other folders.
        run = (root / name) if name in known else None
        if run is None:
            empty = "no run selected" if known else f"no run folder (with config.yaml) under {root}"
            return (empty, pd.DataFrame(columns=["step", "loss", "series"]), [], "", "", None)
        snapshot = _snapshot(run)
        if not force and snapshot == seen:
            return (gr.skip(),) * 5 + (seen,)
        config = (run / "config.yaml").read_text(encoding="utf-8", errors="replace")
        state = f"**{html.escape(name)}**: {run_info.progress(run)}"
        return (state, curve_frame(run), run_info.eval_rows(run), config, report_link(root, run), snapshot)

    first = next(iter(names()), None)
    with gr.Row():
        choice = gr.Dropdown(names(), value=first, label=f"run (under {root})", elem_id="vlmtune-run", scale=4)
        refresh = gr.Button("refresh the list", scale=1)
    state = gr.Markdown(elem_id="vlmtune-run-state")
    plot = gr.LinePlot(x="step", y="loss", color="series", label="loss", elem_id="vlmtune-loss", height=320)
    metrics = gr.Dataframe(headers=["metric", "base", "tuned", "n"], label="held-out evaluation (eval/metrics.json)",
                           interactive=False, elem_id="vlmtune-eval")
    link = gr.HTML()
    config = gr.Code(language="yaml", label="config.yaml", interactive=False, max_lines=30)
    seen = gr.State(None)
    outputs = [state, plot, metrics, config, link, seen]
    choice.change(show, [choice], outputs)
    def relist(current: str | None):
        known = names()
        return gr.update(choices=known, value=current if current in known else next(iter(known), None))

    refresh.click(relist, [choice], [choice])
    timer = gr.Timer(REFRESH_S)
    timer.tick(lambda name, before: show(name, before, force=False), [choice, seen], outputs,
               show_progress="hidden")
    demo.load(show, [choice], outputs)
