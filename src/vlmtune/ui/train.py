"""The Train tab: ``vlmtune train CONFIG overrides...`` as a child process, its log live, and Ctrl-C to stop it.

The run is the command line's own: the same process a terminal would start, so the page cannot train otherwise
than ``vlmtune train`` does. Stop sends SIGINT, which finishes the step and saves a checkpoint there (with
``train.save_steps``; see ``train/interrupt.py``).
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path

import gradio as gr

LOG_LIMIT = 200_000
"""Characters of the log kept for the page (the run's own train.log keeps everything)."""
POLL_S = 1.0


def train_command(config: str, overrides: str) -> list[str]:
    """The command line run for the tab's fields (overrides split as a shell splits them)."""
    return [sys.executable, "-m", "vlmtune.cli.main", "train", config.strip(), *shlex.split(overrides)]


class TrainJob:
    """One ``vlmtune train`` child at a time: its output collected by a thread as it comes."""

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None
        self.command: list[str] = []
        self.log = ""
        self._lock = threading.Lock()
        self._reader: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, config: str, overrides: str) -> str:
        """Start the run; the status line it leads to."""
        if self.running:
            return f"a run is already going (process {self.process.pid}): stop it first"
        if not config.strip():
            return "choose a config file"
        if not Path(config.strip()).is_file():
            return f"config not found: {config.strip()}"
        try:
            self.command = train_command(config, overrides)
        except ValueError as e:  # an unclosed quote
            return f"overrides: {e}"
        self.log = "$ vlmtune " + shlex.join(self.command[3:]) + "\n"
        # Unbuffered, so each log line reaches the page when the run writes it.
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        # Its own session: a Ctrl-C in the server's terminal reaches the server alone, which then sends the run
        # exactly one (a second would stop it mid-step, without its checkpoint).
        self.process = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, text=True, bufsize=1, env=env,
                                        errors="replace", start_new_session=True)
        self._reader = threading.Thread(target=self._read, args=(self.process,), daemon=True)
        self._reader.start()
        return self.status()

    def _read(self, process: subprocess.Popen) -> None:
        for line in process.stdout:
            with self._lock:
                self.log = (self.log + line)[-LOG_LIMIT:]
        process.wait()

    def stop(self) -> str:
        """Ctrl-C the run (SIGINT); a second stop stops it at once, as a second Ctrl-C does."""
        if not self.running:
            return self.status()
        self.process.send_signal(signal.SIGINT)
        with self._lock:
            self.log += "[stop: sent Ctrl-C (SIGINT); the run finishes its step and saves a checkpoint]\n"
        return f"stopping (process {self.process.pid})"

    def shutdown(self) -> None:
        """Stop a run as the server stops: Ctrl-C it and wait while it saves its checkpoint (its output still
        read, so it never writes into a closed pipe); a Ctrl-C meanwhile stops it at once."""
        if not self.running:
            return
        print(f"vlmtune ui: stopping the training run (process {self.process.pid}); waiting for its checkpoint "
              "(Ctrl-C again stops it at once)", file=sys.stderr, flush=True)
        self.stop()
        try:
            self.process.wait()
        except KeyboardInterrupt:
            self.process.send_signal(signal.SIGINT)
            self.process.wait()
        self._reader.join(timeout=10)  # its last lines

    def status(self) -> str:
        """One line: what the run is doing or how it ended."""
        if self.process is None:
            return "no run started from this page"
        code = self.process.poll()
        if code is None:
            return f"running (process {self.process.pid})"
        return f"exited with code {code}" + {0: " (finished)", 130: " (interrupted)"}.get(code, "")


def configs(root: Path = Path(".")) -> list[str]:
    """The YAML files under ``configs/`` and ``recipes/`` of the working folder, for the config picker."""
    found = []
    for folder in ("configs", "recipes"):
        found += sorted(str(p) for p in (root / folder).rglob("*.yaml") if p.is_file())
    return found


def build(job: TrainJob, config: str | None) -> None:
    """The tab's components and events, inside an open ``gr.Blocks``."""
    choices = configs()
    chosen = config or (choices[0] if choices else None)
    if chosen and chosen not in choices:
        choices.insert(0, chosen)
    with gr.Row():
        path = gr.Dropdown(choices, value=chosen, label="config file", allow_custom_value=True,
                           elem_id="vlmtune-train-config", scale=2)
        overrides = gr.Textbox(label="key=value overrides (space-separated)", elem_id="vlmtune-train-overrides",
                               scale=3)
    with gr.Row():
        start = gr.Button("start", variant="primary", elem_id="vlmtune-train-start")
        stop = gr.Button("stop (Ctrl-C: saves a checkpoint)", variant="stop", elem_id="vlmtune-train-stop")
    status = gr.Textbox(job.status(), label="status", interactive=False, elem_id="vlmtune-train-status")
    log = gr.Textbox(job.log, label="log", lines=20, max_lines=20, autoscroll=True, interactive=False,
                     elem_id="vlmtune-train-log")
    start.click(job.start, [path, overrides], [status])
    stop.click(job.stop, None, [status])

    def poll(shown: str):
        now = job.log
        return (gr.skip() if now == shown else now), job.status()

    gr.Timer(POLL_S).tick(poll, [log], [log, status], show_progress="hidden")
