"""A ``vlmtune serve`` subprocess on a free localhost port, as a user starts it, and the run folders it serves."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import torch

from tests.export.ecosystem import make_run
from vlmtune.config import Config, DataConfig, LoraConfig, ModelConfig, TrainConfig

API_KEY = "test-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_runs(base: Path, root: Path) -> tuple[Path, Path]:
    """Two runs of ``base`` with different adapters; the second has its own system prompt and a short context."""
    torch.manual_seed(1)  # lora_A's initial values differ between the runs
    run_a = make_run(base, "qwen2_5_vl", root / "run_a")
    torch.manual_seed(2)
    cfg = Config(model=ModelConfig(path=str(base)),
                 data=DataConfig(train="data/train.jsonl", system="Answer in one word.", max_length=96),
                 lora=LoraConfig(r=4, alpha=8), train=TrainConfig(output_dir=str(root / "run_b")))
    run_b = make_run(base, "qwen2_5_vl", root / "run_b", cfg)
    return run_a, run_b


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


class Server:
    """``vlmtune serve ARGS`` on a free port; stdout and stderr go to ``log``."""

    def __init__(self, args: list[str], log: Path, api_key: str | None = API_KEY):
        self.port, self.log, self.api_key = free_port(), log, api_key
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "VLMTUNE_API_KEY": api_key or ""}
        with log.open("w") as out:
            self.process = subprocess.Popen([sys.executable, "-m", "vlmtune.cli.main", "serve", *args,
                                             "--port", str(self.port)], stdout=out, stderr=subprocess.STDOUT, env=env)
        self._wait()

    def _wait(self, limit: float = 300) -> None:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"vlmtune serve exited with {self.process.returncode}:\n{self.output()}")
            try:
                if httpx.get(f"{self.url}/v1/models", headers=headers, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"vlmtune serve did not answer within {limit} s:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
