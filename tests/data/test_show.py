"""``vlmtune data show`` and the sample ``vlmtune train --dry-run`` shows: the rendered text, one marker per
image's visual tokens, the trained tokens (the renderer's own labels) inside [[ ]], and the token counts."""

import re

import pytest

from tests.conftest import conversation, write_jsonl
from vlmtune.cli.main import main
from vlmtune.data import Renderer, read_samples
from vlmtune.data.check import check_dataset
from vlmtune.data.render import IGNORE_INDEX
from vlmtune.models import get_family, load_processor


def _sample_blocks(out: str) -> list[list[str]]:
    """The lines of each shown sample, from its "--- id" line through its "--- tokens" line."""
    blocks, current = [], None
    for line in out.splitlines():
        if line.startswith("--- ") and not line.startswith("--- tokens"):
            current = [line]
        elif current is not None:
            current.append(line)
            if line.startswith("--- tokens"):
                blocks.append(current)
                current = None
    return blocks


@pytest.mark.parametrize("family", ["qwen2_5_vl", "llava"])
def test_show_marks_the_renderers_labels_and_counts_tokens(family, tmp_path, images, tiny_dir, capsys):
    model = tiny_dir(family)
    data = write_jsonl(tmp_path / "d.jsonl", [conversation(), conversation("green.png", "red.png"),
                                              conversation("blue.png", "green.png")])
    assert main(["data", "show", str(data), "--model", str(model), "-n", "2"]) == 0
    out = capsys.readouterr().out
    blocks = _sample_blocks(out)
    assert [b[0] for b in blocks] == [f"--- {data}:1", f"--- {data}:2"]  # -n 2: the third is not shown

    spec = get_family(family)
    renderer = Renderer(load_processor(model, spec), spec, 4096)
    report = check_dataset(data, renderer=renderer)
    processor = renderer.processor
    for block, sample, (text, visual) in zip(blocks, report.samples, report.lengths, strict=False):
        shown = "\n".join(block[1:-1])
        features = renderer.encode(sample)
        trained = int((features["labels"] != IGNORE_INDEX).sum())
        assert block[-1] == f"--- tokens: {text} text + {visual} visual = {text + visual} total; {trained} trained"
        assert text + visual == len(features["input_ids"])
        # Each answer and the end of its turn, nothing else, is marked: the spans training learns from.
        end = spec.turn_end
        # (LLaVA's SentencePiece answer starts with the word-start space the answer token carries.)
        spans = [span.lstrip(" ") for span in re.findall(r"\[\[(.*?)\]\]", shown, re.S)]
        assert spans == [f"red{end}", f"It is blue.{end}"]
        # One marker per image whose count is that image's visual tokens.
        runs = [int(n) for n in re.findall(re.escape(processor.image_token) + r"x(\d+)", shown)]
        image_id = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
        assert len(runs) == 2 and sum(runs) == int((features["input_ids"] == image_id).sum())
        # Unmarked, it is the encoding decoded whole, each image's run of visual tokens written as one marker.
        ids = features["input_ids"].tolist()
        collapsed = [t for k, t in enumerate(ids) if t != image_id or k == 0 or ids[k - 1] != image_id]
        whole = processor.tokenizer.decode(collapsed, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        marked = re.sub(re.escape(processor.image_token) + r"x\d+", processor.image_token, shown)
        assert marked.replace("[[", "").replace("]]", "") == whole.rstrip("\n")


def test_show_skips_unusable_records_and_names_the_first(tmp_path, images, tiny_dir, capsys):
    data = write_jsonl(tmp_path / "d.jsonl", [conversation("nope.png"), "{broken", conversation()])
    assert main(["data", "show", str(data), "--model", str(tiny_dir("qwen2_5_vl")), "-n", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].startswith(f"skipped 2 unusable record(s) before them, e.g. {data}:1 ")
    assert "image file not found 'nope.png'" in out[1]
    assert [b[0] for b in _sample_blocks("\n".join(out))] == [f"--- {data}:3"]


def test_dry_run_shows_one_training_sample_or_says_the_data_is_missing(tmp_path, images, tiny_dir, capsys):
    model = tiny_dir("qwen2_5_vl")
    data = write_jsonl(tmp_path / "train.jsonl", [conversation()])
    config = tmp_path / "c.yaml"
    config.write_text(f"model:\n  path: {model}\ndata:\n  train: {data}\n  max_length: 512\n"
                      f"train:\n  output_dir: {tmp_path}/run\n")
    assert main(["train", str(config), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.index("all ") < out.index(f"--- {data}:1")  # after the parameter table
    [block] = _sample_blocks(out)
    [sample] = read_samples(data)
    spec = get_family("qwen2_5_vl")
    trained = int((Renderer(load_processor(model, spec), spec).encode(sample)["labels"] != IGNORE_INDEX).sum())
    assert block[-1].endswith(f" total; {trained} trained")
    assert "[[red<|im_end|>]]" in block and "[[It is blue.<|im_end|>]]" in block

    assert main(["train", str(config), "--dry-run", "data.train=missing.jsonl"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "data.train missing.jsonl not found: no sample shown"
