"""`vlmtune eval` names each prediction by its record, and keeps the record's own id to join it with the user's data."""

import json

from vlmtune.cli.main import main


def test_predictions_name_each_record_of_a_one_line_array_and_keep_its_own_id(tmp_path, images, tiny_dir, capsys):
    records = [{"id": own, "image": image, "conversations": [{"from": "human", "value": "<image>\nColour?"},
                                                             {"from": "gpt", "value": answer}]}
               for own, image, answer in (("val-a", "red.png", "red"), (None, "blue.png", "blue"),
                                          (7, "green.png", "green"))]
    del records[1]["id"]
    data = tmp_path / "val.json"
    data.write_text(json.dumps(records))  # one line
    out = tmp_path / "eval"
    assert main(["eval", "--model", str(tiny_dir("qwen2_5_vl")), "--data", str(data), "--no-compare-base",
                 "--max-new-tokens", "2", "-o", str(out), "--no-progress"]) == 0
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [f'{data}[0] (line 1, id "val-a")', f"{data}[1] (line 1)",
                                       f"{data}[2] (line 1, id 7)"]
    assert [r.get("record_id") for r in rows] == ["val-a", None, 7]
    assert [r["reference"] for r in rows] == ["red", "blue", "green"]
