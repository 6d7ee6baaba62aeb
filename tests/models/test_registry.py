import jinja2
import pytest

from vlmtune.core.errors import UnknownFamilyError
from vlmtune.models import family_names, get_family

FOUNDATION_FAMILIES = {"qwen2_vl", "qwen2_5_vl", "qwen3_vl"}


def test_foundation_families_are_registered():
    assert FOUNDATION_FAMILIES <= set(family_names())


def test_unknown_model_type_lists_the_known_ones():
    with pytest.raises(UnknownFamilyError, match="qwen2.5-vl.*Known: .*qwen2_5_vl"):
        get_family("qwen2.5-vl")


@pytest.mark.parametrize("family", sorted(FOUNDATION_FAMILIES))
def test_every_family_can_build_a_tiny_config_and_has_its_template(family):
    spec = get_family(family)
    assert spec.tiny_config is not None
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    template = jinja2.Template(spec.read_chat_template())
    # The spec's assistant header and end-of-turn token are what the real template writes around an answer.
    assert template.render(messages=chat).endswith(spec.assistant_header + "yo" + spec.turn_end + "\n")
    assert template.render(messages=chat[:1], add_generation_prompt=True).endswith(spec.assistant_header)


def test_component_of_prefers_the_longest_prefix():
    spec = get_family("qwen2_5_vl")
    assert spec.component_of("model.visual.blocks.0.mlp.gate_proj") == "vision"
    assert spec.component_of("model.visual.merger.mlp.0") == "projector"
    assert spec.component_of("model.language_model.layers.0.mlp.gate_proj") == "language"
    assert spec.component_of("model.visualizer") is None
    assert spec.component_of("lm_head") == "lm_head"
