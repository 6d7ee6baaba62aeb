"""The `vlmtune data check` command a failed training names keeps its path whole: split as a shell splits it, it
gives back the exact path, spaces and quotes included."""

import json
import re
import shlex

import pytest

from vlmtune.config.schema import DataConfig
from vlmtune.core.errors import DataError
from vlmtune.data import Renderer
from vlmtune.models import get_family, load_processor
from vlmtune.train.prepare import checked_samples

FAMILY = "qwen2_5_vl"
AWKWARD = "it's a \"model\" dir"


def test_the_data_check_command_named_by_a_failed_training_quotes_its_path(tiny_dir, tmp_path):
    folder = tmp_path / AWKWARD
    folder.mkdir()
    data = folder / "bad.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "bot", "content": "hi"}]}) + "\n")
    spec = get_family(FAMILY)
    renderer = Renderer(load_processor(tiny_dir(FAMILY), spec), spec)
    with pytest.raises(DataError) as caught:
        checked_samples(str(data), DataConfig(train=str(data)), renderer, "data.train")
    [command] = re.findall(r"`(vlmtune data check [^`]*)`", str(caught.value))
    assert shlex.split(command) == ["vlmtune", "data", "check", str(data)]
