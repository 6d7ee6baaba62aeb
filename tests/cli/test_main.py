import json

from transformers import AutoConfig

from vlmtune.cli.main import main


def test_make_tiny_model_writes_a_loadable_checkpoint(tmp_path, capsys):
    assert main(["make-tiny-model", "--family", "qwen3_vl", str(tmp_path / "m")]) == 0
    assert AutoConfig.from_pretrained(tmp_path / "m").model_type == "qwen3_vl"
    assert json.loads((tmp_path / "m" / "processor_config.json").read_text())["processor_class"] == "Qwen3VLProcessor"


def test_unknown_family_is_one_clear_line(tmp_path, capsys):
    assert main(["make-tiny-model", "--family", "qwen2.5-vl", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "model_type='qwen2.5-vl'" in err and "qwen2_5_vl" in err and "Traceback" not in err


def test_bad_data_record_stops_training_with_its_line(tmp_path, capsys):
    data = tmp_path / "t.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n'
                    '{"messages": [{"role": "human", "content": "hi"}]}\n')
    config = tmp_path / "c.yaml"
    config.write_text(f"model:\n  path: {tmp_path / 'no-model'}\ndata:\n  train: {data}\n")
    assert main(["train", str(config)]) == 2
    assert f"{data}:2 field 'messages[0].role': unknown role 'human'" in capsys.readouterr().err
