"""The commands an exported model card gives the user to copy keep their names and paths whole: split as a shell
splits them, they give back the exact path, spaces and quotes included."""

import json
import shlex

from tests.export.ecosystem import make_run
from vlmtune.cli.main import main

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
