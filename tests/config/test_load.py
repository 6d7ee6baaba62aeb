from pathlib import Path

import pytest

from vlmtune.config import load_config
from vlmtune.core.errors import ConfigError
from vlmtune.demo import demo_config

REPO = Path(__file__).parents[2]
MINIMAL = "model:\n  path: some/model\ndata:\n  train: t.jsonl\n"


def test_unknown_keys_are_named_with_a_suggestion(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(MINIMAL + "train:\n  lerning_rate: 0.1\n  lr: 1e-4\nlora:\n  rank: 4\nevall: {}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert str(path) in message and "3 problem(s)" in message
    assert "train.lerning_rate: unknown key" in message
    assert "lora.rank: unknown key; known: r, alpha, dropout, rslora, targets" in message
    assert "evall: unknown key (did you mean 'eval'?)" in message


def test_dotted_overrides_are_typed_and_validated(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(MINIMAL)
    cfg = load_config(path, ["train.lr=1e-4", "lora.targets=[q_proj, v_proj]", "data.max_pixels=50176"])
    assert cfg.train.lr == 1e-4 and cfg.lora.targets == ["q_proj", "v_proj"] and cfg.data.max_pixels == 50176
    with pytest.raises(ConfigError, match="train.batch_size: .*greater than 0"):
        load_config(path, ["train.batch_size=0"])
    with pytest.raises(ConfigError, match="train.lr: unknown key|train.lrr: unknown key .*'lr'"):
        load_config(path, ["train.lrr=1"])
    with pytest.raises(ConfigError, match="not of the form"):
        load_config(path, ["train.lr"])


def test_missing_required_keys_and_cross_field_rules(tmp_path):
    with pytest.raises(ConfigError, match="model: required key is missing"):
        load_config(None, ["data.train=x.jsonl"])
    with pytest.raises(ConfigError, match="min_pixels .* larger than data.max_pixels"):
        load_config(None, ["model.path=m", "data.train=x", "data.min_pixels=100", "data.max_pixels=10"])


def test_bundled_demo_config_is_the_one_the_demo_runs():
    assert load_config(REPO / "configs" / "demo.yaml") == demo_config(".")
