"""What every registered family must do, whatever its architecture: the contract a new registry entry signs.

A tiny model of the real class loads with plain transformers; rendering equals the processor's own chat
template token for token; labels are exactly the answers; LoRA by default lands on the language model only.
"""

import json

import pytest
import torch
from transformers import AutoConfig, AutoModelForImageTextToText

from tests.conftest import chat_with_images, conversation, write_jsonl
from vlmtune.config import LoraConfig
from vlmtune.data import IGNORE_INDEX, Renderer, read_samples
from vlmtune.data.render import load_image
from vlmtune.models import family_names, get_family, load_processor
from vlmtune.train import apply_lora, parameter_table, prepare_full

FAMILIES = family_names()




def _setup(family, tiny_dir, tmp_path):
    spec = get_family(family)
    processor = load_processor(tiny_dir(family), spec)
    [sample] = read_samples(write_jsonl(tmp_path / "d.jsonl", [conversation()]))
    return spec, processor, sample


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_model_is_an_ordinary_checkpoint_of_the_real_class(family, tiny_dir):
    spec, folder = get_family(family), tiny_dir(family)
    assert AutoConfig.from_pretrained(folder).model_type == family
    model = AutoModelForImageTextToText.from_pretrained(folder)
    assert type(model).__name__ == spec.model_class
    assert sum(p.numel() for p in model.parameters()) < 3_000_000
    assert json.loads((folder / "processor_config.json").read_text())["processor_class"] == spec.processor_class
    processor = load_processor(folder, spec)
    assert processor.chat_template == spec.read_chat_template()
    for token in spec.special_tokens:  # each special token is one id and survives a decode
        ids = processor.tokenizer.encode(token, add_special_tokens=False)
        assert len(ids) == 1 and processor.tokenizer.decode(ids) == token


@pytest.mark.parametrize("family", FAMILIES)
def test_rendering_equals_the_processors_own_chat_template(family, tiny_dir, tmp_path, images):
    spec, processor, sample = _setup(family, tiny_dir, tmp_path)
    ours = Renderer(processor, spec).encode(sample)
    chat = chat_with_images(sample)
    if spec.turn_end_replaces is None:
        theirs = processor.apply_chat_template(chat, tokenize=True, return_dict=True, return_tensors="pt")
    else:
        # The one exception: a template that writes no end token (LLaVA-1.5), whose text after each answer gives
        # way to the family's end token, as its documented multi-turn format has it.
        text = processor.apply_chat_template(chat, tokenize=False)
        for message in (m for m in chat if m["role"] == "assistant"):
            answer = message["content"][-1]["text"]
            text = text.replace(answer + spec.turn_end_replaces, answer + spec.turn_end, 1)
        theirs = processor(text=text, images=[[load_image(p) for p in sample.images]], return_tensors="pt")
    assert ours["input_ids"].tolist() == theirs["input_ids"][0].tolist()
    for key, value in theirs.items():
        if key not in ("input_ids", "attention_mask") and isinstance(value, torch.Tensor):
            expected = value[0] if value.shape[0] == 1 and key in ours and ours[key].dim() < value.dim() else value
            torch.testing.assert_close(ours[key], expected, msg=f"{family}: {key} differs")


@pytest.mark.parametrize("family", FAMILIES)
def test_labels_are_exactly_the_answers_and_their_end_tokens(family, tiny_dir, tmp_path, images):
    spec, processor, sample = _setup(family, tiny_dir, tmp_path)
    features = Renderer(processor, spec).encode(sample)
    labels, ids = features["labels"], features["input_ids"]
    trained = labels != IGNORE_INDEX
    assert torch.equal(labels[trained], ids[trained])
    positions = trained.nonzero().flatten().tolist()
    runs, start = [], positions[0]
    for a, b in zip(positions, positions[1:] + [None], strict=True):
        if b != a + 1:
            runs.append(processor.tokenizer.decode(ids[start:a + 1]))
            start = b
    assert [r.lstrip() for r in runs] == ["red" + spec.turn_end, "It is blue." + spec.turn_end]
    # Counting tokens from image sizes alone agrees with the real encoding.
    sizes = [load_image(p).size for p in sample.images]
    assert sum(Renderer(processor, spec).count_tokens(sample, sizes)) == len(ids)


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_and_full_fine_tuning_leave_the_vision_tower_frozen(family, tiny_dir):
    from vlmtune.models import load_model

    spec = get_family(family)
    model = apply_lora(load_model(tiny_dir(family)), spec, LoraConfig(targets="all-linear"))
    trainable = [n.removeprefix("base_model.model.") for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert all(spec.component_of(n) == "language" for n in trainable), trainable
    table = parameter_table(model, spec)
    assert table["vision"][0] == 0 and table["projector"][0] == 0 and table["lm_head"][0] == 0
    assert table["language"][0] > 0 and table["vision"][1] > 0 and table["projector"][1] > 0
    full = parameter_table(prepare_full(load_model(tiny_dir(family)), spec), spec)
    assert full["vision"][0] == 0 and full["language"][0] == full["language"][1] > 0
    # Every parameter belongs to exactly one component: nothing escapes the table.
    names = [n for n, _ in load_model(tiny_dir(family)).named_parameters()]
    assert all(spec.component_of(n) is not None for n in names), [n for n in names if not spec.component_of(n)]
