"""Commands vlmtune prints for the user to copy keep their paths whole: split as a shell splits them, they give
back the exact path, spaces and quotes included."""

import json
import re
import shlex

import pytest

from tests.export.ecosystem import make_run
from vlmtune.cli.main import main
from vlmtune.config.schema import DataConfig
from vlmtune.data import DataError, Renderer
from vlmtune.models import get_family, load_processor
from vlmtune.train.prepare import checked_samples

FAMILY = "qwen2_5_vl"
AWKWARD = "it's a \"model\" dir"


def _block_after(text: str, heading: str) -> str:
    """The first line of the first fenced block after ``heading``."""
    return text.split(heading, 1)[1].split("```\n", 1)[1].splitlines()[0]


def test_the_model_cards_vllm_and_curl_commands_quote_names_and_paths(tiny_dir, tmp_path):
    run = make_run(tiny_dir(FAMILY), FAMILY, tmp_path / "run", min_pixels=3136)
    base = f"/srv/{AWKWARD}/base"
    out = tmp_path / AWKWARD
    assert main(["export", "--adapter", str(run / "adapter"), "-o", str(out), "--base-model-name", base]) == 0
    card = (out / "README.md").read_text()

    serve = shlex.split(_block_after(card, "## Serve with vLLM"))
    assert serve[:5] == ["vllm", "serve", base, "--enable-lora", "--lora-modules"]
    assert serve[5] == f"{AWKWARD}=path/to/{AWKWARD}"
    assert json.loads(serve[serve.index("--mm-processor-kwargs") + 1]) == {"min_pixels": 3136}

    curl = shlex.split(_block_after(card, "A request names the adapter as its model:"))
    assert json.loads(curl[curl.index("-d") + 1])["model"] == AWKWARD


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
