"""LLaMA-Factory's video demo data (``mllm_video_demo``) trains through ``vlmtune train`` on the Qwen2-VL families."""

import json
import math

import pytest
import yaml

from tests.data.video_clips import LLAMAFACTORY_DEMO as DEMO
from vlmtune.cli.main import main

pytestmark = pytest.mark.slow  # two training runs with video samples


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
def test_llamafactory_video_demo_trains_two_steps(family, tiny_dir, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"model": {"path": str(tiny_dir(family))},
                                      "data": {"train": f"{DEMO}#mllm_video_demo", "on_bad_record": "fail"}}))
    run = tmp_path / "run"
    status = main(["train", str(config), f"train.output_dir={run}", "train.max_steps=2", "train.batch_size=2",
                   "train.progress=false", "train.report_to=none", "train.logging_steps=1"])
    metrics = json.loads((run / "metrics.json").read_text())
    assert (status, metrics["steps"], metrics["family"]) == (0, 2, family)
    losses = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()
              if '"loss"' in line]
    assert len(losses) == 2 and all(math.isfinite(loss) and loss > 0 for loss in losses)
