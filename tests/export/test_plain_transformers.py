"""Every folder vlmtune writes loads with plain AutoProcessor + AutoModelForImageTextToText (what vLLM, SGLang and
user scripts do) and generates the tokens ``vlmtune predict`` generates: tiny models of every family, merged exports
of a run (at the run's resolution), a full fine-tune's RUN/model."""

import json

import pytest
import transformers
from transformers import AutoProcessor
from transformers.models.auto.video_processing_auto import VIDEO_PROCESSOR_MAPPING_NAMES

from tests.export.ecosystem import image_token_count, make_run, plain_generate, vlmtune_predict
from vlmtune.cli.main import main
from vlmtune.data.demo import make_demo_data
from vlmtune.export import SETTINGS_FILE
from vlmtune.models import family_names, get_family
from vlmtune.models.processor_compat import _recorded_defaults, has_video_processor

pytestmark = pytest.mark.slow  # builds, trains and reloads every family with plain transformers

FAMILIES = family_names()


def test_each_family_names_its_processors_video_processor_and_its_recorded_defaults_are_the_classes_own():
    for family in FAMILIES:
        spec = get_family(family)
        expected = (VIDEO_PROCESSOR_MAPPING_NAMES.get(family) or {}).get("torchvision") or ""
        assert spec.video_processor_class == expected, family
        assert has_video_processor(spec.processor_class) == bool(expected), family
    recorded = _recorded_defaults()
    assert set(recorded) == {get_family(f).video_processor_class for f in FAMILIES} - {""}
    for name, settings in recorded.items():
        assert json.loads(getattr(transformers, name)().to_json_string()) == settings, name


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_model_loads_with_plain_transformers_and_generates_what_vlmtune_predicts(family, tiny_dir, shape_image,
                                                                                      capsys):
    spec, folder = get_family(family), tiny_dir(family)
    saved = json.loads((folder / "processor_config.json").read_text())
    assert saved["processor_class"] == spec.processor_class
    assert ("video_processor" in saved) == bool(spec.video_processor_class)
    processor = AutoProcessor.from_pretrained(folder)
    assert type(processor).__name__ == spec.processor_class
    assert type(getattr(processor, "video_processor", None)).__name__ == (spec.video_processor_class or "NoneType")

    answer = plain_generate(folder, shape_image, family)
    assert answer  # random weights still answer something: the comparison below is not between two empty strings
    assert vlmtune_predict(capsys, shape_image, "--model", str(folder)) == answer


# Pixel limits other than the tiny model's own (784 .. 50176): the 90 x 60 image gets more visual tokens.
RUN_PIXELS = {"min_pixels": 28 * 28 * 16, "max_pixels": 28 * 28 * 64}


@pytest.mark.parametrize("family", ["qwen2_5_vl", "internvl"])
def test_merged_export_of_a_run_loads_with_plain_transformers_at_the_training_resolution(family, tiny_dir, tmp_path,
                                                                                        shape_image, capsys):
    base = tiny_dir(family)
    pixels = RUN_PIXELS if get_family(family).resizes_within_pixel_range else {}  # InternVL sizes images by tiles
    run = make_run(base, family, tmp_path / "run", **pixels)
    out = tmp_path / "merged"
    assert main(["export", "--model", str(base), "--adapter", str(run / "adapter"), "-o", str(out), "--merge",
                 "--dtype", "fp32"]) == 0

    answer = plain_generate(out, shape_image, family)
    assert answer
    assert vlmtune_predict(capsys, shape_image, "--model", str(base), "--adapter", str(run / "adapter")) == answer
    merged, at_run = AutoProcessor.from_pretrained(out), AutoProcessor.from_pretrained(base, **pixels)
    assert merged.image_processor.to_dict() == at_run.image_processor.to_dict()
    assert merged.video_processor.to_dict() == at_run.video_processor.to_dict()  # the base's, as the run loaded it
    assert json.loads((out / SETTINGS_FILE).read_text()) == {"min_pixels": pixels.get("min_pixels"),
                                                             "max_pixels": pixels.get("max_pixels"), "image_size": None}
    if pixels:
        assert image_token_count(out, shape_image, family) == image_token_count(base, shape_image, family, **pixels) \
            > image_token_count(base, shape_image, family)


def test_full_fine_tune_model_folder_loads_with_plain_transformers(tiny_dir, tmp_path, shape_image, capsys):
    family = "qwen2_5_vl"
    base = tiny_dir(family)
    data = make_demo_data(tmp_path / "data", n_train=4, n_val=2, seed=1)
    config = tmp_path / "full.yaml"
    config.write_text(f"model:\n  path: {base}\ndata:\n  train: {data['train']}\n"
                      f"  min_pixels: {RUN_PIXELS['min_pixels']}\n  max_pixels: {RUN_PIXELS['max_pixels']}\n"
                      f"train:\n  method: full\n  max_steps: 2\n  batch_size: 2\n  progress: false\n"
                      f"  output_dir: {tmp_path / 'run'}\n")
    assert main(["train", str(config)]) == 0
    folder = tmp_path / "run" / "model"

    answer = plain_generate(folder, shape_image, family)
    assert answer
    assert vlmtune_predict(capsys, shape_image, "--model", str(folder)) == answer  # at the run's pixel limits
    saved, at_run = AutoProcessor.from_pretrained(folder), AutoProcessor.from_pretrained(base, **RUN_PIXELS)
    assert saved.image_processor.to_dict() == at_run.image_processor.to_dict()
    assert saved.video_processor.to_dict() == at_run.video_processor.to_dict()
