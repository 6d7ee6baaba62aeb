"""``data.on_too_long: shrink``: a sample over max_length is kept with its images downscaled (one factor, aspect
ratio kept) to the largest size at which it fits; only samples that cannot fit so are dropped, saying why."""

import json
import re

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from tests.conftest import write_jsonl
from vlmtune.cli.main import main
from vlmtune.config import load_config
from vlmtune.config.schema import DataConfig
from vlmtune.core.sample import BoxPart
from vlmtune.data import Renderer
from vlmtune.data.check import TOO_LONG, check_dataset, content_key
from vlmtune.data.formats.write import sample_to_record
from vlmtune.data.render import SEQUENCE_KEYS, load_image
from vlmtune.evaluate.run import example_of
from vlmtune.models import get_family, load_processor
from vlmtune.train import train
from vlmtune.train.prepare import checked_report

# Tiny Qwen2-VL / Qwen2.5-VL: factor 28, 784..50176 px. The 300x200 gradient (60000 px, over max_pixels) is
# processed at 252x168 (54 merged tokens of 28x28) and the text of _record is 34 tokens: 88 in all. Its smallest
# size is 34x23 (784 px: 1 token), 35 in all.
BIG = (300, 200)


@pytest.fixture
def big(tmp_path):
    """A 300x200 image with varying pixels, so a different resampling would show in the pixel values."""
    image = Image.new("RGB", BIG)
    image.putdata([(3 * x % 256, 6 * y % 256, (x * y) % 256) for y in range(BIG[1]) for x in range(BIG[0])])
    image.save(tmp_path / "big.png")
    return tmp_path / "big.png"


def _record(image="big.png", question="What is it?", answer="a gradient"):
    content = [{"type": "image", "image": image}] if image else []
    return {"messages": [{"role": "user", "content": [*content, {"type": "text", "text": question}]},
                         {"role": "assistant", "content": answer}]}


def _renderer(tiny_dir, family, max_length):
    spec = get_family(family)
    return Renderer(load_processor(tiny_dir(family), spec), spec, max_length=max_length)


def _size_at(side, original=BIG):
    """The image's size with its longer side ``side`` px, as the search scales it."""
    scale = side / max(original)
    return round(original[0] * scale), round(original[1] * scale)


def test_an_over_long_sample_is_kept_at_the_largest_image_size_that_fits(tmp_path, big, tiny_dir):
    renderer = _renderer(tiny_dir, "qwen2_vl", 60)
    data = write_jsonl(tmp_path / "d.jsonl", [_record()])
    [original] = check_dataset(data).samples
    assert sum(renderer.count_tokens(original, [BIG])) == 88
    assert [p.kind for p in check_dataset(data, renderer=renderer).problems] == [TOO_LONG]  # drop: as before

    report = check_dataset(data, renderer=renderer, shrink=True)
    assert report.ok and report.records == 1
    [sample] = report.samples
    [part] = sample.image_parts
    width, height = part.size
    assert width < BIG[0] and abs(width / height - 1.5) < 0.02  # aspect ratio kept, to a pixel
    encoded = renderer.encode(sample)
    [(text, visual)] = report.lengths
    assert len(encoded["input_ids"]) == text + visual == sum(renderer.count_tokens(sample, [BIG])) <= 60
    # The largest that fits, to the search's step of one pixel of the longer side: one more does not fit.
    assert _size_at(width) == part.size
    assert sum(renderer.count_tokens(original.with_image_sizes([_size_at(width + 1)]), [BIG])) > 60
    # The model gets exactly what the processor makes of the image resized beforehand.
    text_in = renderer.text(sample)
    theirs = renderer.processor(text=[text_in], images=[[load_image(big).resize(part.size, Image.Resampling.BICUBIC)]],
                                return_tensors="pt")
    assert encoded["input_ids"].tolist() == theirs["input_ids"][0].tolist()
    for key in [k for k in theirs if k not in SEQUENCE_KEYS]:
        torch.testing.assert_close(encoded[key], theirs[key], msg=key)
    # Reported, and a part of the sample's content (so of its disk-cache key); unshrunk keys are unchanged.
    assert report.shrunk == [(original.id, width / BIG[0])]
    assert "shrank the images of 1 samples to fit max_length 60" in report.summary()
    assert json.loads(json.dumps(report.to_dict()))["shrunk"][0]["where"] == original.id
    unshrunk = json.dumps(sample_to_record(original, "/")["messages"], sort_keys=True)
    assert content_key(sample) != content_key(original) == unshrunk


def test_samples_that_cannot_fit_are_dropped_saying_why(tmp_path, big, tiny_dir):
    long_text = "a long question " * 40
    data = write_jsonl(tmp_path / "d.jsonl", [_record(question=long_text), _record(image=None, question=long_text),
                                              _record()])
    report = check_dataset(data, renderer=_renderer(tiny_dir, "qwen2_vl", 60), shrink=True)
    assert [s.id for s in report.samples] == [f"{data}:3"] and len(report.shrunk) == 1
    reasons = {p.where: p.problem for p in report.problems}
    assert all(p.kind == TOO_LONG for p in report.problems)
    assert "exceed max_length=60; shrinking its images is not enough: its text alone is" in reasons[f"{data}:1"]
    assert "shrinking its images is not enough: it has no image to shrink" in reasons[f"{data}:2"]
    # The text fits (34 tokens) but not with even the smallest image (1 token): dropped, naming min_pixels.
    [problem] = check_dataset(data, renderer=_renderer(tiny_dir, "qwen2_vl", 34), shrink=True).problems[2:]
    assert "still has 35 tokens (1 visual) with its images at the processor's smallest size (min_pixels=784)" in (
        problem.problem)
    # Training drops them as today's drops, counted; with data.on_too_long=fail it stops.
    cfg = DataConfig(train=str(data), max_length=60, on_too_long="shrink")
    kept = checked_report(str(data), cfg, _renderer(tiny_dir, "qwen2_vl", 60), "data.train")
    assert [s.id for s in kept.samples] == [f"{data}:3"] and kept.samples[0].image_parts[0].size is not None


def test_fixed_size_images_cannot_be_shrunk(tmp_path, big, tiny_dir):
    """LLaVA shows every image at one size (tiny LLaVA: the same tokens whatever the file's size)."""
    renderer = _renderer(tiny_dir, "llava", 20)
    data = write_jsonl(tmp_path / "d.jsonl", [_record()])
    [sample] = check_dataset(data).samples
    assert renderer.count_tokens(sample, [BIG])[1] == renderer.count_tokens(sample, [(30, 20)])[1] > 0
    report = check_dataset(data, renderer=renderer, shrink=True)
    [problem] = report.problems
    assert problem.kind == TOO_LONG and not report.samples and not report.shrunk
    assert "shrinking its images is not enough: llava's image processor" in problem.problem
    assert "a smaller image does not get fewer visual tokens" in problem.problem


def test_boxes_of_a_shrunk_image_are_written_at_its_model_size_and_parse_back(tmp_path, big, tiny_dir):
    renderer = _renderer(tiny_dir, "qwen2_5_vl", 70)
    spec = renderer.spec
    record = _record(question="Where is the cat?")
    record["messages"][1]["content"] = [{"type": "text", "text": "Here: "},
                                        {"type": "box", "box": [30, 40, 270, 180], "label": "cat"}]
    data = write_jsonl(tmp_path / "d.jsonl", [record])
    report = check_dataset(data, renderer=renderer, shrink=True)
    [sample] = report.samples
    shown = sample.image_parts[0].size
    assert shown is not None and report.shrunk
    model = renderer.model_size(BIG, shown)
    [[_, grid_h, grid_w]] = renderer.encode(sample)["image_grid_thw"]
    patch = renderer.processor.image_processor.patch_size
    assert model == (grid_w * patch, grid_h * patch) != renderer.model_size(BIG)
    answer = renderer.message_text(sample, 1)
    assert answer == "Here: " + spec.grounding.format(BoxPart((30, 40, 270, 180), 0, "cat"), BIG, model)
    [box] = spec.grounding.parse(answer, BIG, model)
    assert box.box == pytest.approx((30, 40, 270, 180), abs=2) and box.label == "cat"
    # Evaluation reads a prediction back at the size the model was shown, too.
    example = example_of(answer, answer, (BoxPart((30, 40, 270, 180), 0, "cat"),), sample, renderer)
    assert example.pred_grounding[0].box == pytest.approx((30, 40, 270, 180), abs=2)


def test_training_with_shrink_trains_on_the_shrunk_sample(tmp_path, big, images, tiny_dir):
    data = write_jsonl(tmp_path / "d.jsonl", [_record(), _record("red.png")])
    model = tiny_dir("qwen2_vl")
    cfg = load_config(None, [f"model.path={model}", f"data.train={data}", "data.max_length=60",
                             "data.on_too_long=shrink", f"data.cache_dir={tmp_path / 'cache'}",
                             f"train.output_dir={tmp_path / 'run'}", "train.progress=false", "train.max_steps=1",
                             "train.batch_size=2", "train.trace_samples=true", "lora.r=4", "train.report_to=none"])
    result = train(cfg)
    log = (result.run_dir / "train.log").read_text()
    assert "data.train: shrank the images of 1 samples to fit data.max_length 60" in log
    assert re.search(r"dropped \d+ of", log) is None  # no sample dropped (the run plan says "0 dropped")
    [step] = [json.loads(line) for line in (result.run_dir / "samples.rank0.jsonl").read_text().splitlines()]
    assert sorted(step["ids"]) == [f"{data}:1", f"{data}:2"]
    # What was rendered for training is the shrunk sample's encoding.
    renderer = _renderer(tiny_dir, "qwen2_vl", 60)
    shrunk = check_dataset(data, renderer=renderer, shrink=True).samples[0]
    want = renderer.encode(shrunk)["input_ids"].tolist()
    rendered = [load_file(f)["input_ids"].tolist() for f in (tmp_path / "cache").rglob("*.safetensors")]
    assert want in rendered and all(len(ids) <= 60 for ids in rendered)


def test_data_check_cli_counts_shrinkable_samples_as_usable(tmp_path, big, tiny_dir, capsys):
    data = write_jsonl(tmp_path / "d.jsonl", [_record()])
    args = ["data", "check", str(data), "--model", str(tiny_dir("qwen2_vl")), "--max-length", "60"]
    assert main(args) == 1
    assert "exceed max_length=60" in capsys.readouterr().out
    assert main([*args, "--on-too-long", "shrink", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["usable"] == 1 and report["shrunk"][0]["where"] == f"{data}:1"
    assert report["tokens"]["total"]["max"] <= 60
