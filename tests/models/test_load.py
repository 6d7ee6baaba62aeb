"""Loading copes with what real checkpoint folders hold, not only with what vlmtune itself writes."""

import json
import shutil
from pathlib import Path

import pytest
from transformers import AutoImageProcessor

from tests.conftest import conversation, write_jsonl
from vlmtune.data import IGNORE_INDEX, Renderer, read_samples
from vlmtune.models import get_family, load_processor

REAL = Path("/work/shared/fixtures/real/processor_configs/qwen2_5_vl_7b_instruct/preprocessor_config.json")


@pytest.fixture
def older_qwen2_5_vl(tiny_dir, tmp_path) -> Path:
    """The tiny Qwen2.5-VL laid out like Qwen/Qwen2.5-VL-7B-Instruct's folder before transformers 5: the image
    processor's settings in the published preprocessor_config.json (which names ``Qwen2_5_VLImageProcessor``, a
    class transformers 5 no longer has) instead of inside processor_config.json, the template in
    chat_template.json."""
    if not REAL.is_file():
        pytest.skip(f"fixture not found: {REAL}")
    folder = Path(shutil.copytree(tiny_dir("qwen2_5_vl"), tmp_path / "older"))
    (folder / "processor_config.json").unlink()
    shutil.copy(REAL, folder / "preprocessor_config.json")
    template = folder / "chat_template.jinja"
    (folder / "chat_template.json").write_text(json.dumps({"chat_template": template.read_text()}))
    template.unlink()
    return folder


def test_a_renamed_image_processor_class_loads_with_the_folders_own_pixel_limits(older_qwen2_5_vl):
    assert json.loads(REAL.read_text())["image_processor_type"] == "Qwen2_5_VLImageProcessor"
    with pytest.raises(ValueError, match="Unrecognized image processor"):  # what transformers alone does
        AutoImageProcessor.from_pretrained(older_qwen2_5_vl)

    spec = get_family("qwen2_5_vl")
    processor = load_processor(older_qwen2_5_vl, spec)
    ip = processor.image_processor
    assert type(ip).__name__.startswith("Qwen2VLImageProcessor")
    # The published limits (4 to 16384 visual tokens of 28x28 pixels), not the class defaults (max 1280 tokens).
    assert (ip.size["shortest_edge"], ip.size["longest_edge"]) == (3136, 12845056) == (spec.min_pixels,
                                                                                        spec.max_pixels)
    assert (ip.patch_size, ip.merge_size, ip.temporal_patch_size) == (14, 2, 2)
    # A 1400x1400 image fits under the real cap: 50x50 merged patches of 28 pixels, no downscaling.
    assert processor._get_num_multimodal_tokens(image_sizes=[(1400, 1400)])["num_image_tokens"] == [2500]
    assert processor.chat_template == json.loads((older_qwen2_5_vl / "chat_template.json").read_text())[
        "chat_template"]


def test_pixel_limits_from_the_run_config_still_override_the_folders(older_qwen2_5_vl, tmp_path):
    spec = get_family("qwen2_5_vl")
    processor = load_processor(older_qwen2_5_vl, spec, min_pixels=784, max_pixels=200704)
    assert (processor.image_processor.size["shortest_edge"], processor.image_processor.size["longest_edge"]) == (
        784, 200704)
    assert processor._get_num_multimodal_tokens(image_sizes=[(1400, 1400)])["num_image_tokens"] == [256]


def test_the_older_folder_renders_and_masks_like_the_tiny_one(older_qwen2_5_vl, tiny_dir, tmp_path, images):
    spec = get_family("qwen2_5_vl")
    [sample] = read_samples(write_jsonl(tmp_path / "d.jsonl", [conversation()]))
    older = Renderer(load_processor(older_qwen2_5_vl, spec), spec).encode(sample)
    assert older["labels"].ne(IGNORE_INDEX).sum() > 0
    # Same template and tokenizer: the text tokens agree; only the visual ones follow each folder's pixel limits.
    tiny = Renderer(load_processor(tiny_dir("qwen2_5_vl"), spec), spec).encode(sample)
    image_pad = load_processor(tiny_dir("qwen2_5_vl"), spec).tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert [i for i in older["input_ids"].tolist() if i != image_pad] == [
        i for i in tiny["input_ids"].tolist() if i != image_pad]
