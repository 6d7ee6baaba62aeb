"""What goes wrong around a run rather than in its data is one line on stderr, exit 2, no traceback: an output
folder that cannot be written (a full disk, a read-only or forbidden folder, a file in the way), a model.path that
names nothing, a hub id on a machine that cannot download it, a wrong lora.targets name. A broken data-cache
entry is a warning: it is rendered again and training goes on."""

import errno
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import write_jsonl
from vlmtune.cli.main import main
from vlmtune.config.schema import LoraConfig
from vlmtune.evaluate import run as eval_run
from vlmtune.models import get_family, load_model
from vlmtune.train.lora import apply_lora


def _one_line(capsys, command: str) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    prefix = f"vlmtune {command}: error: "
    assert err.startswith(prefix), err
    return err[len(prefix):-1]


def _qa(image: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": [{"type": "image", "image": image},
                                                      {"type": "text", "text": "Colour?"}]},
                         {"role": "assistant", "content": answer}]}


@pytest.fixture
def data(tmp_path, images):
    return write_jsonl(tmp_path / "d.jsonl", [_qa("red.png", "red"), _qa("blue.png", "blue"),
                                              _qa("green.png", "green"), _qa("red.png", "red")])


def _train_config(tmp_path, model, data, output_dir, *lines: str):
    config = tmp_path / "c.yaml"
    config.write_text(f"model:\n  path: {model}\ndata:\n  train: {data}\n" + "".join(f"  {x}\n" for x in lines)
                      + f"train:\n  output_dir: {output_dir}\n  max_steps: 1\n  batch_size: 2\n  progress: false\n"
                      "  report_to: none\nlora:\n  r: 4\n")
    return str(config)


@pytest.fixture
def adapter(tmp_path, tiny_dir):
    model = apply_lora(load_model(tiny_dir("qwen2_vl")), get_family("qwen2_vl"), LoraConfig(r=4))
    model.save_pretrained(tmp_path / "adapter")
    return tmp_path / "adapter"


# --- output folders that cannot be written ----------------------------------------------------------------------

def test_a_file_where_the_output_folder_should_be(tmp_path, data, tiny_dir, adapter, monkeypatch, capsys):
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    assert main(["data", "convert", str(data), "-o", str(blocker / "out.jsonl")]) == 2
    assert _one_line(capsys, "data convert") == f"{blocker} is a file, where a folder is needed"
    assert main(["data", "split", str(data), "-o", str(blocker / "parts")]) == 2
    assert _one_line(capsys, "data split") == f"cannot use {blocker / 'parts'}: part of that path is a file, not a " \
                                              "folder"
    assert main(["train", _train_config(tmp_path, tiny_dir("qwen2_vl"), data, blocker / "run")]) == 2
    assert _one_line(capsys, "train").startswith(f"cannot use {blocker / 'run'}")
    monkeypatch.setattr(eval_run, "generate", lambda _model, _renderer, prompts, *a, **k: ["red"] * len(prompts))
    assert main(["eval", "--model", str(tiny_dir("qwen2_vl")), "--data", str(data), "-o", str(blocker / "eval"),
                 "--no-progress"]) == 2
    assert _one_line(capsys, "eval").startswith(f"cannot use {blocker / 'eval'}")
    assert main(["export", "--model", str(tiny_dir("qwen2_vl")), "--adapter", str(adapter), "-o",
                 str(blocker / "export")]) == 2
    assert _one_line(capsys, "export").startswith(f"cannot use {blocker / 'export'}")


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")  # as a failed write() says it: no file name


def test_a_full_disk_names_the_output(tmp_path, data, tiny_dir, monkeypatch, capsys):
    monkeypatch.setattr("vlmtune.data.convert.open", _no_space, raising=False)
    out = tmp_path / "out.jsonl"
    assert main(["data", "convert", str(data), "-o", str(out)]) == 2
    assert _one_line(capsys, "data convert") == f"no space left on {out} (the disk is full); free some space and " \
                                                "run again"
    assert main(["data", "split", str(data), "-o", str(tmp_path / "parts")]) == 2
    assert _one_line(capsys, "data split").startswith(f"no space left on {tmp_path / 'parts'} (the disk is full)")
    monkeypatch.setattr("vlmtune.train.start.dump_config", _no_space)
    assert main(["train", _train_config(tmp_path, tiny_dir("qwen2_vl"), data, tmp_path / "run")]) == 2
    assert _one_line(capsys, "train").startswith(f"no space left on {tmp_path / 'run'} (the disk is full)")


def test_a_full_disk_reported_by_a_library_writer(tmp_path, data, tiny_dir, adapter, monkeypatch, capsys):
    from safetensors import SafetensorError

    def full(*args, **kwargs):
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: '
                              '"No space left on device" })')

    monkeypatch.setattr("vlmtune.export.command.export_adapter", full)
    out = tmp_path / "export"
    assert main(["export", "--model", str(tiny_dir("qwen2_vl")), "--adapter", str(adapter), "-o", str(out)]) == 2
    assert _one_line(capsys, "export").startswith(f"no space left on {out} (the disk is full)")


@pytest.mark.parametrize(("code", "says"), [
    (errno.EROFS, "cannot write {}: the file system is read-only; choose an output folder on a writable one"),
    (errno.EACCES, "permission denied on {}; check its permissions, or choose an output folder you can write to")])
def test_a_read_only_or_forbidden_output_folder_is_named(tmp_path, data, tiny_dir, monkeypatch, capsys, code, says):
    out = tmp_path / "eval"

    def refuse(self, out_dir, *args, **kwargs):
        raise OSError(code, os.strerror(code), os.path.join(out_dir, "metrics.json"))

    monkeypatch.setattr(eval_run, "generate", lambda _model, _renderer, prompts, *a, **k: ["red"] * len(prompts))
    monkeypatch.setattr(eval_run.Comparison, "write", refuse)
    assert main(["eval", "--model", str(tiny_dir("qwen2_vl")), "--data", str(data), "-o", str(out),
                 "--no-progress"]) == 2
    assert _one_line(capsys, "eval") == says.format(out / "metrics.json")


# --- model.path -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["missing folder", "relative missing folder", "a file", "folder without config"])
def test_a_model_path_that_names_no_checkpoint(tmp_path, data, kind, capsys):
    path = {"missing folder": str(tmp_path / "no-such-model"), "relative missing folder": "./no-such-model",
            "a file": str(data), "folder without config": str(tmp_path)}[kind]
    assert main(["estimate", _train_config(tmp_path, path, data, tmp_path / "run")]) == 2
    assert _one_line(capsys, "estimate") == {
        "missing folder": f"model.path: folder {path} does not exist (and is not a hub id like org/name)",
        "relative missing folder": f"model.path: folder {path} does not exist (and is not a hub id like org/name)",
        "a file": f"model.path: {path} is a file; give the checkpoint's folder",
        "folder without config": f"model.path: folder {path} has no config.json, so it is not a model checkpoint",
    }[kind]


@pytest.mark.slow  # a subprocess that imports torch and transformers
def test_a_hub_id_offline_and_not_cached_is_one_line(tmp_path, data):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"), "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, "-m", "vlmtune.cli.main", "estimate",
                           _train_config(tmp_path, "Qwen/Qwen2-VL-2B-Instruct", data, tmp_path / "run")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1] == (
        f"vlmtune estimate: error: model.path: Qwen/Qwen2-VL-2B-Instruct is not a local folder and not in the hub "
        f"cache ({tmp_path / 'hub'}), and HF_HUB_OFFLINE is set: download it where there is network (`hf download "
        "Qwen/Qwen2-VL-2B-Instruct`) into that cache, or set model.path to a local checkpoint folder")


def test_a_hub_id_that_cannot_be_downloaded_says_the_machine_is_offline(tmp_path, data, monkeypatch, capsys):
    from huggingface_hub.errors import LocalEntryNotFoundError

    def no_network(*args, **kwargs):
        try:
            raise LocalEntryNotFoundError("Cannot find the requested files in the disk cache and outgoing traffic "
                                          "has been disabled or the connection failed.")
        except LocalEntryNotFoundError as e:
            raise OSError("We couldn't connect to 'https://huggingface.co' to load the files, and couldn't find "
                          "them in the cached files.") from e

    monkeypatch.setattr("vlmtune.models.load.AutoConfig.from_pretrained", no_network)
    monkeypatch.setattr("vlmtune.models.locate.hub_offline", lambda: False)
    assert main(["estimate", _train_config(tmp_path, "Qwen/Qwen2-VL-2B-Instruct", data, tmp_path / "run")]) == 2
    line = _one_line(capsys, "estimate")
    assert line.startswith("model.path: Qwen/Qwen2-VL-2B-Instruct is not a local folder and not in the hub cache (")
    assert "and this machine cannot reach the hub (offline): download it where there is network" in line


# --- the data cache ---------------------------------------------------------------------------------------------

@pytest.mark.slow  # trains twice
def test_a_broken_cache_entry_is_named_deleted_and_rendered_again(tmp_path, data, tiny_dir, capsys):
    cache = tmp_path / "cache"
    config = _train_config(tmp_path, tiny_dir("qwen2_vl"), data, tmp_path / "run", f"cache_dir: {cache}")
    assert main(["train", config]) == 0
    entries = sorted(cache.rglob("*.safetensors"))
    assert len(entries) == 3  # red.png's two records are one sample's content
    good = {k: v.clone() for k, v in load_file(entries[0]).items()}
    entries[0].write_bytes(entries[0].read_bytes()[:100])  # truncated, as a crash mid-write elsewhere leaves it
    assert main(["train", config, "--overwrite"]) == 0
    log = (tmp_path / "run" / "train.log").read_text()
    warnings = [line for line in log.splitlines() if line.startswith("data cache: ")]
    assert len(warnings) == 1 and warnings[0].startswith(f"data cache: {entries[0]} (sample {data}:")
    assert "is unreadable (" in warnings[0] and warnings[0].endswith("); deleted, rendering it again")
    again = load_file(entries[0])
    assert again.keys() == good.keys() and all(torch.equal(again[k], good[k]) for k in good)


# --- lora.targets -----------------------------------------------------------------------------------------------

def test_a_wrong_lora_target_stops_training_before_data_or_weights_are_read(tmp_path, data, tiny_dir, monkeypatch,
                                                                             capsys):
    reads = []
    monkeypatch.setattr("vlmtune.train.prepare.check_dataset", lambda *a, **k: reads.append("data"))
    monkeypatch.setattr("vlmtune.models.load.AutoModelForImageTextToText.from_pretrained",
                        lambda *a, **k: reads.append("weights"))
    config = _train_config(tmp_path, tiny_dir("qwen2_vl"), data, tmp_path / "run")
    assert main(["train", config, "lora.targets=[q_proj, qkv_proj]"]) == 2
    assert _one_line(capsys, "train") == (
        "lora.targets ['qkv_proj'] name no linear layer of the language component; its linear layers are: down_proj, "
        'gate_proj, k_proj, o_proj, q_proj, up_proj, v_proj (or use "all-linear")')
    assert reads == [] and not (tmp_path / "run").exists()
    assert main(["train", config, "--dry-run", "lora.targets={vision: [q_proj]}"]) == 2
    assert _one_line(capsys, "train").startswith("lora.targets.vision ['q_proj'] name no linear layer of the vision "
                                                 "component; its linear layers are: ")


def test_pixel_limits_on_a_tiling_family_are_one_line_naming_the_keys(tmp_path, data, tiny_dir, capsys):
    model = tiny_dir("internvl")
    capsys.readouterr()  # building the tiny model reports its progress
    assert main(["data", "show", str(data), "--model", str(model), "--max-pixels", "50176"]) == 2
    assert _one_line(capsys, "data show") == (
        "data.min_pixels / data.max_pixels do not apply to family internvl: its processor sizes images by tiles; "
        "leave them unset and set the image size in the checkpoint's preprocessor_config.json")


def test_every_vlmtune_error_is_one_line_exit_2_and_other_errors_keep_their_traceback(monkeypatch, capsys):
    from vlmtune.cli import commands
    from vlmtune.core.errors import VlmtuneError

    class ExportError(VlmtuneError):  # a layer's own error, unknown to the CLI
        pass

    def fails(error):
        def run(args):
            raise error
        return run

    monkeypatch.setattr(commands, "config_validate", fails(ExportError("export.format: no such format 'onnx'")))
    assert main(["config", "validate", "c.yaml"]) == 2
    assert _one_line(capsys, "config validate") == "export.format: no such format 'onnx'"
    monkeypatch.setattr(commands, "config_validate", fails(ValueError("a bug")))
    with pytest.raises(ValueError, match="^a bug$"):
        main(["config", "validate", "c.yaml"])
