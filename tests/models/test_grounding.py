"""Grounding conventions: exact text per family, round trips to original pixels, tolerant parsing."""

import json
import random
import re
from pathlib import Path

import pytest
import transformers
from PIL import Image

from vlmtune.core.sample import BoxPart, PointPart
from vlmtune.models import get_family
from vlmtune.models.grounding import model_image_size

FAMILIES = ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"]
MS_SWIFT = Path(__file__).parents[2] / ".." / "shared" / "fixtures" / "real" / "peer_samples" / "ms_swift"


def _checkpoint_size(family: str, original: tuple[int, int]) -> tuple[int, int]:
    """Model size with the published checkpoint's pixel limits."""
    spec = get_family(family)
    return model_image_size(original, spec.image_factor, spec.min_pixels, spec.max_pixels)


def _random_parts(rng: random.Random, w: int, h: int) -> list[BoxPart | PointPart]:
    x1, x2 = sorted(rng.uniform(0, w) for _ in range(2))
    y1, y2 = sorted(rng.uniform(0, h) for _ in range(2))
    return [BoxPart((x1, y1, x2, y2), 0, rng.choice([None, "cat", 'a "red" car, left'])),
            BoxPart((0.0, 0.0, float(w), float(h)), 0, None),  # touching every border
            PointPart((rng.uniform(0, w), rng.uniform(0, h)), 0, rng.choice([None, "button"]))]


def _coords(part: BoxPart | PointPart) -> tuple[float, ...]:
    return part.box if isinstance(part, BoxPart) else part.point


def _max_error(family: str, sizes: list[tuple[int, int]], seed: int) -> list[tuple[float, float, float]]:
    """For each size, (worst x error, worst y error, per-axis bound) of format -> parse over random parts."""
    convention, rng, out = get_family(family).grounding, random.Random(seed), []
    for w, h in sizes:
        model = _checkpoint_size(family, (w, h))
        parts = _random_parts(rng, w, h)
        text = " and ".join(convention.format(p, (w, h), model) for p in parts)
        parsed = convention.parse(text, (w, h), model)
        assert [(type(p), p.label) for p in parsed] == [(type(p), p.label) for p in parts]
        errors = [abs(a - b) for p, q in zip(parts, parsed, strict=True) for a, b in zip(_coords(p), _coords(q),
                                                                                           strict=True)]
        # Half a text unit, in original pixels: the grid's unit is n/1000 px, a model pixel n/model_n px.
        ex, ey = (convention.grid, convention.grid) if convention.grid else model
        out.append((max(errors[0::2]), max(errors[1::2]), max(0.5 * w / ex, 0.5 * h / ey)))
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_round_trip_is_within_one_original_pixel(family):
    """Sides of 28..2000 px: the 0-1000 grid quantises to n/2000 px (<= 1 px up to 2000 px), and the
    checkpoint's limits never shrink such images to under half their size, so all three stay within 1 px."""
    rng = random.Random(1234)
    sizes = [(rng.randint(28, 2000), rng.randint(28, 2000)) for _ in range(200)]
    for ex, ey, _ in _max_error(family, sizes, seed=1):
        assert max(ex, ey) <= 1.0 + 1e-9


@pytest.mark.parametrize("family", FAMILIES)
def test_round_trip_on_large_images_keeps_the_quantisation_bound(family):
    """Up to 8000 px: max(1, n/2000) on the grid; Qwen2.5-VL's bound grows once max_pixels shrinks the image."""
    rng = random.Random(99)
    sizes = [(rng.randint(500, 8000), rng.randint(500, 8000)) for _ in range(50)]
    for (w, h), (ex, ey, bound) in zip(sizes, _max_error(family, sizes, seed=2), strict=True):
        if get_family(family).grounding.grid:
            assert bound == pytest.approx(max(w, h) / 2000)
        assert max(ex, ey) <= max(1.0, bound) + 1e-9


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("limits", ["checkpoint", "tiny"])
def test_model_image_size_is_what_the_image_processor_produces(family, limits):
    spec = get_family(family)
    f = spec.image_factor
    min_pixels, max_pixels = (spec.min_pixels, spec.max_pixels) if limits == "checkpoint" else (f * f, (8 * f) ** 2)
    processor = getattr(transformers, spec.image_processor_class)(
        **{**spec.tiny_image_processor, "min_pixels": min_pixels, "max_pixels": max_pixels})
    patch = spec.tiny_image_processor["patch_size"]
    for w, h in [(640, 428), (30, 29), (1000, 37), (123, 457), (1300, 900)]:
        [[_, grid_h, grid_w]] = processor(images=[Image.new("RGB", (w, h))], return_tensors="pt")["image_grid_thw"]
        assert model_image_size((w, h), f, min_pixels, max_pixels) == (grid_w * patch, grid_h * patch)


# The hand-worked example: a 640x428 COCO image, box [146, 137, 615, 415] "bowl of carrots", click at (320, 214).
# 0-1000 grid: 146/640*1000 = 228.1, 137/428*1000 = 320.1, 615/640*1000 = 960.9, 415/428*1000 = 969.6; point 500, 500.
# Qwen2.5-VL, limits 3136..12845056, factor 28: 640/28 = 22.9 -> 23*28 = 644, 428/28 = 15.3 -> 15*28 = 420;
# 146*644/640 = 146.9, 137*420/428 = 134.4, 615*644/640 = 618.8, 415*420/428 = 407.2; point 322, 210.
# Qwen3-VL, factor 32: 640/32 = 20 -> 640, 428/32 = 13.4 -> 416 (only the size; its grid ignores it).
HAND_WORKED = {
    "qwen2_vl": ((644, 420), "<|object_ref_start|>bowl of carrots<|object_ref_end|><|box_start|>(228,320),(961,970)"
                 "<|box_end|>", "<|box_start|>(500,500)<|box_end|>"),
    "qwen2_5_vl": ((644, 420), '{"bbox_2d": [147, 134, 619, 407], "label": "bowl of carrots"}',
                   '{"point_2d": [322, 210]}'),
    "qwen3_vl": ((640, 416), '{"bbox_2d": [228, 320, 961, 970], "label": "bowl of carrots"}',
                 '{"point_2d": [500, 500]}'),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_hand_worked_example(family):
    model, box_text, point_text = HAND_WORKED[family]
    convention = get_family(family).grounding
    assert _checkpoint_size(family, (640, 428)) == model
    assert convention.format(BoxPart((146, 137, 615, 415), 0, "bowl of carrots"), (640, 428), model) == box_text
    assert convention.format(PointPart((320, 214)), (640, 428), model) == point_text


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("text", ["", "There is no cat.", "{not json} [1, 2, 3, 4] (1,2),(3,4) <|box_end|>"])
def test_parse_finds_nothing_in_text_without_boxes(family, text):
    assert get_family(family).grounding.parse(text, (640, 480), (644, 476)) == []


def test_json_parse_skips_junk_and_reads_fenced_lists():
    convention = get_family("qwen3_vl").grounding
    text = ('Sure!\n```json\n[\n  {"bbox_2d": [100, 200, 300, 400], "label": "cat"},\n'
            '  {"bbox_2d": [1, 2, 3], "label": "three numbers"},\n  {"bbox_2d": ["a", 2, 3, 4]},\n'
            '  {"point_2d" : [ 500 ,\n 250.5 ], "label": 7},\n  {"bbox_2d": [0, 0, 1000, 1000], "label": "dog"},\n'
            ']\n```\nand {"objects": [{"point_2d": [10, 20], "label": "nested"}]} then {"bbox_2d": [5, 6, 7, 8')
    parsed = convention.parse(text, (2000, 1000), (0, 0))
    assert parsed == [BoxPart((200.0, 200.0, 600.0, 400.0), 0, "cat"), PointPart((1000.0, 250.5), 0, None),
                      BoxPart((0.0, 0.0, 2000.0, 1000.0), 0, "dog"), PointPart((20.0, 20.0), 0, "nested")]


def test_qwen2_vl_parse_tolerates_spaces_junk_and_shares_a_ref_between_adjacent_boxes():
    convention = get_family("qwen2_vl").grounding
    text = ("<|object_ref_start|> sheep <|object_ref_end|><|box_start|>( 100 , 200 ) , (300,400)<|box_end|>\n"
            "<|box_start|>(500,600),(700,800)<|box_end|> and <|box_start|>(1,2),(3,4),(5,6)<|box_end|>"
            "<|box_start|>(1,x)<|box_end|><|box_start|>(250,750)<|box_end|> <|object_ref_start|>cut off"
            "<|box_start|>(1,2),(3,4)")
    parsed = convention.parse(text, (1000, 2000), (0, 0))
    assert parsed == [BoxPart((100.0, 400.0, 300.0, 800.0), 0, "sheep"),
                      BoxPart((500.0, 1200.0, 700.0, 1600.0), 0, "sheep"), PointPart((250.0, 1500.0), 0, None)]


def _ms_swift_rows(name: str) -> list[dict]:
    path = MS_SWIFT / name
    if not path.exists():
        pytest.skip(f"{path} is absent (the shared third-party fixtures are not checked out)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_qwen2_vl_matches_ms_swift_native_grounding_examples():
    """ms-swift documents the same three samples twice: Qwen2-VL-native text, and real-pixel ``objects``. The
    image sizes they imply (1500x1800, 900x800, 2500x2000) turn one into the other exactly."""
    native = [row["messages"][-1]["content"] for row in _ms_swift_rows("docs_grounding_qwen2vl_native.jsonl")]
    objects = [row["objects"] for row in _ms_swift_rows("docs_grounding_swift_objects.jsonl")[:3]]
    convention = get_family("qwen2_vl").grounding
    for text, obj, size in zip(native, objects, [(1500, 1800), (900, 800), (2500, 2000)], strict=True):
        parsed = convention.parse(text, size, (0, 0))
        assert [_coords(p) for p in parsed] == [pytest.approx(b, abs=max(size) / 2000) for b in obj["bbox"]]
        written = [convention.format(p, size, (0, 0)) for p in parsed]
        assert all(w in text for w in written)
    assert [p.label for p in convention.parse(native[0], (1500, 1800), (0, 0))] == ["a dog", "a woman"]


def test_internvl_writes_boxes_as_ref_and_box_tags_on_the_0_1000_grid():
    convention = get_family("internvl").grounding
    # The hand-worked COCO box above: 228.1, 320.1, 960.9, 969.6 on the grid. No model size is needed.
    text = convention.format(BoxPart((146, 137, 615, 415), 0, "bowl of carrots"), (640, 428), (640, 428))
    assert text == "<ref>bowl of carrots</ref><box>[[228, 320, 961, 970]]</box>"
    assert convention.format(BoxPart((0, 0, 640, 428)), (640, 428), (640, 428)) == "<box>[[0, 0, 1000, 1000]]</box>"
    with pytest.raises(ValueError, match="writes boxes only"):
        convention.format(PointPart((320, 214)), (640, 428), (640, 428))
    rng = random.Random(7)
    for _ in range(100):
        w, h = rng.randint(28, 2000), rng.randint(28, 2000)
        box = _random_parts(rng, w, h)[0]
        [parsed] = convention.parse(convention.format(box, (w, h), (w, h)), (w, h), (w, h))
        assert parsed.label == box.label and max(abs(a - b) for a, b in zip(parsed.box, box.box, strict=True)) <= 1


def test_internvl_parse_reads_several_boxes_of_one_ref_and_skips_junk():
    convention = get_family("internvl").grounding
    text = ("Two: <ref>cats</ref><box>[[0, 0, 500, 500], [500, 500, 1000, 1000]]</box> and "
            "<box>[[1, 2, 3]]</box> <box>not json</box> <box>[[100, 100, 200, 200]]</box>")
    parsed = convention.parse(text, (2000, 1000), (2000, 1000))
    assert [(p.box, p.label) for p in parsed] == [((0, 0, 1000, 500), "cats"), ((1000, 500, 2000, 1000), "cats"),
                                                  ((200, 100, 400, 200), None)]
    assert convention.parse("<ref>dog</ref> nothing here (1,2),(3,4)", (640, 480), (640, 480)) == []


def test_internvl_sample_with_a_box_renders_and_trains_on_the_tags(tiny_dir, tmp_path):
    from vlmtune.core.errors import SampleError
    from vlmtune.core.sample import ImagePart, Message, Sample, TextPart
    from vlmtune.data import IGNORE_INDEX, Renderer
    from vlmtune.models import load_processor

    spec = get_family("internvl")
    Image.new("RGB", (200, 100), (255, 255, 255)).save(tmp_path / "page.png")
    image = ImagePart(tmp_path / "page.png")
    sample = Sample((Message("user", (image, TextPart("Where is the logo?"))),
                     Message("assistant", (BoxPart((20, 10, 100, 50), 0, "logo"),))), id="s")
    renderer = Renderer(load_processor(tiny_dir("internvl"), spec), spec)
    assert "<ref>logo</ref><box>[[100, 100, 500, 500]]</box><|im_end|>" in renderer.text(sample)
    features = renderer.encode(sample)
    trained = renderer.processor.tokenizer.decode(features["input_ids"][features["labels"] != IGNORE_INDEX])
    assert trained == "<ref>logo</ref><box>[[100, 100, 500, 500]]</box><|im_end|>"
    with pytest.raises(SampleError, match="s: has a point, and this family's grounding syntax"):
        renderer.encode(Sample((sample.messages[0], Message("assistant", (PointPart((5, 5)),))), id="s"))


def test_internvl_referring_prompts_keep_their_tags_and_control_tokens_stay_refused(tiny_dir, tmp_path):
    from vlmtune.core.errors import SampleError
    from vlmtune.core.sample import ImagePart, Message, Sample, TextPart
    from vlmtune.data import Renderer
    from vlmtune.models import load_processor

    spec = get_family("internvl")
    Image.new("RGB", (200, 100), (255, 255, 255)).save(tmp_path / "page.png")
    renderer = Renderer(load_processor(tiny_dir("internvl"), spec), spec)

    def ask(prompt: str) -> Sample:
        return Sample((Message("user", (ImagePart(tmp_path / "page.png"), TextPart(prompt))),
                       Message("assistant", (BoxPart((20, 10, 100, 50), 0, "the logo"),))), id="r")

    prompt = "Please provide the bounding box coordinate of the region this sentence describes: <ref>the logo</ref>"
    ids = renderer.encode(ask(prompt))["input_ids"].tolist()
    ref = renderer.processor.tokenizer.convert_tokens_to_ids("<ref>")
    assert ids.count(ref) == 2  # the prompt's and the answer's, each one token
    with pytest.raises(SampleError, match=re.escape("messages[0] contains the special token '<|im_end|>'")):
        renderer.encode(ask("Where?<|im_end|>"))


@pytest.mark.parametrize("fence", ["```json\n{}\n```", "```\n{}\n```"])
def test_qwen2_5_vl_json_boxes_inside_a_markdown_fence(fence):
    # Qwen2.5-VL writes model-image pixels: a 200x100 original shown at 100x50 doubles every coordinate.
    text = fence.replace("{}", '[\n  {"bbox_2d": [10, 20, 30, 40], "label": "ok button"}\n]')
    assert get_family("qwen2_5_vl").grounding.parse(text, (200, 100), (100, 50)) == [
        BoxPart((20.0, 40.0, 60.0, 80.0), 0, "ok button")]
