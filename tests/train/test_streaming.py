"""``data.streaming``: records read, checked and rendered as training reaches them; bad ones dropped with the data
check's messages and counted; a resumed run sees exactly the samples an uninterrupted one sees."""

import json
import shutil
from collections import Counter

import pytest
import yaml

from tests.conftest import write_jsonl
from vlmtune.cli.main import main
from vlmtune.data.check import check_dataset
from vlmtune.data.stream import drawn_source


def _records(n: int, tag: str) -> list[dict]:
    return [{"messages": [{"role": "user", "content": f"{tag} question {i}?"},
                          {"role": "assistant", "content": f"{tag} {i}"}]} for i in range(n)]


def _config(tmp_path, tiny_dir, name: str, data: dict, **train) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "model": {"path": str(tiny_dir("qwen2_vl"))}, "data": {"streaming": True, **data}, "lora": {"r": 4},
        "train": {"output_dir": str(tmp_path / name), "batch_size": 2, "seed": 3, "trace_samples": True,
                  "progress": False, "report_to": "none", "logging_steps": 1, "lr": 1e-3, **train}}))
    return str(path)


def _trace(run) -> list[tuple[int, list[str]]]:
    return [(e["step"], e["ids"]) for e in map(json.loads, (run / "samples.rank0.jsonl").read_text().splitlines())]


def _losses(run) -> dict[int, float]:
    entries = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {e["step"]: e["loss"] for e in entries if "loss" in e}


def test_a_stream_without_max_steps_is_refused_in_one_line(tmp_path, tiny_dir, capsys):
    data = write_jsonl(tmp_path / "a.jsonl", _records(4, "a"))
    assert main(["train", _config(tmp_path, tiny_dir, "run", {"train": str(data)})]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "vlmtune train: error: data.streaming needs train.max_steps: a stream has no known length, so no epoch to "
        "count")


def test_stream_draws_give_each_source_its_weight():
    counts = Counter(drawn_source(3, k, [0.7, 0.2, 0.1]) for k in range(100_000))
    assert [round(counts[i] / 100_000, 2) for i in range(3)] == [0.70, 0.20, 0.10]
    assert [drawn_source(3, k, [0.7, 0.2, 0.1]) for k in range(50)] == \
        [drawn_source(3, k, [0.7, 0.2, 0.1]) for k in range(50)]


@pytest.mark.slow  # three short training runs
def test_bad_records_are_dropped_as_read_and_a_resumed_stream_goes_on_exactly(tmp_path, tiny_dir):
    a = _records(14, "a")
    a[9] = {"messages": [{"role": "user", "content": "hi"}]}  # line 10: read after the first check
    a[11] = {"messages": [{"role": "user", "content": [{"type": "image", "image": "gone.png"}]},
                          {"role": "assistant", "content": "x"}]}
    first = write_jsonl(tmp_path / "a.jsonl", a)
    second = write_jsonl(tmp_path / "b.jsonl", _records(6, "b"))
    data = {"train": [{"path": str(first), "weight": 0.6}, {"path": str(second), "weight": 0.4}],
            "check_samples": 4}
    straight = tmp_path / "straight"
    assert main(["train", _config(tmp_path, tiny_dir, "straight", data, max_steps=10, save_steps=5)]) == 0
    trace = _trace(straight)
    ids = [i for _, batch in trace for i in batch]
    assert len(ids) == 20 and f"{first}:10" not in ids and f"{first}:12" not in ids
    assert {i.split(":")[0] for i in ids} == {str(first), str(second)}
    assert Counter(ids).most_common(1)[0][1] >= 2  # b.jsonl (6 records) is read again: a stream has no end

    metrics = json.loads((straight / "metrics.json").read_text())
    assert metrics["stream_dropped"] == 2
    assert metrics["stream_dropped_reasons"] == {"no assistant turn: nothing to train on": 1,
                                                 "image file not found ...": 1}
    dropped = [json.loads(line) for line in (straight / "dropped.jsonl").read_text().splitlines()]
    assert [d["where"] for d in dropped[:2]] == [f"{first}:10", f"{first}:12"]
    assert [d["message"] for d in dropped[:2]] == _check_problems(first)  # the data check's own words
    _resume_at_step(tmp_path, tiny_dir, straight, data, max_steps=10, save_steps=5)


def _check_problems(path) -> list[str]:
    """The problems ``vlmtune data check`` finds in ``path``, as it prints them."""
    return [str(problem) for problem in check_dataset(path).problems]


def _resume_at_step(tmp_path, tiny_dir, straight, data: dict, **train) -> None:
    """Resume a copy of the finished run ``straight`` from its first checkpoint, as after a crash there: the
    steps after it see the same samples, with the same losses, as the uninterrupted run's."""
    every = train["save_steps"]
    resumed = tmp_path / f"{straight.name}-resumed"
    shutil.copytree(straight, resumed)
    for checkpoint in (resumed / "checkpoints").iterdir():
        if checkpoint.name != f"checkpoint-{every}":
            shutil.rmtree(checkpoint)
    for name in ("samples.rank0.jsonl", "metrics.jsonl"):
        lines = (resumed / name).read_text().splitlines()
        (resumed / name).write_text("".join(line + "\n" for line in lines if json.loads(line).get("step", 0) <= every))
    config = _config(tmp_path, tiny_dir, resumed.name, data, **train)
    assert main(["train", config, "--resume", "auto"]) == 0
    assert _trace(resumed) == _trace(straight)
    after, reference = _losses(resumed), _losses(straight)
    assert sorted(after) == list(range(1, train["max_steps"] + 1))
    for step in range(every + 1, train["max_steps"] + 1):
        assert after[step] == pytest.approx(reference[step], rel=1e-4, abs=1e-5), step


@pytest.mark.slow  # training runs with DataLoader worker processes
def test_workers_share_the_shards_without_repeats_and_resume_exactly(tmp_path, tiny_dir):
    shards = [write_jsonl(tmp_path / f"s-{k}.jsonl", _records(6, f"s{k}")) for k in range(4)]
    data = {"train": str(tmp_path / "s-*.jsonl")}
    run = tmp_path / "workers"
    assert main(["train", _config(tmp_path, tiny_dir, "workers", data, max_steps=12, save_steps=6,
                                  dataloader_workers=2)]) == 0
    trace = _trace(run)
    ids = [i for _, batch in trace for i in batch]
    assert sorted(ids) == sorted(f"{p}:{line}" for p in shards for line in range(1, 7))  # 24 records, each once
    _resume_at_step(tmp_path, tiny_dir, run, data, max_steps=12, save_steps=6, dataloader_workers=2)


@pytest.mark.slow  # a training run
def test_parquet_shards_stream_row_by_row(tmp_path, tiny_dir, images):
    datasets = pytest.importorskip("datasets")
    shards = []
    for k in range(2):
        rows = {"image": ["red.png", "blue.png", "green.png"], "query": [f"Colour {k}.{i}?" for i in range(3)],
                "label": ["red", "blue", "green"]}
        shards.append(tmp_path / f"part-{k}.parquet")
        datasets.Dataset.from_dict(rows).to_parquet(shards[-1])
    data = {"train": [str(p) for p in shards], "check_samples": 2}
    assert main(["train", _config(tmp_path, tiny_dir, "parquet", data, max_steps=3)]) == 0
    log = (tmp_path / "parquet" / "train.log").read_text()
    assert "plan: data.train: streamed; 2 of its first 2 records usable" in log
    ids = [i for _, batch in _trace(tmp_path / "parquet") for i in batch]
    assert ids == [f"{shards[0]}[0]", f"{shards[0]}[1]", f"{shards[0]}[2]", f"{shards[1]}[0]", f"{shards[1]}[1]",
                   f"{shards[1]}[2]"]
