"""The engine as the web UI uses it, in-process: names, ``chat`` equal to ``vlmtune predict``, ``stream`` joining
to ``chat``, and calls from several threads at once."""

from __future__ import annotations

import threading

import pytest

from tests.export.ecosystem import MAX_NEW_TOKENS, PROMPT, make_run, vlmtune_predict
from vlmtune.core.sample import ImagePart, Message, TextPart
from vlmtune.serve.engine import Engine, RequestError


@pytest.fixture(scope="module")
def shape_image(tmp_path_factory):
    from PIL import Image

    path = tmp_path_factory.mktemp("engine_image") / "shape.png"
    Image.new("RGB", (72, 56), (20, 160, 40)).save(path)
    return path


@pytest.fixture(scope="module")
def engine_and_run(tiny_dir, tmp_path_factory, shape_image):
    run = make_run(tiny_dir("qwen2_5_vl"), "qwen2_5_vl", tmp_path_factory.mktemp("engine") / "run")
    engine = Engine.load(str(tiny_dir("qwen2_5_vl")), {"tuned": str(run / "adapter")},
                         **{"data.system": "Answer in one word."})
    yield engine, run
    engine.close()


def question(image) -> list[Message]:
    return [Message("user", (ImagePart(image), TextPart(PROMPT)))]


def test_names_and_answers_equal_predict(engine_and_run, tiny_dir, shape_image, capsys):
    engine, run = engine_and_run
    base = tiny_dir("qwen2_5_vl").name
    assert engine.model_names() == [base, "tuned"]
    answers = {name: engine.chat(name, question(shape_image), MAX_NEW_TOKENS) for name in engine.model_names()}
    system = "data.system=Answer in one word."
    assert answers["tuned"] == vlmtune_predict(capsys, shape_image, "--adapter", str(run / "adapter"), system)
    assert answers[base] == vlmtune_predict(capsys, shape_image, "--config", str(run / "config.yaml"),
                                            "--model", str(tiny_dir("qwen2_5_vl")), system)
    assert answers["tuned"] != answers[base]


def test_stream_joins_to_chat_from_several_threads(engine_and_run, shape_image):
    engine, _ = engine_and_run
    expected = engine.chat("tuned", question(shape_image), MAX_NEW_TOKENS)
    results: dict[int, str] = {}

    def run(i: int) -> None:
        if i % 2:
            results[i] = "".join(engine.stream("tuned", question(shape_image), MAX_NEW_TOKENS))
        else:
            results[i] = engine.chat("tuned", question(shape_image), MAX_NEW_TOKENS)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == dict.fromkeys(range(6), expected)


def test_unknown_name(engine_and_run, shape_image):
    engine, _ = engine_and_run
    with pytest.raises(RequestError, match=r"^model 'other' is not served here; served: .*, tuned$") as e:
        engine.chat("other", question(shape_image))
    assert e.value.param == "model"


def test_a_qwen2_vl_box_answer_keeps_its_tokens(tiny_dir, shape_image):
    """What the server answers for a Qwen2-VL box is transformers' ``decode(..., skip_special_tokens=False)`` of
    the generated tokens less the end of turn: the box tokens stay, so a client can parse the box."""
    import torch

    engine = Engine.load(str(tiny_dir("qwen2_vl")))
    try:
        tokenizer = engine.worker.tokenizer
        answer = "<|object_ref_start|>square<|object_ref_end|><|box_start|>(10,20),(300,400)<|box_end|>"
        written = tokenizer.encode(answer, add_special_tokens=False) + [tokenizer.convert_tokens_to_ids("<|im_end|>")]
        engine.worker.model.generate = lambda input_ids, **_: torch.cat(
            [input_ids, torch.tensor([written] * len(input_ids))], dim=1)
        assert tokenizer.decode(written, skip_special_tokens=False) == answer + "<|im_end|>"
        assert engine.chat(tiny_dir("qwen2_vl").name, question(shape_image), 32) == answer
    finally:
        engine.close()
