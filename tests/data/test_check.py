"""The data checker on a hostile corpus: every bad record gets its line and a plain reason, never a traceback,
and training keeps exactly the good samples."""

import json
import struct
import zlib

import pytest
from PIL import Image

from tests.conftest import conversation
from vlmtune.config.schema import DataConfig
from vlmtune.core.errors import DataError
from vlmtune.data import Renderer
from vlmtune.data.check import TOO_LONG, check_dataset
from vlmtune.models import get_family, load_processor
from vlmtune.train.prepare import checked_samples


def _png_header_only(path, width, height):
    """A PNG whose header claims ``width x height`` pixels (a decompression bomb, without the memory)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
                     + chunk(b"IEND", b""))


def _turns(user, answer="ok", role="user"):
    return {"messages": [{"role": role, "content": user}, {"role": "assistant", "content": answer}]}


def _image(name):
    return [{"type": "image", "image": name}, {"type": "text", "text": "What is it?"}]


@pytest.fixture
def hostile(tmp_path, images):
    """A messages file mixing two good samples with one record of each kind of defect (line -> reason)."""
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    (tmp_path / "empty.png").write_bytes(b"")
    _png_header_only(tmp_path / "huge.png", 100_000, 100_000)
    Image.new("RGB", (8, 8)).save(tmp_path / "cut.jpg")
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "cut.jpg").read_bytes()[:200])
    (tmp_path / "outside").mkdir()
    lines = [
        json.dumps(conversation()),                                                # 1 good
        '{"messages": [{"role": "user", "content": "hi"}, {"role": "assist',     # 2 truncated JSON
        "\x00\x01binary\x02junk\x7f",                                             # 3 binary junk
        None,                                                                      # 4 not UTF-8
        json.dumps(_turns(_image("missing.png"))),                                 # 5 missing image
        json.dumps(_turns(_image("corrupt.png"))),                                 # 6 corrupt image
        json.dumps(_turns(_image("empty.png"))),                                   # 7 0-byte image
        json.dumps(_turns(_image("huge.png"))),                                    # 8 huge image
        json.dumps(dict(_turns("<image><image>Compare."), images=["red.png"])),    # 9 placeholders != images
        json.dumps({"messages": [{"role": "user", "content": "hi"}]}),             # 10 no assistant turn
        json.dumps(_turns("hi", answer="  ")),                                     # 11 empty answer
        json.dumps(_turns("hi", role="bot")),                                      # 12 unknown role
        json.dumps(_turns(_image("../red.png"))),                                  # 13 escapes the data root
        json.dumps(_turns(_image("cut.jpg"))),                                     # 14 truncated JPEG
        json.dumps(_turns(_image("green.png"), answer="green")),                   # 15 good
    ]
    data = tmp_path / "outside" / "mixed.jsonl"
    for name in ("red.png", "blue.png", "green.png", "corrupt.png", "empty.png", "huge.png", "cut.jpg"):
        (tmp_path / "outside" / name).write_bytes((tmp_path / name).read_bytes())
    with open(data, "wb") as f:
        for line in lines:
            f.write(b'{"messages": "caf\xe9"}\n' if line is None else line.encode() + b"\n")
    reasons = {2: "not valid JSON", 3: "not valid JSON", 4: "not UTF-8", 5: "image file not found",
               6: "cannot decode image", 7: "0 bytes", 8: "safety limit", 9: "more <image> placeholders than images",
               10: "no assistant turn", 11: "empty assistant answer", 12: "unknown role 'bot'",
               13: "outside the data root", 14: "cannot decode image"}
    return data, reasons


def test_every_bad_record_is_reported_with_its_line_and_reason(hostile):
    data, reasons = hostile
    report = check_dataset(data)
    assert report.format == "messages" and report.records == 15
    assert [s.id for s in report.samples] == [f"{data}:1", f"{data}:15"]
    assert {int(p.where.rsplit(":", 1)[1]): p.problem for p in report.problems}.keys() == reasons.keys()
    for problem in report.problems:
        line = int(problem.where.rsplit(":", 1)[1])
        assert reasons[line] in problem.problem, (line, problem)
    assert not report.ok
    assert report.images == 3 and report.turns == 5 + 2
    summary = report.summary()
    assert "15 records, 2 usable, 13 unusable" in summary and f"{data}:8" in summary
    assert json.loads(json.dumps(report.to_dict()))["unusable"] == 13


def test_training_keeps_exactly_the_good_samples_or_refuses_by_policy(hostile, tiny_dir):
    data, _ = hostile
    spec = get_family("qwen2_vl")
    renderer = Renderer(load_processor(tiny_dir("qwen2_vl"), spec), spec, max_length=4096)
    kept = checked_samples(str(data), DataConfig(train=str(data)), renderer, "data.train")
    assert [s.id for s in kept] == [f"{data}:1", f"{data}:15"]
    with pytest.raises(DataError, match=r"data.train: 13 of 15 records unusable \(data.on_bad_record=fail\)"):
        checked_samples(str(data), DataConfig(train=str(data), on_bad_record="fail"), renderer, "data.train")


def test_a_file_with_no_usable_sample_refuses_to_train_naming_why(tmp_path, tiny_dir):
    data = tmp_path / "bad.jsonl"
    data.write_text(json.dumps(_turns("hi", role="human")) + "\n" + json.dumps(_turns("hi", role="bot")) + "\n")
    spec = get_family("qwen2_vl")
    renderer = Renderer(load_processor(tiny_dir("qwen2_vl"), spec), spec)
    with pytest.raises(DataError, match=r"no usable sample .*2 records\): 2x unknown role ..."):
        checked_samples(str(data), DataConfig(train=str(data)), renderer, "data.train")


def test_long_samples_are_flagged_with_token_statistics_and_dropped_or_refused(tmp_path, images, tiny_dir):
    spec = get_family("qwen2_5_vl")
    renderer = Renderer(load_processor(tiny_dir("qwen2_5_vl"), spec), spec, max_length=120)
    data = tmp_path / "d.jsonl"
    long_text = "a long question " * 40
    data.write_text("\n".join(json.dumps(_turns(_image(name) + [{"type": "text", "text": text}]))
                              for name, text in (("red.png", ""), ("blue.png", long_text), ("green.png", "x"))))
    report = check_dataset(data, renderer=renderer)
    [problem] = report.problems
    assert problem.kind == TOO_LONG and problem.where == f"{data}:2" and "exceed max_length=120" in problem.problem
    # Token counts come from image sizes alone and equal the real encoding.
    assert [t + v for t, v in report.lengths] == [len(renderer.encode(s)["input_ids"]) for s in report.samples]
    stats = report.length_stats()
    assert stats["visual"]["max"] > 0 and stats["total"]["max"] <= 120
    cfg = DataConfig(train=str(data), max_length=120)
    assert [s.id for s in checked_samples(str(data), cfg, renderer, "t")] == [f"{data}:1", f"{data}:3"]
    with pytest.raises(DataError, match="over max_length"):
        checked_samples(str(data), cfg.model_copy(update={"on_too_long": "fail"}), renderer, "t")


def test_boxes_outside_their_image_are_reported(tmp_path, images):
    record = {"messages": [
        {"role": "user", "content": _image("red.png")},
        {"role": "assistant", "content": [{"type": "box", "box": [10, 10, 65, 20]}]}]}  # red.png is 64x48
    data = tmp_path / "g.jsonl"
    data.write_text(json.dumps(record) + "\n")
    [problem] = check_dataset(data).problems
    assert "lies outside its 64x48 image red.png" in problem.problem
