"""Without torchvision, vlmtune writes the same folders, its own loaders still load and predict from them, and plain
AutoProcessor fails only where the published processor needs torchvision, with transformers' own error, exactly as
for a folder written with torchvision (the format of an official checkpoint)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoProcessor

from tests.export.ecosystem import MAX_NEW_TOKENS, PROMPT, make_run, vlmtune_predict
from vlmtune.cli.main import main
from vlmtune.models import family_names, get_family

pytestmark = pytest.mark.slow  # trains and exports every family again in a subprocess

FAMILIES = family_names()

# Runs in a Python whose `import torchvision` raises ImportError (sitecustomize on PYTHONPATH), so that transformers
# reports it unavailable; prints one JSON object.
_SCRIPT = """
import json, sys
from pathlib import Path
from transformers import AutoProcessor
from transformers.utils import is_torchvision_available
from vlmtune.cli.main import main
from vlmtune.models import get_family
from vlmtune.models.tiny import build_tiny

work, image = Path(sys.argv[1]), Path(sys.argv[2])
prompt, exports = sys.argv[3], json.loads(sys.argv[4])
try:
    import torchvision  # noqa: F401
    imported = True
except ImportError:
    imported = False
result = {"torchvision_available": is_torchvision_available(), "torchvision_imported": imported, "families": {}}
for family, with_tv in json.loads(sys.argv[6]).items():
    folder = build_tiny(get_family(family), work / family)
    answer = work / f"{family}.answer"
    with open(answer, "w") as out:
        sys.stdout = out
        code = main(["predict", "--model", with_tv, "--image", str(image), "--prompt", prompt,
                     "--max-new-tokens", sys.argv[5]])
        sys.stdout = sys.__stdout__
    loads = {}
    for name, path in (("without", folder), ("with", Path(with_tv))):
        try:
            loads[name] = "loaded " + type(AutoProcessor.from_pretrained(path)).__name__
        except Exception as e:
            loads[name] = f"{type(e).__name__}: {e}"
    result["families"][family] = {"predict_exit": code, "answer": answer.read_text(), "autoprocessor": loads}
result["merge_exits"] = {name: main(["export", "--model", base, "--adapter", f"{run}/adapter", "-o",
                                     str(work / name), "--merge", "--dtype", "fp32"])
                        for name, (base, run) in exports.items()}
print(json.dumps(result))
"""


def _without_torchvision(tmp_path: Path, *args: str) -> dict:
    hide = tmp_path / "hide_torchvision"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text('import sys\n\nsys.modules["torchvision"] = None  # import raises\n')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(hide), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", _SCRIPT, *args], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


PIXELS = {"min_pixels": 28 * 28 * 16, "max_pixels": 28 * 28 * 64}


def _legacy_copy(folder: Path, out: Path) -> Path:
    """``folder`` in the layout of the published Qwen2.5-VL checkpoints: the image processor's settings (pixel limits
    by name, no size) in preprocessor_config.json, no processor_config.json, so no video processor settings."""
    shutil.copytree(folder, out)
    image = json.loads((out / "processor_config.json").read_text())["image_processor"]
    legacy = {"min_pixels": 784, "max_pixels": 50176, "patch_size": 14, "temporal_patch_size": 2, "merge_size": 2,
              "image_mean": image["image_mean"], "image_std": image["image_std"],
              "image_processor_type": "Qwen2VLImageProcessor", "processor_class": "Qwen2_5_VLProcessor"}
    (out / "preprocessor_config.json").write_text(json.dumps(legacy, indent=2))
    (out / "processor_config.json").unlink()
    return out


@pytest.fixture(scope="module")
def without(tiny_dir, shape_image, tmp_path_factory):
    """What the torchvision-less Python wrote and saw: tiny models of every family; merged exports of a run on the
    tiny Qwen2.5-VL and on a copy of it in the published checkpoints' older layout."""
    tmp = tmp_path_factory.mktemp("without_torchvision")
    bases = {"merged": tiny_dir("qwen2_5_vl"), "merged_legacy": _legacy_copy(tiny_dir("qwen2_5_vl"), tmp / "legacy")}
    exports = {name: (base, make_run(base, "qwen2_5_vl", tmp / f"run_{name}", **PIXELS))
               for name, base in bases.items()}
    with_tv = {family: str(tiny_dir(family)) for family in FAMILIES}
    result = _without_torchvision(tmp, str(tmp / "out"), str(shape_image), PROMPT,
                                  json.dumps({k: [str(b), str(r)] for k, (b, r) in exports.items()}),
                                  str(MAX_NEW_TOKENS), json.dumps(with_tv))
    return result, tmp / "out", exports


def test_torchvision_is_hidden(without):
    result, *_ = without
    assert result["torchvision_available"] is False and result["torchvision_imported"] is False


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_folder_written_without_torchvision_equals_the_one_written_with_it(without, tiny_dir, family):
    _, out, *_ = without
    written, expected = out / family, tiny_dir(family)
    assert sorted(p.name for p in written.iterdir()) == sorted(p.name for p in expected.iterdir())
    for file in expected.iterdir():
        assert (written / file.name).read_bytes() == file.read_bytes(), file.name


@pytest.mark.parametrize("family", FAMILIES)
def test_vlmtune_predicts_without_torchvision_and_plain_autoprocessor_fails_only_for_lack_of_it(
        without, tiny_dir, shape_image, family, capsys):
    result, *_ = without
    seen = result["families"][family]
    assert seen["predict_exit"] == 0
    assert seen["answer"] == vlmtune_predict(capsys, shape_image, "--model", str(tiny_dir(family))) + "\n"
    spec = get_family(family)
    if spec.video_processor_class:  # as for an official checkpoint: the video processor class needs torchvision
        expected = f"ImportError: \n{spec.video_processor_class} requires the Torchvision library"
        assert all(load.startswith(expected) for load in seen["autoprocessor"].values()), seen["autoprocessor"]
    else:
        assert seen["autoprocessor"] == {"without": f"loaded {spec.processor_class}",
                                         "with": f"loaded {spec.processor_class}"}


def test_merged_export_written_without_torchvision_equals_the_one_written_with_it(without, tmp_path):
    result, out, exports = without
    base, run = exports["merged"]
    assert result["merge_exits"]["merged"] == 0
    expected = tmp_path / "merged"
    assert main(["export", "--model", str(base), "--adapter", str(run / "adapter"), "-o", str(expected), "--merge",
                 "--dtype", "fp32"]) == 0
    written = out / "merged"
    assert sorted(p.name for p in written.iterdir()) == sorted(p.name for p in expected.iterdir())
    for file in expected.iterdir():
        assert (written / file.name).read_bytes() == file.read_bytes(), file.name


def test_merged_export_of_a_base_in_the_older_layout_keeps_the_bases_video_processor(without):
    # Written without torchvision from a folder whose video processor transformers reads from
    # preprocessor_config.json: plain AutoProcessor gives the merged folder the processor the run used.
    result, out, exports = without
    base, _ = exports["merged_legacy"]
    assert result["merge_exits"]["merged_legacy"] == 0
    merged, at_run = AutoProcessor.from_pretrained(out / "merged_legacy"), AutoProcessor.from_pretrained(base, **PIXELS)
    assert type(merged.video_processor) is type(at_run.video_processor)
    assert merged.video_processor.to_dict() == at_run.video_processor.to_dict()
    assert merged.image_processor.to_dict() == at_run.image_processor.to_dict()
    assert merged.video_processor.size.shortest_edge == PIXELS["min_pixels"]
