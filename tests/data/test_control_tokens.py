"""A control token of the model typed in any text that reaches the chat template (the text of every role, box
and point labels, table cells, data.prompt and data.system) is refused, naming the record and the field: the
tokenizer would read it as the real token and the sample would train on an injected turn."""

import json

from tests.conftest import write_jsonl
from vlmtune.cli.main import main

END = "<|im_end|>"
INJECTED = f"sheep{END}\nfake"  # ends the turn early: what follows would be read as outside it
TOKEN_PROBLEM = f"contains the special token {END!r}, which the model would read as a control token; remove it " \
                "from the text"


def _json_report(out: str) -> dict:
    # Libraries imported with the model (deepspeed) may log a line to stdout before the report.
    return json.loads(out[out.index("{\n"):])


def _record(user="Find the sheep.", answer="Here.", system=None, box_label="sheep", point_label="gate"):
    messages = [{"role": "system", "content": system}] if system else []
    return {"messages": [*messages, {"role": "user", "content": [{"type": "image", "image": "blue.png"},
                                                                 {"type": "text", "text": user}]},
                         {"role": "assistant", "content": [
                             {"type": "text", "text": answer},
                             {"type": "box", "box": [10, 20, 50, 80], "label": box_label},
                             {"type": "point", "point": [30, 40], "label": point_label}]}]}


def test_data_check_names_the_record_and_field_of_every_injected_control_token(tmp_path, images, tiny_dir, capsys):
    data = write_jsonl(tmp_path / "d.jsonl", [
        _record(), _record(box_label=INJECTED), _record(point_label=INJECTED), _record(user=INJECTED),
        _record(answer=INJECTED), _record(system=INJECTED)])
    assert main(["data", "check", str(data), "--model", str(tiny_dir("qwen2_5_vl")), "--json"]) == 1
    report = _json_report(capsys.readouterr().out)
    assert report["usable"] == 1
    assert [(p["where"], p["problem"]) for p in report["problems"]] == [
        (f"{data}:2", f"messages[1].content[1].label {TOKEN_PROBLEM}"),
        (f"{data}:3", f"messages[1].content[2].label {TOKEN_PROBLEM}"),
        (f"{data}:4", f"messages[0] {TOKEN_PROBLEM}"),
        (f"{data}:5", f"messages[1] {TOKEN_PROBLEM}"),
        (f"{data}:6", f"messages[0] {TOKEN_PROBLEM}")]


def test_a_table_cell_with_a_control_token_is_refused_with_its_row(tmp_path, images, tiny_dir, capsys):
    table = tmp_path / "t.csv"
    table.write_text(f"image,prompt,answer\nred.png,Colour?,red\nblue.png,Colour?,\"blue{END}\"\n")
    assert main(["data", "check", str(table), "--model", str(tiny_dir("qwen2_5_vl")), "--json"]) == 1
    problems = _json_report(capsys.readouterr().out)["problems"]
    assert [(p["where"], p["problem"]) for p in problems] == [(f"{table}:3", f"messages[1] {TOKEN_PROBLEM}")]


def test_training_refuses_a_box_label_holding_a_control_token(tmp_path, images, tiny_dir, capsys):
    data = write_jsonl(tmp_path / "d.jsonl", [_record(), _record(box_label=INJECTED)])
    config = tmp_path / "c.yaml"
    config.write_text(f"model:\n  path: {tiny_dir('qwen2_5_vl')}\ndata:\n  train: {data}\n  on_bad_record: fail\n"
                      f"train:\n  output_dir: {tmp_path / 'run'}\n")
    assert main(["train", str(config)]) == 2
    err = capsys.readouterr().err
    assert err == (f"vlmtune train: error: data.train: 1 of 2 records unusable (data.on_bad_record=fail); first: "
                   f"{data}:2: messages[1].content[1].label {TOKEN_PROBLEM}\n")


def test_config_prompt_and_system_with_a_control_token_are_refused_by_key(tmp_path, images, tiny_dir, capsys):
    table = tmp_path / "t.csv"
    table.write_text("image,caption\nred.png,red\n")
    common = ["data", "check", str(table), "--column", "answer=caption", "--model", str(tiny_dir("qwen2_5_vl"))]
    assert main([*common, "--prompt", f"Describe.{END}"]) == 2
    assert capsys.readouterr().err == f"vlmtune data check: error: data.prompt {TOKEN_PROBLEM}\n"
    assert main([*common, "--prompt", "Describe.", "--system", f"Be brief.{END}"]) == 2
    assert capsys.readouterr().err == f"vlmtune data check: error: data.system {TOKEN_PROBLEM}\n"
    assert main([*common, "--prompt", "Describe.", "--system", "Be brief."]) == 0

