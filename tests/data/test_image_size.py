"""``data.image_size``: every image stretched to one fixed size before the processor (qwen-vl-utils'
resized_width / resized_height), with token counts, grounding coordinates and the disk cache following it."""

import json

import pytest
import torch
from PIL import Image

from vlmtune.cli.main import main
from vlmtune.config import load_config
from vlmtune.core.errors import ConfigError
from vlmtune.core.sample import BoxPart, ImagePart, Message, Sample, TextPart
from vlmtune.data import Renderer, read_samples
from vlmtune.data.cache import CachedRenderer
from vlmtune.data.render import SEQUENCE_KEYS, load_image
from vlmtune.models import get_family, load_processor


def _sample(image, *answer) -> Sample:
    return Sample((Message("user", (ImagePart(image), TextPart("What is it?"))),
                   Message("assistant", answer or (TextPart("a gradient"),))), "t.jsonl:1")


@pytest.fixture
def wide(tmp_path):
    """A 90x40 image with varying pixels, so a different resampling would show in the pixel values."""
    image = Image.new("RGB", (90, 40))
    image.putdata([(3 * x % 256, 6 * y % 256, (x * y) % 256) for y in range(40) for x in range(90)])
    image.save(tmp_path / "wide.png")
    return tmp_path / "wide.png"


# Tiny Qwen2-VL (factor 28, 784..50176 px) makes 90x40 28x84 (3 merged tokens), 56x112 stays (8 tokens); tiny
# Idefics3 (64-px longest edge, 32-px tiles) makes 90x40 two tiles + the global image, 32x32 one tile.
SIZES = {"qwen2_vl": (56, 112), "idefics3": (32, 32)}


@pytest.mark.parametrize("family", ["qwen2_vl", "idefics3"])
def test_images_reach_the_processor_stretched_to_image_size(family, tiny_dir, wide):
    spec = get_family(family)
    processor = load_processor(tiny_dir(family), spec)
    size = SIZES[family]
    renderer = Renderer(processor, spec, image_size=size)
    sample = _sample(wide)
    ours = renderer.encode(sample)
    stretched = load_image(wide).resize(size, Image.Resampling.BICUBIC)
    text = renderer.text(sample)
    theirs = processor(text=[text], images=[[stretched]], return_tensors="pt",
                       add_special_tokens=not text.startswith(processor.tokenizer.bos_token or "\0"))
    assert ours["input_ids"].tolist() == theirs["input_ids"][0].tolist()
    image_keys = [k for k in theirs if k not in SEQUENCE_KEYS]
    assert image_keys
    for key in image_keys:
        torch.testing.assert_close(ours[key], theirs[key], msg=f"{family}: {key} differs")
    unresized = Renderer(processor, spec).encode(sample)
    assert len(unresized["input_ids"]) != len(ours["input_ids"])  # the setting changed what the model sees


@pytest.mark.parametrize("family", ["qwen2_vl", "idefics3"])
def test_token_counts_use_image_size_not_the_files_size(family, tiny_dir, wide):
    spec = get_family(family)
    processor = load_processor(tiny_dir(family), spec)
    sample = _sample(wide)
    renderer = Renderer(processor, spec, image_size=SIZES[family])
    text, visual = renderer.count_tokens(sample, [(90, 40)])
    assert text + visual == len(renderer.encode(sample)["input_ids"])
    assert sum(Renderer(processor, spec).count_tokens(sample, [(90, 40)])) != text + visual


def test_data_check_counts_tokens_at_the_image_size_option(tmp_path, tiny_dir, wide, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"messages": [
        {"role": "user", "content": [{"type": "image", "image": "wide.png"}, {"type": "text", "text": "What?"}]},
        {"role": "assistant", "content": "a gradient"}]}) + "\n")
    spec, model = get_family("qwen2_vl"), tiny_dir("qwen2_vl")
    totals = []
    for option in ([], ["--image-size", "56", "112"]):
        assert main(["data", "check", str(data), "--model", str(model), "--json", *option]) == 0
        totals.append(json.loads(capsys.readouterr().out)["tokens"]["total"]["max"])
    [sample] = read_samples(data)
    encoded = Renderer(load_processor(model, spec), spec, image_size=(56, 112)).encode(sample)
    assert totals[1] == len(encoded["input_ids"]) != totals[0]


# A 64x48 image stretched to 112x56 (tiny Qwen2.5-VL keeps it: factor 28, 784..50176 px): x scales by 1.75, y by
# 7/6. Box (10, 7, 50, 40) -> (17.5, 8.17, 87.5, 46.67) -> [18, 8, 88, 47] in model pixels.
def test_box_is_written_at_the_stretched_model_size_and_parses_back(tiny_dir, tmp_path):
    spec = get_family("qwen2_5_vl")
    processor = load_processor(tiny_dir("qwen2_5_vl"), spec)
    Image.new("RGB", (64, 48), (200, 100, 0)).save(tmp_path / "cat.png")
    renderer = Renderer(processor, spec, image_size=(112, 56))
    sample = _sample(tmp_path / "cat.png", TextPart("It is here: "), BoxPart((10, 7, 50, 40), 0, "cat"))
    answer = 'It is here: {"bbox_2d": [18, 8, 88, 47], "label": "cat"}'
    assert renderer.message_text(sample, 1) == answer
    assert renderer.model_size((64, 48)) == (112, 56) == renderer.model_size((1000, 20))
    [[_, grid_h, grid_w]] = renderer.encode(sample)["image_grid_thw"]
    patch = processor.image_processor.patch_size
    assert (grid_w * patch, grid_h * patch) == (112, 56)
    [box] = spec.grounding.parse(answer, (64, 48), renderer.model_size((64, 48)))
    assert box.box == pytest.approx((10, 7, 50, 40), abs=1) and box.label == "cat"
    # The stretch is per axis, so it commutes with the convention's scaling: the same box, drawn on the image
    # already stretched to 112x56 and rendered without image_size, is written with the same numbers.
    Image.new("RGB", (112, 56), (200, 100, 0)).save(tmp_path / "stretched.png")
    stretched_box = BoxPart((10 * 1.75, 7 * 56 / 48, 50 * 1.75, 40 * 56 / 48), 0, "cat")
    assert Renderer(processor, spec).message_text(
        _sample(tmp_path / "stretched.png", TextPart("It is here: "), stretched_box), 1) == answer


def test_cache_renders_again_at_another_image_size(tiny_dir, tmp_path, wide):
    spec = get_family("qwen2_vl")
    model, cache = tiny_dir("qwen2_vl"), tmp_path / "cache"
    sample = _sample(wide)

    def cached(size):
        return CachedRenderer(Renderer(load_processor(model, spec), spec, image_size=size), cache)

    first = cached((56, 112))
    first.encode(sample)
    assert (first.misses, first.hits) == (1, 0)
    other, unset = cached((112, 56)), cached(None)
    assert len({first.fingerprint, other.fingerprint, unset.fingerprint}) == 3
    for renderer in (other, unset):
        got = renderer.encode(sample)
        assert (renderer.misses, renderer.hits) == (1, 0)
        want = renderer.renderer.encode(sample)
        assert all(torch.equal(got[k], want[k]) for k in want)
    again = cached((56, 112))
    again.encode(sample)
    assert (again.misses, again.hits) == (0, 1)


def test_config_image_size_is_two_positive_ints(tmp_path):
    base = ["model.path=m", "data.train=x"]
    cfg = load_config(None, [*base, "data.image_size=[280, 140]"])
    assert cfg.data.image_size == (280, 140) and cfg.model_dump(mode="json")["data"]["image_size"] == [280, 140]
    assert load_config(None, base).data.image_size is None
    for bad in ("[0, 280]", "[280, -1]", "[280]", "[280, 280, 3]", "280"):
        with pytest.raises(ConfigError, match=r"data\.image_size"):
            load_config(None, [*base, f"data.image_size={bad}"])
