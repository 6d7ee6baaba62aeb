"""The names the config checks against (``vlmtune.core.names``) are exactly what the registries register, and a
registry refuses a name the config would not accept."""

import pytest

from vlmtune.cli.main import main
from vlmtune.core.names import FORMAT_NAMES, METRIC_NAMES, TASK_METRICS
from vlmtune.data.formats import reader_names, register_reader
from vlmtune.evaluate.metrics import Metric, MetricResult, metric_names, register_metric


def test_the_config_knows_exactly_the_registered_metrics_and_formats():
    assert sorted(METRIC_NAMES) == metric_names()
    assert sorted(FORMAT_NAMES) == reader_names()
    assert {m for defaults in TASK_METRICS.values() for m in defaults} <= set(METRIC_NAMES)


def test_a_registry_refuses_a_name_the_config_does_not_list():
    class Reader:
        name = "xml"

    with pytest.raises(ValueError, match=r"^data format 'xml' is not listed in vlmtune.core.names; add it there"):
        register_reader(Reader())
    with pytest.raises(ValueError, match=r"^metric 'f2' is not listed in vlmtune.core.names; add it there"):
        register_metric(Metric("f2", lambda examples: MetricResult(0.0)))
    assert "xml" not in reader_names() and "f2" not in metric_names()


def test_config_validate_names_the_known_formats_and_metrics_from_core(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(f"model:\n  path: org/m\ndata:\n  train: {tmp_path}/none.jsonl\n  format: xml\neval:\n"
                      "  metrics: [f2]\n")
    assert main(["config", "validate", str(config)]) == 1
    assert capsys.readouterr().out.splitlines()[1:] == [
        f"  eval.metrics: Value error, unknown metric(s) f2; known: {', '.join(sorted(METRIC_NAMES))} (got ['f2'])",
        f"  data.format: unknown data format 'xml'; known: auto, {', '.join(sorted(FORMAT_NAMES))}",
        f"  data.train: {tmp_path}/none.jsonl does not exist",
    ]


def test_the_config_knows_exactly_the_built_in_rewards():
    from vlmtune.core.names import REWARD_NAMES, TASK_REWARDS
    from vlmtune.evaluate import rewards

    assert set(REWARD_NAMES) == {*rewards._METRIC_OF, "format"}
    assert set(TASK_REWARDS) == set(TASK_METRICS)
    for task, names in TASK_REWARDS.items():
        assert set(names) <= set(REWARD_NAMES), task
