"""``vlmtune serve``'s choices before any server runs: the backend and the ``vllm serve`` command it execs (a stand-in
``vllm`` that prints its argv), what is served for a run folder, and the missing ``serve`` extra."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.export.ecosystem import make_run
from tests.serve.server import make_runs
from vlmtune.cli.main import main

pytestmark = pytest.mark.slow  # `vlmtune serve` as a subprocess, after training two runs


@pytest.fixture(scope="module")
def runs(tiny_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("serve_command")
    base = tiny_dir("qwen2_5_vl")
    run_a, run_b = make_runs(base, root)
    torch.manual_seed(3)
    run_c = make_run(base, "qwen2_5_vl", root / "run_c")
    (root / "media").mkdir()
    return {"base": base, "run_a": run_a, "run_b": run_b, "run_c": run_c, "root": root}


@pytest.fixture(scope="module")
def fake_vllm(tmp_path_factory) -> dict[str, str]:
    """An environment where ``import vllm`` works and ``vllm`` on PATH prints its argv as JSON."""
    root = tmp_path_factory.mktemp("fake_vllm")
    (root / "lib" / "vllm").mkdir(parents=True)
    (root / "lib" / "vllm" / "__init__.py").write_text("")
    (root / "bin").mkdir()
    script = root / "bin" / "vllm"
    script.write_text(f"#!{sys.executable}\nimport json, sys\nprint('ARGV ' + json.dumps(sys.argv))\n")
    script.chmod(0o755)
    path = os.pathsep.join(filter(None, [str(root / "lib"), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "PATH": f"{root / 'bin'}{os.pathsep}{os.environ['PATH']}",
            "VLMTUNE_API_KEY": ""}


def serve(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vlmtune.cli.main", "serve", *args], env=env, capture_output=True,
                          text=True, timeout=300)


def test_auto_execs_vllm_serve_with_the_adapters(runs, fake_vllm):
    a, c, media = runs["run_a"] / "adapter", runs["run_c"] / "adapter", runs["root"] / "media"
    done = serve(fake_vllm, "--model", str(runs["base"]), "--adapter", f"a={a}", "--adapter", str(c),
                 "--port", "8123", "--api-key", "secret", "--allow-local-files", str(media), "--max-batch-size", "4")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    exe = str(Path(fake_vllm["PATH"].split(os.pathsep)[0]) / "vllm")
    expected = [exe, "serve", str(runs["base"]), "--served-model-name", runs["base"].name, "--host", "127.0.0.1",
                "--port", "8123", "--enable-lora", "--lora-modules", f"a={a}", f"run_c={c}", "--max-loras", "2",
                "--max-lora-rank", "8", "--allowed-local-media-path", str(media.resolve()), "--max-num-seqs", "4",
                "--api-key", "secret"]
    assert lines[0] == "backend: vllm (vllm is installed and serves this model family)"
    assert lines[1] == "running: " + " ".join(expected[:-1]) + " '***'"
    assert json.loads(lines[2].removeprefix("ARGV ")) == expected


def test_a_run_folder_serves_its_adapter_on_its_base(runs, fake_vllm):
    done = serve(fake_vllm, "--model", str(runs["run_a"]), "--port", "8124")
    assert done.returncode == 0, done.stderr
    argv = json.loads(done.stdout.splitlines()[-1].removeprefix("ARGV "))
    assert argv[2:13] == [str(runs["base"]), "--served-model-name", runs["base"].name, "--host", "127.0.0.1",
                          "--port", "8124", "--enable-lora", "--lora-modules", f"run_a={runs['run_a'] / 'adapter'}",
                          "--max-loras"]
    assert "--api-key" not in argv


def test_auto_keeps_transformers_where_vllm_would_not_apply_the_run_settings(runs, fake_vllm, monkeypatch, capsys):
    monkeypatch.syspath_prepend(fake_vllm["PYTHONPATH"].split(os.pathsep)[0])
    assert main(["serve", "--adapter", str(runs["run_b"] / "adapter"), "--backend", "vllm"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "vlmtune serve: error: --backend vllm: vLLM would not apply data.system 'Answer in one word.' (added to "
        f"conversations without a system prompt) of {runs['base'].name}, run_b")


def test_backend_vllm_without_vllm(runs, capsys):
    assert main(["serve", "--model", str(runs["base"]), "--backend", "vllm"]) == 2
    assert capsys.readouterr().err == "vlmtune serve: error: --backend vllm: vllm is not installed\n"


def test_an_adapter_name_given_twice(runs, capsys):
    a = runs["run_a"] / "adapter"
    assert main(["serve", "--model", str(runs["base"]), "--adapter", f"x={a}", "--adapter", f"x={a}"]) == 2
    assert capsys.readouterr().err == (f"vlmtune serve: error: --adapter 'x={a}': the name 'x' is given twice; "
                                       "name them with NAME=PATH\n")


def test_without_the_serve_extra(runs, tmp_path):
    (tmp_path / "sitecustomize.py").write_text('import sys\n\nsys.modules["fastapi"] = None  # import raises\n')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    done = serve(env, "--model", str(runs["base"]))
    assert done.returncode == 2
    assert done.stdout == "backend: transformers (vllm is not installed)\n"
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    assert len(errors) == 1
    assert errors[0].startswith("vlmtune serve: error: the server needs FastAPI and uvicorn")
    assert errors[0].endswith(": pip install 'vlmtune[serve]'")
