"""One image loader everywhere: EXIF orientation applied, transparency on white, 16-bit greyscale scaled to 8 bits,
the first frame of an animation with a warning; `data check`, training's rendering and its cache agree."""

import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

import vlmtune.data.cache as cache_module
from tests.conftest import write_jsonl
from vlmtune.cli.main import main
from vlmtune.data import Renderer
from vlmtune.data.cache import CachedRenderer, renderer_fingerprint
from vlmtune.data.check import check_dataset
from vlmtune.models import get_family, load_processor

FAMILY = "qwen2_5_vl"
ORIENTATION = 0x0112


@pytest.fixture(scope="module")
def renderer(tiny_dir):
    spec = get_family(FAMILY)
    return Renderer(load_processor(tiny_dir(FAMILY), spec), spec)


def _record(image, answer="ok", box=None):
    answer_content = [{"type": "box", "box": box}] if box else answer
    return {"messages": [{"role": "user", "content": [{"type": "image", "image": str(image)},
                                                      {"type": "text", "text": "What is it?"}]},
                         {"role": "assistant", "content": answer_content}]}


def _pixels(renderer, data):
    """``pixel_values`` of the only sample of a data file, rendered as training renders it."""
    [sample] = check_dataset(data).samples
    return renderer.encode(sample)["pixel_values"]


def _upright_pair(tmp_path):
    """(JPEG stored on its side with EXIF orientation 6, PNG of the upright image it shows): 40 wide, 80 tall."""
    upright = Image.new("RGB", (40, 80), (220, 30, 30))
    upright.paste((30, 30, 220), (0, 40, 40, 80))  # blue bottom half: a rotation shows
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # 80 x 40, as the camera's sensor wrote it
    exif = Image.Exif()
    exif[ORIENTATION] = 6  # "rotate 90 degrees clockwise to display"
    jpeg = tmp_path / "photo.jpg"
    stored.save(jpeg, quality=95, exif=exif)
    png = tmp_path / "upright.png"
    with Image.open(jpeg) as im:  # the decoded JPEG turned upright, lossless from here on
        ImageOps.exif_transpose(im).convert("RGB").save(png)
    return jpeg, png


def test_a_box_on_the_upright_image_of_an_exif_rotated_jpeg_is_accepted_and_rendered_upright(
        tmp_path, renderer, capsys):
    jpeg, png = _upright_pair(tmp_path)
    data = write_jsonl(tmp_path / "boxes.jsonl", [_record(jpeg, box=[5, 50, 35, 75])])  # y up to 75 of 80

    assert main(["data", "check", str(data)]) == 0
    assert "1 records, 1 usable, 0 unusable" in capsys.readouterr().out

    upright = write_jsonl(tmp_path / "upright.jsonl", [_record(png, box=[5, 50, 35, 75])])
    [sample], [reference] = check_dataset(data).samples, check_dataset(upright).samples
    ours, theirs = renderer.encode(sample), renderer.encode(reference)
    assert torch.equal(ours["image_grid_thw"], theirs["image_grid_thw"])
    assert torch.equal(ours["pixel_values"], theirs["pixel_values"])
    assert torch.equal(ours["input_ids"], theirs["input_ids"])  # the box text, scaled from the same upright size


def test_transparent_pixels_are_white(tmp_path, renderer):
    rgba = Image.new("RGBA", (56, 56), (255, 0, 0, 0))  # transparent, storing red
    rgba.paste((0, 0, 255, 255), (28, 0, 56, 56))
    rgba.save(tmp_path / "alpha.png")
    on_white = Image.new("RGB", (56, 56), (255, 255, 255))
    on_white.paste((0, 0, 255), (28, 0, 56, 56))
    on_white.save(tmp_path / "white.png")

    ours = _pixels(renderer, write_jsonl(tmp_path / "a.jsonl", [_record(tmp_path / "alpha.png")]))
    theirs = _pixels(renderer, write_jsonl(tmp_path / "w.jsonl", [_record(tmp_path / "white.png")]))
    assert torch.equal(ours, theirs)


def test_16_bit_greyscale_mid_grey_stays_mid_grey(tmp_path, renderer):
    Image.fromarray(np.full((56, 56), 128 * 257, dtype=np.uint16)).save(tmp_path / "grey16.png")
    with Image.open(tmp_path / "grey16.png") as im:
        assert im.mode == "I;16"
    Image.new("RGB", (56, 56), (128, 128, 128)).save(tmp_path / "grey8.png")

    ours = _pixels(renderer, write_jsonl(tmp_path / "a.jsonl", [_record(tmp_path / "grey16.png")]))
    theirs = _pixels(renderer, write_jsonl(tmp_path / "b.jsonl", [_record(tmp_path / "grey8.png")]))
    assert torch.equal(ours, theirs)


def test_an_animated_gif_uses_its_first_frame_and_the_check_counts_a_warning(tmp_path, renderer, capsys):
    frames = [Image.new("RGB", (56, 56), colour) for colour in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    frames[0].save(tmp_path / "first.png")
    data = write_jsonl(tmp_path / "gif.jsonl", [_record(tmp_path / "anim.gif"), _record(tmp_path / "first.png")])

    assert main(["data", "check", str(data)]) == 0
    out = capsys.readouterr().out
    assert "2 records, 2 usable, 0 unusable" in out
    assert "warnings: 1 (kept): 1x image ... has ... frames" in out
    assert f"{data}:1: image 'anim.gif' has 3 frames (an animation or several pages); only the first is used" in out
    assert main(["data", "check", str(data), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [(w["where"], w["kind"]) for w in report["warnings"]] == [(f"{data}:1", "warning")]

    first, png = check_dataset(data).samples
    assert torch.equal(renderer.encode(first)["pixel_values"], renderer.encode(png)["pixel_values"])


def test_the_cache_serves_upright_pixels_and_keys_on_the_loading_rules(tmp_path, renderer, monkeypatch):
    jpeg, png = _upright_pair(tmp_path)
    [sample] = check_dataset(write_jsonl(tmp_path / "a.jsonl", [_record(jpeg)])).samples
    [reference] = check_dataset(write_jsonl(tmp_path / "b.jsonl", [_record(png)])).samples
    cached = CachedRenderer(renderer, tmp_path / "cache")
    written, read = cached.encode(sample), CachedRenderer(renderer, tmp_path / "cache").encode(sample)
    upright = renderer.encode(reference)["pixel_values"]
    assert torch.equal(written["pixel_values"], upright) and torch.equal(read["pixel_values"], upright)

    # Pixels cached under other loading rules are never read back.
    before = renderer_fingerprint(renderer)
    monkeypatch.setattr(cache_module, "IMAGE_RULES", "other rules")
    assert renderer_fingerprint(renderer) != before
