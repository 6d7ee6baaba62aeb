"""An image too wide or too tall for the family's image processor (Qwen-VL: over 200:1) is an unusable record
with its reason in `data check --model` and training, and a one-line error in `predict`, never a traceback."""

import json

import pytest
from PIL import Image

from tests.conftest import write_jsonl
from vlmtune.cli.main import main
from vlmtune.config.schema import DataConfig
from vlmtune.data import Renderer
from vlmtune.models import get_family, load_processor
from vlmtune.train.prepare import checked_samples

FAMILY = "qwen2_5_vl"


@pytest.fixture
def data(tmp_path):
    Image.new("RGB", (3000, 10), (200, 30, 30)).save(tmp_path / "strip.png")
    Image.new("RGB", (56, 56), (30, 30, 200)).save(tmp_path / "square.png")
    records = [{"messages": [{"role": "user", "content": [{"type": "image", "image": name},
                                                          {"type": "text", "text": "What colour?"}]},
                             {"role": "assistant", "content": answer}]}
               for name, answer in (("strip.png", "red"), ("square.png", "blue"))]
    return write_jsonl(tmp_path / "d.jsonl", records)


def _reason(tmp_path):
    return (f"image {tmp_path / 'strip.png'} is 3000x10 pixels, an aspect ratio of 300:1; {FAMILY}'s image "
            "processor takes at most 200:1. Crop or pad the image")


def test_data_check_with_a_model_counts_the_record_as_unusable_naming_image_and_ratio(
        data, tmp_path, tiny_dir, capsys):
    assert main(["data", "check", str(data), "--model", str(tiny_dir(FAMILY))]) == 1
    out = capsys.readouterr().out
    assert "2 records, 1 usable, 1 unusable" in out
    assert f"  {data}:1: {_reason(tmp_path)}" in out.splitlines()
    # Stretched to data.image_size, the processor sees that ratio, not the file's.
    assert main(["data", "check", str(data), "--model", str(tiny_dir(FAMILY)), "--image-size", "56", "56",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["usable"] == 2


def test_training_drops_the_record_like_other_unusable_ones(data, tmp_path, tiny_dir):
    spec = get_family(FAMILY)
    renderer = Renderer(load_processor(tiny_dir(FAMILY), spec), spec)
    assert [s.id for s in checked_samples(str(data), DataConfig(train=str(data)), renderer, "data.train")] == \
        [f"{data}:2"]


def test_predict_refuses_in_one_line(tmp_path, tiny_dir, capsys, data):
    assert main(["predict", "--model", str(tiny_dir(FAMILY)), "--image", str(tmp_path / "strip.png"),
                 "--prompt", "What colour?"]) == 2
    err = capsys.readouterr().err.strip()  # refused before any weight loads: nothing else on stderr
    assert err == f"vlmtune predict: error: <prompt>: {_reason(tmp_path)}"
