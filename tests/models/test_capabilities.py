"""What a family can do is said by name on its FamilySpec (``resizes_within_pixel_range``, ``has_grounding``,
``assistant_header`` None where it is not known), and each answer is what the family's processor and the commands
do: pixel limits apply exactly where the processor resizes within a range, boxes render exactly where the family
has a grounding syntax, and the default LoRA targets are the spec's ``language_lora_targets``."""

import dataclasses
import json

import pytest
from PIL import Image

from vlmtune.cli.main import main
from vlmtune.config import DataConfig
from vlmtune.data.settings import renderer_for
from vlmtune.models import family_names, get_family
from vlmtune.models.infer import skeleton
from vlmtune.models.load import model_config
from vlmtune.train.lora import training_plan

PIXEL_RANGE = {"qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_5"}
GROUNDING = {"qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_5", "internvl"}


@pytest.fixture
def box_data(tmp_path):
    """One record whose answer is a box on a 64x48 image."""
    Image.new("RGB", (64, 48), (200, 100, 0)).save(tmp_path / "cat.png")
    record = {"messages": [
        {"role": "user", "content": [{"type": "image", "image": "cat.png"}, {"type": "text", "text": "Cat?"}]},
        {"role": "assistant", "content": [{"type": "box", "box": [16, 12, 48, 36], "label": "cat"}]}]}
    data = tmp_path / "g.jsonl"
    data.write_text(json.dumps(record) + "\n")
    return data


@pytest.mark.parametrize("family", family_names())
def test_pixel_limits_apply_exactly_where_the_processor_resizes_within_a_range(family, tiny_dir, box_data, capsys):
    spec, folder = get_family(family), tiny_dir(family)
    assert spec.resizes_within_pixel_range is (family in PIXEL_RANGE)
    assert (renderer_for(str(folder), DataConfig(train="")).pixel_limits() is not None) is (family in PIXEL_RANGE)
    status = main(["data", "check", str(box_data), "--model", str(folder), "--max-pixels", "3136"])
    err = capsys.readouterr().err
    if family in PIXEL_RANGE:
        assert status == 0 and "do not apply" not in err
    else:
        assert status == 2
        assert err.splitlines()[-1].startswith(f"vlmtune data check: error: data.min_pixels / data.max_pixels do "
                                               f"not apply to family {family}: its processor sizes images by tiles")


@pytest.mark.parametrize("family", family_names())
def test_boxes_render_exactly_for_the_families_with_a_grounding_syntax(family, tiny_dir, box_data, capsys):
    spec = get_family(family)
    assert spec.has_grounding is (family in GROUNDING) is (spec.grounding is not None)
    status = main(["data", "check", str(box_data), "--model", str(tiny_dir(family)), "--json"])
    report = json.loads(capsys.readouterr().out)
    problems = [p["problem"] for p in report["problems"]]
    if family in GROUNDING:
        assert (status, problems) == (0, [])
    else:
        assert status == 1
        assert problems == [f"has boxes or points, but family {family} has no grounding syntax"]


@pytest.mark.parametrize("family", family_names())
def test_the_default_lora_targets_are_the_specs_language_linear_layers(family, tiny_dir):
    spec = get_family(family)
    plan = training_plan(skeleton(model_config(tiny_dir(family))), spec)  # lora.targets: all-linear
    assert {name.rsplit(".", 1)[-1] for name in plan["language"]} == set(spec.language_lora_targets)


def test_every_registered_family_knows_its_assistant_header():
    assert [f for f in family_names() if get_family(f).assistant_header is None] == []


def test_a_spec_says_its_pixel_range_whole_and_its_header_or_none():
    qwen, llava = get_family("qwen2_vl"), get_family("llava")
    with pytest.raises(ValueError, match=r"family qwen2_vl: image_factor, min_pixels and max_pixels are given "
                                         r"together or not at all \(got \(28, 3136, None\)\)"):
        dataclasses.replace(qwen, max_pixels=None)
    with pytest.raises(ValueError, match="family llava: assistant_header '' would match everywhere"):
        dataclasses.replace(llava, assistant_header="")
    assert not dataclasses.replace(qwen, image_factor=None, min_pixels=None, max_pixels=None).resizes_within_pixel_range
