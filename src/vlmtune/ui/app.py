"""``vlmtune ui``: the web UI's page (Chat, Runs, Data, Train) and its server.

Nothing leaves the machine: no share link, no analytics, no version check, fonts and scripts served locally
(gradio's own files), so the page works on an offline cluster. Reports are served by one route that opens only
the ``eval/report.html`` of a run under the runs folder.
"""

from __future__ import annotations

import os
import sys

# Before gradio is imported: it reads this at import and when a page is built.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import gradio as gr  # noqa: E402
from fastapi import FastAPI, HTTPException  # noqa: E402
from fastapi.responses import FileResponse  # noqa: E402

from . import chat, data, run_info, runs, train  # noqa: E402

TITLE = "vlmtune"


def build_page(runs_dir: Path, engine: Any | None = None, model: str | None = None, config: str | None = None,
               train_config: str | None = None, job: train.TrainJob | None = None) -> gr.Blocks:
    """The page: one tab per stage, each calling what the command line calls. ``engine`` serves the Chat tab,
    ``model`` and ``config`` are the Data tab's defaults, ``train_config`` the Train tab's, ``job`` runs the Train
    tab's training."""
    job = job or train.TrainJob()
    with gr.Blocks(title=TITLE, analytics_enabled=False) as page:
        gr.Markdown(f"# {TITLE}")
        with gr.Tab("Chat", id="chat"):
            chat.build(engine)
        with gr.Tab("Runs", id="runs"):
            runs.build(page, runs_dir)
        with gr.Tab("Data", id="data"):
            data.build(model, config)
        with gr.Tab("Train", id="train"):
            train.build(job, train_config)
    return page


def build_app(page: gr.Blocks, runs_dir: Path) -> FastAPI:
    """The server: the report route, then the page at ``/``."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    root = runs_dir.resolve()

    @app.get("/report/{name:path}")
    def report(name: str) -> FileResponse:
        run = (root / name).resolve()
        # Only a run folder under the runs folder, and only its report: nothing else there is served.
        if (run != root and root not in run.parents) or not (run / "config.yaml").is_file():
            raise HTTPException(404, f"no run {name!r} under {root}")
        path = run_info.report_path(run)
        if path is None:
            raise HTTPException(404, f"run {name!r} has no eval/report.html")
        return FileResponse(path, media_type="text/html")

    return gr.mount_gradio_app(app, page, path="/", footer_links=[], run_history=False, ssr_mode=False,
                               mcp_server=False, show_error=True)


def serve(runs_dir: Path, host: str, port: int, engine: Any | None = None, model: str | None = None,
          config: str | None = None, train_config: str | None = None) -> None:
    """Serve the UI until Ctrl-C; a run started from the Train tab is stopped (Ctrl-C) with it."""
    import uvicorn

    job = train.TrainJob()
    page = build_page(runs_dir, engine, model, config, train_config, job)
    app = build_app(page, runs_dir)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"vlmtune ui: warning: listening on {host}: whoever reaches this port can read files and start "
              "training runs here (the page has no sign-in)", file=sys.stderr, flush=True)
    print(f"vlmtune ui: http://{host}:{port}/  (runs: {runs_dir}; Ctrl-C stops)", flush=True)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        job.shutdown()
