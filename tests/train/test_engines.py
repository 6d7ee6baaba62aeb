"""FSDP2 and DeepSpeed ZeRO-2 / ZeRO-3, launched as users launch them (``accelerate launch --config_file
configs/accelerate/X.yaml -m vlmtune.cli.main train CONFIG``) on 2 CPU processes (gloo): each engine trains like
one process with the doubled batch and saves weights that load, gathered whole from the shards.

The accelerate configs are the presets in configs/ with only ``num_processes: 2`` and ``use_cpu: true`` changed
(the DeepSpeed JSON path made absolute), written to tmp_path. Two things make this run without a GPU:

- accelerate 1.15 never picks FSDP for CPU processes: ``AcceleratorState`` turns FSDP on only for GPU-like
  distributed types and otherwise trains plain DDP, silently. The ``sitecustomize`` below changes that one
  enum after accelerate's own set-up; the FSDP2 wrapping (``fully_shard`` of the preset's layer classes), the
  DTensor shards, the full state dict gathered at save and transformers' FSDP branches are the real code.
  DeepSpeed's CPU accelerator needs no such help (its collectives go through gloo).
- Because a silent fall-back to DDP would give the very same numbers, the same ``sitecustomize`` records on every
  rank which engine trained and whether the weights were held in shards; the tests check that first.

DeepSpeed is not a dependency of vlmtune; its cases skip when it is not installed. The first DeepSpeed run on a
machine compiles its shared-memory collective op (needs g++ and ninja, about 40 s, cached afterwards).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from peft import PeftModel, get_peft_model_state_dict
from safetensors.torch import load_file

from vlmtune.config import load_config
from vlmtune.data.demo import make_demo_data
from vlmtune.models import load_model
from vlmtune.train import train

ROOT = Path(__file__).resolve().parents[2]
FAMILY, WORLD, BATCH, STEPS = "qwen2_5_vl", 2, 2, 4  # the presets' FSDP layer classes are Qwen2.5-VL's
# Loss and gradient norm: fp32 sums in another order (per-rank partial sums joined by gloo, shards) differ by
# about 1e-7 relative; a per-rank mean of the loss instead of the global token mean differs by about 1e-2.
REL = 1e-5
# Weights after 4 Adam steps of lr 1e-3: LoRA weights (about 0.1) differ by about 2e-7. Adam moves every weight by
# about lr whatever the size of its gradient, so in full fine-tuning a weight whose gradient nearly cancels out
# (here the key projections' biases) carries the rounding differences of that cancellation into its steps: up to
# 1.5e-5 apart seen. A wrong data split, a lost shard or an unapplied step moves weights by about lr = 1e-3.
ATOL = {"lora": 1e-5, "full": 1e-4}
# (engine, method): FSDP2 and ZeRO-3 shard the weights themselves, so the full model saved is gathered from the
# shards; ZeRO-2 shards only gradients and optimizer state.
CASES = [("fsdp2", "lora"), ("fsdp2", "full"), ("deepspeed_zero2", "lora"), ("deepspeed_zero3", "lora"),
         ("deepspeed_zero3", "full")]

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch without distributed")

# Imported by every process started with its folder on PYTHONPATH (it shadows any other sitecustomize there).
SITECUSTOMIZE = '''
import json
import os

if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
    from accelerate import state
    from accelerate.utils import DistributedType

    _state_init = state.AcceleratorState.__init__

    def _fsdp_on_cpu(self, *args, fsdp_plugin=None, **kwargs):
        _state_init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if self.distributed_type == DistributedType.MULTI_CPU and fsdp_plugin is not None:
            self.distributed_type = state.PartialState._shared_state["distributed_type"] = DistributedType.FSDP
            self.fsdp_plugin = fsdp_plugin

    state.AcceleratorState.__init__ = _fsdp_on_cpu

if os.environ.get("ENGINE_PROBE"):
    from transformers import Trainer

    _training_step = Trainer.training_step

    def _held_in_part(p):
        if hasattr(p, "to_local"):  # FSDP2: a DTensor, this rank's shard inside
            return p.to_local().numel() < p.numel()
        return hasattr(p, "ds_numel") and p.numel() < p.ds_numel  # ZeRO-3: the rest lives on other ranks

    def _step_then_probe(self, model, *args, **kwargs):  # model: what the engine wrapped
        loss = _training_step(self, model, *args, **kwargs)
        params = list(model.parameters())
        record = {"distributed_type": self.accelerator.distributed_type.value, "wrapper": type(model).__name__,
                  "zero_stage": model.zero_optimization_stage() if hasattr(model, "zero_optimization_stage")
                  else None, "params": len(params), "sharded": sum(map(_held_in_part, params))}
        path = os.path.join(os.environ["ENGINE_PROBE"], "rank" + os.environ.get("RANK", "0") + ".json")
        with open(path, "w") as f:
            json.dump(record, f)
        return loss

    Trainer.training_step = _step_then_probe
'''


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """(train.jsonl, val.jsonl); answers of 1 to 5 words, so the ranks of a step hold different numbers of label
    tokens and a per-rank mean of the loss would differ from the mean over the doubled batch."""
    files = make_demo_data(tmp_path_factory.mktemp("engine_data"), n_train=WORLD * BATCH * STEPS, n_val=1, seed=1)
    records = [json.loads(line) for line in files["train"].read_text().splitlines()]
    for i, record in enumerate(records):
        answer = record["messages"][1]["content"][0]
        answer["text"] = " ".join([answer["text"]] * (1 + i % 5))
    files["train"].write_text("".join(json.dumps(r) + "\n" for r in records))
    return files["train"], files["val"]


@pytest.fixture(scope="module")
def write_config(data, tiny_dir):
    def write(run_dir: Path, method: str, batch: int, at_end: bool = False, save_steps: int | None = None) -> str:
        config = {"model": {"path": str(tiny_dir(FAMILY))}, "data": {"train": str(data[0]), "val": str(data[1])},
                  "train": {"output_dir": str(run_dir), "method": method, "max_steps": STEPS, "batch_size": batch,
                            "lr": 1e-3, "logging_steps": 1, "seed": 3, "progress": False, "report_to": "none",
                            "trace_samples": True, "save_steps": save_steps},
                  "eval": {"at_end": at_end}}
        if method == "lora":
            config["lora"] = {"r": 4, "dropout": 0.0}
        path = run_dir.parent / f"{run_dir.name}.yaml"
        path.write_text(json.dumps(config))
        return str(path)

    return write


@pytest.fixture(scope="module")
def reference(tmp_path_factory, write_config):
    """``reference(method, at_end=False)`` -> folder of a one-process run with the doubled batch (run once)."""
    root, done = tmp_path_factory.mktemp("one"), {}

    def get(method: str, at_end: bool = False) -> Path:
        if (method, at_end) not in done:
            run_dir = root / f"{method}{'_eval' if at_end else ''}"
            train(load_config(write_config(run_dir, method, BATCH * WORLD, at_end)))
            done[method, at_end] = run_dir
        return done[method, at_end]

    return get


def accelerate_config(engine: str, out: Path) -> Path:
    """The preset configs/accelerate/ENGINE.yaml for 2 CPU processes."""
    config = yaml.safe_load((ROOT / "configs" / "accelerate" / f"{engine}.yaml").read_text())
    config.update(num_processes=WORLD, use_cpu=True)
    if "deepspeed_config" in config:  # relative to the folder one launches from
        ds = config["deepspeed_config"]
        ds["deepspeed_config_file"] = str(ROOT / ds["deepspeed_config_file"])
    path = out / f"{engine}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def launch(engine: str, config: str, root: Path, *extra: str) -> tuple[int, str, dict[int, dict]]:
    """``accelerate launch`` of ``vlmtune train CONFIG [EXTRA]`` on 2 CPU processes: (exit code, stderr, rank ->
    probe)."""
    probe = root / f"probe_{Path(config).stem}"
    probe.mkdir()
    (root / "sitecustomize.py").write_text(SITECUSTOMIZE)
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(accelerate_config(engine, root)), "--main_process_port", "0",  # a free port: no collisions
               "-m", "vlmtune.cli.main", "train", config, *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "ENGINE_PROBE": str(probe),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env=env, cwd=root)
    try:
        _, err = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and its workers, not only the launcher
        raise
    probes = {int(p.stem.removeprefix("rank")): json.loads(p.read_text()) for p in probe.glob("rank*.json")}
    return proc.returncode, err, probes


@pytest.fixture(scope="module")
def launched(tmp_path_factory, write_config):
    """``launched(engine, method)`` -> (run folder, rank -> probe) of a 2-process run that exited 0 (run once)."""
    root, done = tmp_path_factory.mktemp("engines"), {}

    def get(engine: str, method: str) -> tuple[Path, dict[int, dict]]:
        if engine.startswith("deepspeed"):
            pytest.importorskip("deepspeed", reason="DeepSpeed is not installed (pip install deepspeed)")
        if (engine, method) not in done:  # a failed run too: the other tests of the case report it, not rerun it
            run_dir = root / f"{engine}_{method}"
            done[engine, method] = run_dir, *launch(engine, write_config(run_dir, method, BATCH), root)
        run_dir, code, err, probes = done[engine, method]
        assert code == 0, err[-3000:]
        return run_dir, probes

    return get


def _logs(run_dir: Path) -> dict[int, dict]:
    entries = (json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines())
    return {e["step"]: e for e in entries if "loss" in e}


def _trace(run_dir: Path, rank: int) -> dict[int, list[str]]:
    lines = (run_dir / f"samples.rank{rank}.jsonl").read_text().splitlines()
    return {s["step"]: s["ids"] for s in map(json.loads, lines)}


@pytest.mark.multiprocess
@pytest.mark.parametrize(("engine", "method"), CASES, ids=[f"{e}-{m}" for e, m in CASES])
def test_the_engine_really_trains_in_shards(engine, method, launched):
    _, probes = launched(engine, method)
    assert sorted(probes) == list(range(WORLD))
    for probe in probes.values():  # as the first training step left them
        if engine == "fsdp2":
            assert probe["distributed_type"] == "FSDP" and probe["wrapper"].startswith("FSDP"), probe
            assert probe["sharded"] == probe["params"] > 0, probe  # every weight split over the ranks
        else:
            stage = int(engine[-1])
            assert probe["distributed_type"] == "DEEPSPEED" and probe["wrapper"] == "DeepSpeedEngine", probe
            assert probe["zero_stage"] == stage, probe
            # ZeRO-3 keeps weights below stage3_param_persistence_threshold (the LoRA weights here) whole once
            # used; ZeRO-2 splits gradients and optimizer state, no weight.
            assert probe["sharded"] > 0 if stage == 3 else probe["sharded"] == 0, probe


def _table(run_dir: Path) -> str:
    """The trainable-parameter table of the run's train.log."""
    log = (run_dir / "train.log").read_text()
    return log[log.index("component "):log.index("% trainable)")]


@pytest.mark.multiprocess
@pytest.mark.parametrize(("engine", "method"), CASES, ids=[f"{e}-{m}" for e, m in CASES])
def test_zero3_loads_the_weights_into_shards_and_counts_them_whole(engine, method, launched, reference):
    run_dir, _ = launched(engine, method)
    partitioned = "weights partitioned over the 2 processes as they loaded (ZeRO-3)"
    # Full fine-tuning loads whole (see train/run.py: the weight names transformers saves it under).
    assert (partitioned in (run_dir / "train.log").read_text()) == (engine == "deepspeed_zero3" and method == "lora")
    assert _table(run_dir) == _table(reference(method))


@pytest.mark.multiprocess
@pytest.mark.parametrize(("engine", "method"), CASES, ids=[f"{e}-{m}" for e, m in CASES])
def test_loss_gradient_norm_and_val_loss_match_one_process_with_the_doubled_batch(engine, method, launched,
                                                                                  reference):
    run_dir, _ = launched(engine, method)
    one = reference(method)
    for step, ids in _trace(one, 0).items():  # each rank trained on its own half of the same global batch
        halves = [_trace(run_dir, rank)[step] for rank in range(WORLD)]
        assert all(len(h) == BATCH for h in halves) and sorted(halves[0] + halves[1]) == sorted(ids), step
    got, want = _logs(run_dir), _logs(one)
    assert sorted(got) == sorted(want) == list(range(1, STEPS + 1))
    for step in want:
        assert got[step]["loss"] == pytest.approx(want[step]["loss"], rel=REL), step
        assert got[step]["grad_norm"] == pytest.approx(want[step]["grad_norm"], rel=REL), step
    val = [json.loads((d / "metrics.json").read_text())["val_loss"] for d in (run_dir, one)]
    assert val[0] == pytest.approx(val[1], rel=REL)  # the last validation, a collective forward


@pytest.mark.multiprocess
@pytest.mark.parametrize(("engine", "method"), CASES, ids=[f"{e}-{m}" for e, m in CASES])
def test_the_saved_weights_are_whole_load_and_match_one_process(engine, method, launched, reference, tiny_dir):
    run_dir, _ = launched(engine, method)
    one = reference(method)
    folder, file = ("adapter", "adapter_model.safetensors") if method == "lora" else ("model", "model.safetensors")
    # Every weight file but the rendered samples of RUN/cache: the weights are written once, by the main process.
    saved = [p for p in run_dir.rglob("*.safetensors") if not p.is_relative_to(run_dir / "cache")]
    assert saved == [run_dir / folder / file]
    want = load_file(one / folder / file)
    if method == "lora":
        model = PeftModel.from_pretrained(load_model(tiny_dir(FAMILY)), run_dir / folder)
        got = get_peft_model_state_dict(model)
        assert any(w.abs().max() > 0 for k, w in got.items() if "lora_B" in k), "the adapter did not train"
    else:
        load_model(run_dir / folder)  # an ordinary checkpoint folder
        got = load_file(run_dir / folder / file)
        base = load_file(tiny_dir(FAMILY) / file)
        assert not torch.equal(got["lm_head.weight"], base["lm_head.weight"]), "the model did not train"
    assert sorted(got) == sorted(want)
    for key, value in want.items():  # full shapes: gathered from the shards, not one rank's piece
        torch.testing.assert_close(got[key], value, rtol=0, atol=ATOL[method], msg=key)


@pytest.mark.multiprocess
def test_held_out_generation_at_the_end_runs_on_sharded_weights(tmp_path, write_config, reference):
    # Each forward under FSDP gathers weight shards from every rank: all of them generate, the main one writes.
    code, err, _ = launch("fsdp2", write_config(tmp_path / "fsdp2_eval", "lora", BATCH, at_end=True), tmp_path)
    assert code == 0, err[-3000:]
    got = (tmp_path / "fsdp2_eval" / "eval" / "predictions.jsonl").read_text()
    assert got == (reference("lora", at_end=True) / "eval" / "predictions.jsonl").read_text()


def test_an_engine_config_the_trainer_does_not_use_is_reported(monkeypatch, caplog):
    from types import SimpleNamespace

    from vlmtune.train.trainer_inputs import warn_if_engine_unused

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED", raising=False)
    with caplog.at_level("WARNING", logger="vlmtune"):
        warn_if_engine_unused(SimpleNamespace(is_fsdp_enabled=True, is_deepspeed_enabled=False))
        assert not caplog.text
        warn_if_engine_unused(SimpleNamespace(is_fsdp_enabled=False, is_deepspeed_enabled=False))
    assert "accelerate FSDP config, but FSDP is not in use here" in caplog.text and "DeepSpeed" not in caplog.text


@pytest.mark.multiprocess
@pytest.mark.parametrize("engine", ["fsdp2", "deepspeed_zero3"])
def test_a_run_resumed_from_a_sharded_checkpoint_continues_exactly(engine, tmp_path, write_config):
    """The checkpoint of a sharded run (optimizer, scheduler, RNG and data position) restores under the same
    engine, and steps 3 and 4 after resuming at step 2 are those of the run that never stopped."""
    if engine.startswith("deepspeed"):
        pytest.importorskip("deepspeed", reason="DeepSpeed is not installed (pip install deepspeed)")
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    code, err, _ = launch(engine, write_config(whole, "lora", BATCH, save_steps=2), tmp_path)
    assert code == 0, err[-3000:]
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copytree(whole / "checkpoints" / "checkpoint-2", resumed / "checkpoints" / "checkpoint-2")
    code, err, _ = launch(engine, write_config(resumed, "lora", BATCH, save_steps=2), tmp_path, "--resume", "auto")
    assert code == 0, err[-3000:]
    got, want = _logs(resumed), _logs(whole)
    assert sorted(got) == [3, 4]
    for step in got:
        assert got[step]["loss"] == pytest.approx(want[step]["loss"], rel=1e-6), step
        assert got[step]["grad_norm"] == pytest.approx(want[step]["grad_norm"], rel=1e-6), step
    a, b = (load_file(d / "adapter" / "adapter_model.safetensors") for d in (resumed, whole))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=0, atol=1e-7) for k in a)
