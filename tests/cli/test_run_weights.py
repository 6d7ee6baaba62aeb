"""The line `vlmtune eval` and `vlmtune predict` print about the weights they load, for a run config whose run has
not saved its weights; the commands that load them are in test_run_settings.py."""

from vlmtune.cli.main import main
from vlmtune.config import dump_config, load_config


def test_a_run_without_its_weights_says_so_and_uses_the_base(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "train.log").write_text("")
    dump_config(load_config(None, ["model.path=some/base", "data.train=t.jsonl"]), run / "config.yaml")
    for config in (run / "config.yaml", run):  # the folder stands for its config.yaml
        # The missing image stops predict after the weights are chosen, before anything loads.
        assert main(["predict", "--config", str(config), "--image", str(tmp_path / "none.png"), "--prompt", "q"]) == 2
        err = capsys.readouterr().err
        assert f"following the run config {run / 'config.yaml'} (--config)" in err
        assert f"weights: some/base (the config's model.path, no adapter; {run / 'adapter'} not found)\n" in err
        assert err.rstrip().endswith(f"image not found: {tmp_path / 'none.png'}")
