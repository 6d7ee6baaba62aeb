"""A placeholder followed by a newline (``<image>\\nWhat is shown?``), or a text ending in a newline and a placeholder,
renders exactly as the same message given as an image part and the text, with every family's own chat template, in
every format that writes placeholders: the newline belongs to the placeholder, the template adds its own."""

import json

import pytest

from tests.conftest import FAMILIES, write_jsonl
from vlmtune.data import Renderer, read_samples
from vlmtune.models import load_processor, spec_for

QUESTION = "What is shown in this image?"
ANSWER = "A red square."
# The user turn as placeholder formats write it, and the same message as parts.
PLACEMENTS = {
    "image first": (f"<image>\n{QUESTION}", [{"type": "image"}, {"type": "text", "text": QUESTION}]),
    "image last": (f"{QUESTION}\n<image>", [{"type": "text", "text": QUESTION}, {"type": "image"}]),
}


def _files(folder, prompt):
    """One single-image record per placeholder format, each with the user turn ``prompt``."""
    turns = [{"role": "user", "content": prompt}, {"role": "assistant", "content": ANSWER}]
    sharegpt = {"messages": turns, "images": ["red.png"]}
    alpaca = {"instruction": prompt, "input": "", "output": ANSWER, "images": ["red.png"]}
    (folder / "sg.json").write_text(json.dumps([sharegpt]))
    (folder / "alpaca.json").write_text(json.dumps([alpaca]))
    (folder / "dataset_info.json").write_text(json.dumps({
        "sg": {"file_name": "sg.json", "formatting": "sharegpt",
               "columns": {"messages": "messages", "images": "images"},
               "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                        "assistant_tag": "assistant"}},
        "alpaca": {"file_name": "alpaca.json", "formatting": "alpaca"}}))
    tagged = prompt.replace("<image>", "<|vision_start|>red.png<|vision_end|>")
    return {
        "llava": write_jsonl(folder / "llava.jsonl", [{"image": "red.png", "conversations": [
            {"from": "human", "value": prompt}, {"from": "gpt", "value": ANSWER}]}]),
        "sharegpt": write_jsonl(folder / "sharegpt.jsonl", [sharegpt]),
        "llamafactory sharegpt": f"{folder}/dataset_info.json#sg",
        "llamafactory alpaca": f"{folder}/dataset_info.json#alpaca",
        "qwen_tags": write_jsonl(folder / "tags.jsonl", [{"messages": [{"role": "user", "content": tagged},
                                                                       {"role": "assistant", "content": ANSWER}]}]),
    }


@pytest.mark.parametrize("family", FAMILIES)
def test_placeholder_newline_renders_as_the_image_part_does(family, tiny_dir, tmp_path, images):
    model_dir = tiny_dir(family)
    spec = spec_for(model_dir, check_split=False)
    processor = load_processor(model_dir, spec)
    renderer = Renderer(processor, spec)
    for placement, (prompt, parts) in PLACEMENTS.items():
        expected = processor.apply_chat_template([{"role": "user", "content": parts}], tokenize=False,
                                                 add_generation_prompt=True, **spec.chat_template_kwargs)
        as_parts = write_jsonl(tmp_path / "parts.jsonl", [{"messages": [
            {"role": "user", "content": [{**p, "image": "red.png"} if p["type"] == "image" else p for p in parts]},
            {"role": "assistant", "content": ANSWER}]}])
        [reference] = read_samples(as_parts)
        for fmt, path in _files(tmp_path, prompt).items():
            [sample] = read_samples(path)
            prompt_only, answer = sample.prompt_and_answer()
            assert renderer.text(prompt_only, add_generation_prompt=True) == expected, (placement, fmt)
            assert renderer.text(sample) == renderer.text(reference) and answer == ANSWER, (placement, fmt)


@pytest.mark.parametrize("text, expected", [
    ("<image>\n<image>\nCompare them.", ["img", "img", "Compare them."]),
    ("Compare them:\n<image>\n<image>", ["Compare them:", "img", "img"]),
    ("Compare them:\n<image>\n<image>\n", ["Compare them:", "img", "img"]),
    ("<image>\r\nWindows line ends.", ["img", "Windows line ends."]),
    ("<image>\n\nA blank line stays.", ["img", "\nA blank line stays."]),
    ("Before\n<image>\nafter.", ["Before\n", "img", "after."]),
    ("Inline <image> stays as written.", ["Inline ", "img", " stays as written."]),
])
def test_exactly_one_newline_beside_a_placeholder_is_its_own(text, expected, tmp_path, images):
    n = expected.count("img")
    path = write_jsonl(tmp_path / "d.jsonl", [{"messages": [{"role": "user", "content": text},
                                                            {"role": "assistant", "content": "ok"}],
                                               "images": ["red.png"] * n}])
    [sample] = read_samples(path)
    assert ["img" if hasattr(p, "path") else p.text for p in sample.messages[0].content] == expected
