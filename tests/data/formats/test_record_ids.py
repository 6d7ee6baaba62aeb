"""Every record has its own name in every message: the line of a JSON lines or CSV file, the index (and start line)
of an element of a JSON array, the row index of a dataset, each with the record's own ``id`` where it has one."""

import json

import datasets

from tests.conftest import write_jsonl
from vlmtune.cli.main import main


def _llava(i, image="red.png", **extra):
    return {**extra, "image": image, "conversations": [{"from": "human", "value": f"<image>\nQuestion {i}?"},
                                                       {"from": "gpt", "value": f"answer {i}"}]}


def _not_found(tmp_path):
    return (f"image file not found 'missing.png' (resolved against {tmp_path}; set data.media_root if paths are "
            "relative to another folder)")


def test_data_check_names_each_bad_record_of_a_one_line_json_array_apart(tmp_path, images, capsys):
    bad = {3: {"id": "q3"}, 5: {"id": 5}, 7: {}, 8: {}}
    records = [_llava(i, "missing.png", **bad[i]) if i in bad else _llava(i, id=f"q{i}") for i in range(10)]
    path = tmp_path / "train.json"
    path.write_text(json.dumps(records))  # one line
    assert main(["data", "check", str(path)]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"{path}: format llava, 10 records, 6 usable, 4 unusable; 6 images, 12 turns",
        "problems:",
        f'  {path}[3] (line 1, id "q3") field \'image[0]\': {_not_found(tmp_path)}',
        f"  {path}[5] (line 1, id 5) field 'image[0]': {_not_found(tmp_path)}",
        f"  {path}[7] (line 1) field 'image[0]': {_not_found(tmp_path)}",
        f"  {path}[8] (line 1) field 'image[0]': {_not_found(tmp_path)}",
    ]


def test_a_pretty_printed_array_names_the_line_each_element_starts_on(tmp_path, images, capsys):
    path = tmp_path / "train.json"
    path.write_text(json.dumps([_llava(0), _llava(1, "missing.png")], indent=1))
    second = 2 + json.dumps(_llava(0), indent=1).count("\n") + 1
    assert main(["data", "check", str(path), "--json"]) == 1
    [problem] = json.loads(capsys.readouterr().out)["problems"]
    assert problem["where"] == f"{path}[1] (line {second})" and problem["field"] == "image[0]"


def test_json_lines_csv_and_dataset_rows_carry_the_records_own_id(tmp_path, images, capsys):
    path = write_jsonl(tmp_path / "d.jsonl", [_llava(0, id="a"), _llava(1, "missing.png", id="b-" + "x" * 70)])
    assert main(["data", "check", str(path)]) == 1
    assert f'  {path}:2 (id "b-{"x" * 58}...") field \'image[0]\': ' in capsys.readouterr().out

    table = tmp_path / "t.csv"
    table.write_text("id,image,answer\nr1,red.png,red\nr2,missing.png,grey\n,missing.png,none\n")
    assert main(["data", "check", str(table), "--prompt", "Colour?", "--json"]) == 1
    assert [p["where"] for p in json.loads(capsys.readouterr().out)["problems"]] == [f'{table}:3 (id "r2")',
                                                                                      f"{table}:4"]
    parquet = tmp_path / "rows.parquet"
    datasets.Dataset.from_dict({"id": [10, 11, 12], "image": ["red.png", "missing.png", "nope.png"],
                                "question": ["Colour?"] * 3, "answer": ["red", "grey", "none"]}).to_parquet(parquet)
    assert main(["data", "check", str(parquet), "--json"]) == 1
    assert [p["where"] for p in json.loads(capsys.readouterr().out)["problems"]] == [f"{parquet}[1] (id 11)",
                                                                                      f"{parquet}[2] (id 12)"]
