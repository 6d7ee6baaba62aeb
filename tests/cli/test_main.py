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


def test_bad_data_record_stops_training_with_its_line_when_asked_to(tmp_path, tiny_dir, capsys):
    data = tmp_path / "t.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n'
                    '{"messages": [{"role": "human", "content": "hi"}]}\n')
    config = tmp_path / "c.yaml"
    config.write_text(f"model:\n  path: {tiny_dir('qwen2_vl')}\ndata:\n  train: {data}\n  on_bad_record: fail\n"
                      f"train:\n  output_dir: {tmp_path / 'run'}\n")
    assert main(["train", str(config)]) == 2
    assert f"{data}:2 field 'messages[0].role': unknown role 'human'" in capsys.readouterr().err


def test_dry_run_prints_the_parameter_table_and_trains_nothing(tmp_path, tiny_dir, capsys):
    config = tmp_path / "c.yaml"
    out = tmp_path / "run"
    config.write_text(f"model:\n  path: {tiny_dir('qwen2_vl')}\ndata:\n  train: unused.jsonl\n"
                      f"train:\n  output_dir: {out}\n")
    assert main(["train", str(config), "--dry-run", "lora.targets=[q_proj, v_proj]", "lora.r=4"]) == 0
    rows = {line.split()[0]: line.split()[1:3] for line in capsys.readouterr().out.splitlines()[2:]}
    # 2 layers x (q_proj 64->64 + v_proj 64->32) with r=4: A is r x in, B is out x r.
    assert rows["language"][0] == f"{2 * (4 * 64 + 64 * 4 + 4 * 64 + 32 * 4):,}"
    assert rows["vision"][0] == "0" and rows["projector"][0] == "0" and rows["lm_head"][0] == "0"
    assert not out.exists()


def test_eval_and_predict_show_images_as_the_run_trained_unless_told_otherwise(tmp_path, capsys):
    from argparse import Namespace

    from vlmtune.cli.settings import resolve
    from vlmtune.config import dump_config, load_config

    run = tmp_path / "run"
    (run / "adapter").mkdir(parents=True)
    dump_config(load_config(None, ["model.path=m", "data.train=t.jsonl", "data.max_pixels=50176",
                                   "data.image_size=[280,140]"]), run / "config.yaml")

    def pixels(adapter, **given):
        args = Namespace(adapter=str(adapter), model=None, config=None, overrides=[],
                         **{"min_pixels": None, "max_pixels": None, "image_size": None, **given})
        d = resolve(args, ("model", "min_pixels", "max_pixels", "image_size")).cfg.data
        return d.min_pixels, d.max_pixels, d.image_size

    assert pixels(run / "adapter") == (None, 50176, (280, 140))
    assert "following the run config" in capsys.readouterr().err
    assert pixels(run / "adapter", image_size=[64, 64]) == (None, 50176, (64, 64))  # the command's option wins
    assert pixels(tmp_path / "elsewhere" / "adapter") == (None, None, None)
