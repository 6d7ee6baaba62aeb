import pytest

from tests.conftest import conversation, write_jsonl
from vlmtune.core.errors import DataError, RecordError
from vlmtune.core.sample import BoxPart, ImagePart, PointPart, TextPart
from vlmtune.data import get_reader, read_samples
from vlmtune.data.formats import ReadOptions


def test_reads_multi_turn_multi_image_with_paths_relative_to_the_file(tmp_path, images):
    sub = tmp_path / "sets"
    sub.mkdir()
    data = write_jsonl(sub / "train.jsonl", [conversation("../red.png", "../blue.png")])
    [sample] = read_samples(data, options=ReadOptions(allow_outside_root=True))
    assert get_reader(data).name == "messages"
    assert [m.role for m in sample.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert sample.images == [images["red.png"].resolve(), images["blue.png"].resolve()]
    assert sample.messages[3].content == (TextPart("And this one?"), ImagePart(images["blue.png"].resolve()))
    assert sample.messages[4].text == "It is blue."
    assert sample.id == f"{data}:1"


@pytest.mark.parametrize("record, field, problem", [
    ('{"messages": [', None, "not valid JSON"),
    ({"conversations": []}, "messages", "'messages' list"),
    ({"messages": [{"role": "bot", "content": "hi"}]}, "messages[0].role", "unknown role 'bot'"),
    ({"messages": [{"role": "user", "content": "hi"}]}, "messages", "no assistant turn"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "  "}]},
     "messages[1]", "empty assistant answer"),
    ({"messages": [{"role": "user", "content": [{"type": "image", "image": "nope.png"}]},
                   {"role": "assistant", "content": "x"}]}, "messages[0].content[0]", "image file not found"),
    ({"messages": [{"role": "user", "content": [{"type": "image", "image": "http://x/a.png"}]},
                   {"role": "assistant", "content": "x"}]}, "messages[0].content[0]", "remote image"),
    ({"messages": [{"role": "user", "content": [{"type": "video", "video": "a.mp4"}]},
                   {"role": "assistant", "content": "x"}]}, "messages[0].content[0]", "video file not found 'a.mp4'"),
    ({"messages": [{"role": "user", "content": [{"type": "audio", "audio": "a.mp3"}]},
                   {"role": "assistant", "content": "x"}]}, "messages[0].content[0]", "unknown part"),
])
def test_bad_records_name_the_line_and_field(tmp_path, images, record, field, problem):
    good = conversation()
    data = write_jsonl(tmp_path / "train.jsonl", [good, good, record])
    with pytest.raises(RecordError) as err:
        read_samples(data, format="messages")
    assert err.value.line == 3 and err.value.field == field
    assert problem in str(err.value) and "train.jsonl:3" in str(err.value)


def test_unknown_format_and_missing_file_are_clear(tmp_path):
    with pytest.raises(DataError, match="no such data file"):
        read_samples(tmp_path / "missing.jsonl")
    data = write_jsonl(tmp_path / "x.jsonl", [{"foo": 1}])
    with pytest.raises(DataError, match="format not recognised"):
        read_samples(data)
    with pytest.raises(DataError, match="unknown data format 'parquet'.*messages"):
        read_samples(data, format="parquet")


def test_image_paths_may_not_escape_the_data_root_unless_allowed(tmp_path, images):
    sub = tmp_path / "sets"
    sub.mkdir()
    for ref in ("../red.png", str(images["red.png"].resolve())):
        data = write_jsonl(sub / "train.jsonl", [conversation(ref, "../blue.png")])
        with pytest.raises(RecordError, match="points outside the data root.*allow-outside-root") as err:
            read_samples(data)
        assert err.value.field == "messages[1].content[0]"
    media = ReadOptions(media_root=tmp_path)
    data = write_jsonl(sub / "train.jsonl", [conversation("red.png", "blue.png")])
    assert read_samples(data, options=media)[0].images == [images["red.png"].resolve(), images["blue.png"].resolve()]


def test_grounding_parts_are_read_in_original_pixels(tmp_path, images):
    record = {"messages": [
        {"role": "user", "content": [{"type": "image", "image": "red.png"}, {"type": "text", "text": "Find it."}]},
        {"role": "assistant", "content": [{"type": "text", "text": "here "},
                                          {"type": "box", "box": [1, 2, 30, 40], "label": "dot"},
                                          {"type": "point", "point": [5.5, 6]}]}]}
    [sample] = read_samples(write_jsonl(tmp_path / "g.jsonl", [record]))
    assert sample.messages[1].content[1:] == (BoxPart((1.0, 2.0, 30.0, 40.0), 0, "dot"), PointPart((5.5, 6.0), 0))
    bad = dict(record, messages=[record["messages"][0], {"role": "assistant", "content": [
        {"type": "box", "box": [30, 2, 1, 40]}]}])
    with pytest.raises(RecordError, match=r"is empty or inverted: need x1 < x2 and y1 < y2"):
        read_samples(write_jsonl(tmp_path / "b.jsonl", [bad]))
