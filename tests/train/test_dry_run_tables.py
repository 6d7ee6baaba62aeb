"""``vlmtune train --dry-run`` for every registered family and every method prints the parameters that would train,
per component, equal to counts computed here from the base model's own layer shapes: LoRA A (r x in) and B (out x
r) on each language linear layer, DoRA one magnitude per output on top, full fine-tuning every weight of the
components not frozen (the vision tower by default). A QLoRA dry run on CPU counts what LoRA counts."""

import pytest
from torch import nn

from tests.conftest import dry_run_table
from vlmtune.models import get_family, load_model
from vlmtune.models.registry import family_names

R = 8


def _expected(model: nn.Module, spec, method: str) -> dict[str, list[int]]:
    """Component -> [trainable, total], from the shapes of the model before anything is wrapped."""
    components = ("vision", "projector", "language", "lm_head")
    totals = dict.fromkeys(components, 0)
    for name, param in model.named_parameters():  # tied weights once, as the model holds them
        totals[spec.component_of(name)] += param.numel()
    if method == "full":
        trainable = {c: 0 if c == "vision" else totals[c] for c in components}
        return {c: [trainable[c], totals[c]] for c in components if totals[c]}
    linear = [m for n, m in model.named_modules() if isinstance(m, nn.Linear) and spec.component_of(n) == "language"]
    adapters = sum(R * (m.in_features + m.out_features) for m in linear)
    if method == "dora":
        adapters += sum(m.out_features for m in linear)
    table = {c: [0, totals[c]] for c in components if totals[c]}
    table["language"] = [adapters, totals["language"] + adapters]
    return table


@pytest.mark.parametrize("method", ["lora", "dora", "qlora", "full"])
@pytest.mark.parametrize("family", family_names())
def test_dry_run_table_counts_what_each_method_trains(family, method, tiny_dir, tmp_path, capsys):
    folder, spec = tiny_dir(family), get_family(family)
    rows = dry_run_table(folder, tmp_path, capsys, f"train.method={method}", f"lora.r={R}")
    expected = _expected(load_model(folder), spec, method)
    assert {c: rows[c] for c in expected} == expected
    trainable = sum(t for t, _ in expected.values())
    assert rows["all"] == [trainable, sum(n for _, n in expected.values())]
    assert trainable > 0
