"""Rendering boxes and points in each family's grounding syntax, with the processor's real image size."""

import pytest
from PIL import Image

from vlmtune.core.errors import SampleError
from vlmtune.core.sample import BoxPart, ImagePart, Message, PointPart, Sample, TextPart
from vlmtune.data import IGNORE_INDEX, Renderer
from vlmtune.models import get_family, load_processor

FAMILIES = ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"]
# A 64x48 image, box (16, 12, 48, 36) "cat". Grid: 16/64*1000 = 250, 12/48*1000 = 250, 48/64 -> 750, 36/48 -> 750.
# Tiny Qwen2.5-VL (factor 28, 784..50176 px) resizes to 56x56: 16*56/64 = 14, 12*56/48 = 14, 42, 42.
EXPECTED = {
    "qwen2_vl": "<|object_ref_start|>cat<|object_ref_end|><|box_start|>(250,250),(750,750)<|box_end|>",
    "qwen2_5_vl": '{"bbox_2d": [14, 14, 42, 42], "label": "cat"}',
    "qwen3_vl": '{"bbox_2d": [250, 250, 750, 750], "label": "cat"}',
}


def _sample(image, *answer, question: str = "Where is the cat?") -> Sample:
    return Sample((Message("user", (ImagePart(image), TextPart(question))),
                   Message("assistant", (TextPart("It is here: "), *answer))), "t.jsonl:1")


@pytest.fixture
def cat_image(tmp_path):
    Image.new("RGB", (64, 48), (200, 100, 0)).save(tmp_path / "cat.png")
    return tmp_path / "cat.png"


@pytest.mark.parametrize("family", FAMILIES)
def test_box_renders_in_the_family_syntax_and_is_trained_on(family, tiny_dir, cat_image):
    spec = get_family(family)
    processor = load_processor(tiny_dir(family), spec)
    renderer = Renderer(processor, spec)
    sample = _sample(cat_image, BoxPart((16, 12, 48, 36), 0, "cat"))
    answer = "It is here: " + EXPECTED[family]
    assert renderer.text(sample).endswith(spec.assistant_header + answer + spec.turn_end + "\n")
    features = renderer.encode(sample)
    labels = features["labels"]
    assert processor.tokenizer.decode(labels[labels != IGNORE_INDEX]) == answer + spec.turn_end
    # The answer maps back to the original box within the quantisation of the family's coordinates.
    [box] = spec.grounding.parse(answer, (64, 48), renderer.model_size((64, 48)))
    assert box.box == pytest.approx((16, 12, 48, 36), abs=0.6) and box.label == "cat"


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("size", [(64, 48), (300, 200), (37, 500)])
def test_model_size_is_the_processed_image_size(family, size, tiny_dir, tmp_path):
    """Also with pixel limits overridden at load time (300x200 is shrunk by max_pixels, 37x500 grown)."""
    spec = get_family(family)
    f = spec.image_factor
    Image.new("RGB", size).save(tmp_path / "im.png")
    for processor in (load_processor(tiny_dir(family), spec),
                      load_processor(tiny_dir(family), spec, min_pixels=60 * f * f, max_pixels=64 * f * f)):
        renderer = Renderer(processor, spec)
        [[_, grid_h, grid_w]] = renderer.encode(_sample(tmp_path / "im.png", PointPart((1, 2))))["image_grid_thw"]
        patch = processor.image_processor.patch_size
        assert renderer.model_size(size) == (grid_w * patch, grid_h * patch)


def test_point_and_label_free_box_in_a_generation_prompt(tiny_dir, cat_image):
    spec = get_family("qwen2_vl")
    renderer = Renderer(load_processor(tiny_dir("qwen2_vl"), spec), spec)
    sample = Sample((Message("user", (ImagePart(cat_image), TextPart("What is at "), PointPart((32, 24)),
                                      TextPart(" inside "), BoxPart((0, 0, 64, 48)), TextPart("?"))),), "t.jsonl:2")
    assert renderer.text(sample, add_generation_prompt=True).endswith(
        "What is at <|box_start|>(500,500)<|box_end|> inside <|box_start|>(0,0),(1000,1000)<|box_end|>?<|im_end|>\n"
        "<|im_start|>assistant\n")


def test_box_on_a_missing_image_names_the_sample(tiny_dir, cat_image):
    spec = get_family("qwen2_5_vl")
    renderer = Renderer(load_processor(tiny_dir("qwen2_5_vl"), spec), spec)
    with pytest.raises(SampleError, match=r"t.jsonl:1: a box or point refers to image 1, but the sample has 1 image"):
        renderer.text(_sample(cat_image, BoxPart((1, 2, 3, 4), 1)))
    cat_image.write_bytes(b"not a png")
    with pytest.raises(SampleError, match=r"t.jsonl:1: cannot read image .*cat.png"):
        renderer.text(_sample(cat_image, BoxPart((1, 2, 3, 4))))
