"""A format error says what the file is: an explicit format that reads nothing from a file another reader
recognises names that format, a table or dataset file given to a JSON reader names its reader, and a file no
reader recognises shows its first record's keys. ``data check`` and ``train`` report the same error."""

import json

import pytest

from tests.conftest import conversation, write_jsonl
from vlmtune.cli.main import main

EVENTS = [{"type": "action_description", "screenshot": "red.png", "instruction": "Save the file",
           "bbox": [10, 5, 40, 30]},
          {"type": "context_extraction", "screenshot": "blue.png", "instruction": "Total?", "text": "$42.10"}]


def test_gui_events_format_on_the_messages_file_data_split_wrote(tmp_path, images, tiny_dir, capsys):
    # The GUI flow: events split 90/10 by `data split`, which writes messages JSONL, then training.
    write_jsonl(tmp_path / "events.jsonl", [{**e, "instruction": f"{e['instruction']} ({i})"}
                                            for i in range(5) for e in EVENTS])
    assert main(["data", "split", str(tmp_path / "events.jsonl"), "--val", "0.2"]) == 0
    train = tmp_path / "train.jsonl"
    expected = f"{train} looks like messages, not gui_events: set data.format: auto (or messages)"
    capsys.readouterr()

    assert main(["data", "check", str(train), "--format", "gui_events"]) == 2
    assert capsys.readouterr().err == f"vlmtune data check: error: {expected}\n"
    config = tmp_path / "c.yaml"
    config.write_text(f"model:\n  path: {tiny_dir('qwen2_5_vl')}\ndata:\n  train: {train}\n  format: gui_events\n"
                      f"train:\n  output_dir: {tmp_path}/run\n")
    assert main(["train", str(config)]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"vlmtune train: error: {expected}"
    # Read as what it is, every record is usable.
    assert main(["data", "check", str(train), "--format", "auto"]) == 0
    assert "8 records, 8 usable, 0 unusable" in capsys.readouterr().out


@pytest.mark.parametrize("name, kind, reader", [
    ("train.parquet", "parquet", "hf"), ("train.arrow", "arrow", "hf"), ("train.csv", "CSV", "table")])
def test_a_table_or_dataset_file_given_to_a_json_reader_names_its_reader(name, kind, reader, tmp_path, capsys):
    path = tmp_path / name
    path.write_bytes(b"image,answer\nred.png,red\n")  # the suffix says what the file is; nothing is read
    assert main(["data", "check", str(path), "--format", "messages"]) == 2
    assert capsys.readouterr().err == (
        f"vlmtune data check: error: {path}: this is {kind}, not messages data: set data.format: {reader} (or auto)\n")


def test_a_dataset_folder_given_to_a_json_reader(tmp_path, capsys):
    folder = tmp_path / "chartqa"
    folder.mkdir()
    (folder / "state.json").write_text("{}")
    assert main(["data", "check", str(folder), "--format", "sharegpt"]) == 2
    assert capsys.readouterr().err == (
        f"vlmtune data check: error: {folder}: this is a folder (a Hugging Face save_to_disk dataset), not sharegpt "
        "data: set data.format: hf (or auto)\n")


def test_format_not_recognised_shows_the_first_records_keys(tmp_path, capsys):
    path = write_jsonl(tmp_path / "odd.jsonl", [{"img": "a.png", "q": "What?", "a": "That."}])
    assert main(["data", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"vlmtune data check: error: {path}: format not recognised (the first record has keys "
                          "'img', 'q', 'a'); pass one of ")
    (tmp_path / "list.json").write_text(json.dumps([[1, 2]]))
    assert main(["data", "check", str(tmp_path / "list.json")]) == 2
    assert "(the first record is a JSON list, not an object)" in capsys.readouterr().err


def test_a_right_format_with_only_bad_records_still_lists_them(tmp_path, images, capsys):
    # Nothing usable, but the file is what the format says: the records' own problems, not a format error.
    path = write_jsonl(tmp_path / "d.jsonl", [conversation("nope.png")])
    assert main(["data", "check", str(path), "--format", "messages"]) == 1
    assert "image file not found 'nope.png'" in capsys.readouterr().out
