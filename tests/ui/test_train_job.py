"""The Train tab's child run, without a page: its own session (a Ctrl-C in the server's terminal reaches the
server alone), and the server's shutdown Ctrl-Cs it once and waits while it saves its checkpoint."""

import os
import re
import time

import pytest

from vlmtune.data.demo import make_demo_data

pytestmark = pytest.mark.slow  # a training subprocess stopped by the UI

pytest.importorskip("gradio")


def test_shutdown_stops_the_run_once_and_waits_for_its_checkpoint(tmp_path, tiny_dir):
    from vlmtune.ui.train import TrainJob

    make_demo_data(tmp_path / "data", n_train=8, n_val=0)
    out = tmp_path / "runs" / "r"
    config = tmp_path / "r.yaml"
    config.write_text(f"model:\n  path: {tiny_dir('qwen2_5_vl')}\ndata:\n  train: {tmp_path / 'data' / 'train.jsonl'}\n"
                      f"train:\n  output_dir: {out}\n  max_steps: 1000000\n  save_steps: 100000\n  batch_size: 4\n"
                      "  logging_steps: 1\n  report_to: none\n  progress: false\n")
    job = TrainJob()
    assert job.start(str(config), "train.seed=1").startswith("running (process ")
    assert os.getsid(job.process.pid) != os.getsid(0)
    while "'loss'" not in job.log:  # bounded by the run itself: it either logs a step or exits
        assert job.running, job.log[-3000:]
        time.sleep(0.2)
    job.shutdown()
    assert job.process.returncode == 130 and job.status() == "exited with code 130 (interrupted)"
    step = int(re.search(r"interrupted at step (\d+); checkpoint saved: ", job.log).group(1))
    assert (out / "checkpoints" / f"checkpoint-{step}").is_dir()
    assert "train.seed=1" in job.log.splitlines()[0]
