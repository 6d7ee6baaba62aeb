"""Format detection looks past unparsable first lines: a comment or a corrupt first line is one unusable record,
named with its line and reason, and the rest of the file reads as the format its records have."""

import json

from tests.conftest import conversation
from vlmtune.cli.main import main

LLAVA = {"image": "red.png", "conversations": [{"from": "human", "value": "<image>\nColour?"},
                                               {"from": "gpt", "value": "red"}]}


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_a_comment_first_line_is_one_unusable_record(tmp_path, images, capsys):
    path = _write(tmp_path / "d.jsonl", ["# exported 2026-11-30", json.dumps(conversation()),
                                         json.dumps(conversation("green.png"))])
    assert main(["data", "check", str(path)]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"{path}: format messages, 3 records, 2 usable, 1 unusable; 4 images, 10 turns", "problems:",
        f"  {path}:1: not valid JSON: Expecting value at column 1 (JSON lines have no comment lines)"]


def test_corrupt_lines_before_the_first_record_are_each_reported(tmp_path, images, capsys):
    path = _write(tmp_path / "d.jsonl", ['{"image": "red.png", "conversations": [{"fro', "", "\x00\x01junk",
                                         json.dumps(LLAVA), json.dumps({**LLAVA, "image": "blue.png"})])
    assert main(["data", "check", str(path)]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"{path}: format llava, 4 records, 2 usable, 2 unusable; 2 images, 4 turns", "problems:",
        f"  {path}:1: not valid JSON: Invalid control character at column 45",
        f"  {path}:3: not valid JSON: Expecting value at column 1"]


def test_a_first_record_no_reader_knows_does_not_decide_the_format(tmp_path, images, capsys):
    path = _write(tmp_path / "d.jsonl", [json.dumps({"dataset": "colours", "version": 2}), json.dumps(LLAVA)])
    assert main(["data", "check", str(path), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert (report["format"], report["usable"]) == ("llava", 1)
    assert [(p["where"], p["field"]) for p in report["problems"]] == [(f"{path}:1", "conversations")]


def test_a_file_with_no_readable_record_names_its_first_bad_line(tmp_path, capsys):
    path = _write(tmp_path / "d.jsonl", ["# only a comment", "not json either"])
    assert main(["data", "check", str(path)]) == 2
    assert capsys.readouterr().err.startswith(
        f"vlmtune data check: error: {path}: format not recognised (no JSON record could be read from it; "
        f"{path}:1: not valid JSON: Expecting value at column 1 (JSON lines have no comment lines)); pass one of ")
