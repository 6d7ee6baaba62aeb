"""`vlmtune data check | convert | split` from the command line."""

import json

from tests.conftest import conversation, write_jsonl
from vlmtune.cli.main import main
from vlmtune.data import read_samples
from vlmtune.data.formats import ReadOptions

OUTSIDE = ReadOptions(allow_outside_root=True)  # split outputs live in subfolders, the images beside them


def _llava(tmp_path, n=20):
    records = [{"id": str(i), "image": "red.png" if i % 2 else "blue.png",
                "conversations": [{"from": "human", "value": f"<image>\nQuestion {i}?"},
                                  {"from": "gpt", "value": f"answer {i}"}]} for i in range(n)]
    path = tmp_path / "llava.json"
    path.write_text(json.dumps(records, indent=2))
    return path, records


def test_check_exit_code_and_json(tmp_path, images, capsys):
    good = write_jsonl(tmp_path / "good.jsonl", [conversation()])
    assert main(["data", "check", str(good)]) == 0
    assert "1 records, 1 usable, 0 unusable; 2 images, 5 turns" in capsys.readouterr().out
    bad = write_jsonl(tmp_path / "bad.jsonl", [conversation(), conversation("nope.png")])
    assert main(["data", "check", str(bad), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["usable"] == 1 and report["problems"][0]["where"] == f"{bad}:2"
    assert "image file not found 'nope.png'" in report["problems"][0]["problem"]


def test_check_with_a_model_prints_token_statistics(tmp_path, images, tiny_dir, capsys):
    data = write_jsonl(tmp_path / "d.jsonl", [conversation(), conversation("green.png")])
    assert main(["data", "check", str(data), "--model", str(tiny_dir("qwen2_vl")), "--max-length", "60"]) == 1
    out = capsys.readouterr().out
    assert "exceed max_length=60" in out and f"{data}:1" in out
    assert main(["data", "check", str(data), "--model", str(tiny_dir("qwen2_vl"))]) == 0
    out = capsys.readouterr().out
    assert "tokens per sample (max_length 4096)" in out and "visual" in out


def test_convert_writes_the_canonical_form_of_any_format(tmp_path, images, capsys):
    source, _ = _llava(tmp_path, n=3)
    out = tmp_path / "out.jsonl"
    assert main(["data", "convert", str(source), "--to", "messages", "-o", str(out)]) == 0
    assert f"format llava, 3 records; wrote 3 samples to {out}" in capsys.readouterr().out
    assert [s.messages for s in read_samples(out)] == [s.messages for s in read_samples(source)]


def test_split_is_deterministic_disjoint_and_stable_under_reordering(tmp_path, images, capsys):
    source, records = _llava(tmp_path)
    records.append(records[0])  # a duplicate must land on one side only
    source.write_text(json.dumps(records))
    assert main(["data", "split", str(source), "--val", "0.2", "--seed", "3", "-o", str(tmp_path / "a")]) == 0
    train, val = (read_samples(tmp_path / "a" / f"{name}.jsonl", options=OUTSIDE) for name in ("train", "val"))
    answers = {s.messages[-1].text for s in val}
    assert len(val) in (4, 5) and len(train) + len(val) == 21
    assert not answers & {s.messages[-1].text for s in train}
    source.write_text(json.dumps(records[::-1]))
    assert main(["data", "split", str(source), "--val", "0.2", "--seed", "3", "-o", str(tmp_path / "b")]) == 0
    assert {s.messages[-1].text for s in read_samples(tmp_path / "b" / "val.jsonl", options=OUTSIDE)} == answers
    main(["data", "split", str(source), "--val", "0.2", "--seed", "4", "-o", str(tmp_path / "c")])
    assert {s.messages[-1].text for s in read_samples(tmp_path / "c" / "val.jsonl", options=OUTSIDE)} != answers


def test_bad_column_flag_is_one_line(tmp_path, capsys):
    assert main(["data", "check", str(tmp_path / "x.csv"), "--column", "image"]) == 2
    assert "vlmtune data check: error:" in capsys.readouterr().err
