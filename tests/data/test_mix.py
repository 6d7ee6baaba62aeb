"""``data.train`` as several sources mixed by weight: an epoch holds each source's share, exactly, for a seed."""

import json
from collections import Counter

import pytest
import yaml

from tests.conftest import write_jsonl
from vlmtune.cli.main import main


def _records(n: int, tag: str) -> list[dict]:
    return [{"messages": [{"role": "user", "content": f"{tag} question {i}?"},
                          {"role": "assistant", "content": f"{tag} {i}"}]} for i in range(n)]


def _train(tmp_path, tiny_dir, train, name: str, seed: int = 7) -> list[str]:
    """Train one epoch over ``train`` from the command line: the ids of the samples seen, in order."""
    config = tmp_path / f"{name}.yaml"
    config.write_text(yaml.safe_dump({
        "model": {"path": str(tiny_dir("qwen2_vl"))}, "data": {"train": train},
        "lora": {"r": 4}, "train": {"output_dir": str(tmp_path / name), "batch_size": 10, "seed": seed,
                                    "trace_samples": True, "progress": False, "report_to": "none",
                                    "group_by_length": False}}))
    assert main(["train", str(config)]) == 0
    trace = (tmp_path / name / "samples.rank0.jsonl").read_text().splitlines()
    return [i for line in trace for i in json.loads(line)["ids"]]


def _source(sample_id: str) -> str:
    """a.jsonl, b.jsonl, or c for either shard of c-*.jsonl."""
    return sample_id.split(":")[0].rsplit("/", 1)[1].split("-")[0]


@pytest.mark.slow  # three one-epoch training runs
def test_an_epoch_holds_each_source_by_its_weight(tmp_path, tiny_dir):
    a = write_jsonl(tmp_path / "a.jsonl", _records(10, "a"))  # 10 samples asked to give 50: 5 times each
    b = write_jsonl(tmp_path / "b.jsonl", _records(30, "b"))  # 30 asked to give 30: each once
    shards = [write_jsonl(tmp_path / f"c-{k}.jsonl", _records(30, f"c{k}")) for k in range(2)]  # 60 give 20
    mixture = [{"path": str(a), "weight": 0.5}, {"path": str(b), "weight": 0.3},
               {"path": str(tmp_path / "c-*.jsonl"), "weight": 0.2, "format": "messages"}]
    seen = _train(tmp_path, tiny_dir, mixture, "mix")
    assert len(seen) == 100
    assert Counter(map(_source, seen)) == {"a.jsonl": 50, "b.jsonl": 30, "c": 20}
    assert set(Counter(i for i in seen if "/a.jsonl" in i).values()) == {5}
    assert sorted(Counter(i for i in seen if "/b.jsonl" in i).values()) == [1] * 30
    c_seen = [i for i in seen if "/c-" in i]
    assert len(set(c_seen)) == 20 and {i.split(":")[0] for i in c_seen} <= {str(p) for p in shards}

    again = _train(tmp_path, tiny_dir, mixture, "again")
    assert again == seen  # the same seed draws the same samples in the same order
    other = _train(tmp_path, tiny_dir, mixture, "other", seed=8)
    assert Counter(map(_source, other)) == Counter(map(_source, seen))
    assert set(other) != set(seen)  # another seed draws other samples from the sources that give a part


def test_a_glob_that_matches_nothing_is_refused_in_one_line(tmp_path, tiny_dir, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "model": {"path": str(tiny_dir("qwen2_vl"))},
        "data": {"train": [{"path": str(tmp_path / "none-*.jsonl"), "weight": 1}]},
        "train": {"output_dir": str(tmp_path / "run")}}))
    assert main(["train", str(config)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"vlmtune train: error: data.train: no file matches {str(tmp_path / 'none-*.jsonl')!r}")
