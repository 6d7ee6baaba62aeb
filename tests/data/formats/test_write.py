import json

from PIL import Image

from tests.conftest import write_jsonl
from vlmtune.core.sample import BoxPart, ImagePart, Message, PointPart, Sample, TextPart
from vlmtune.data.formats import ReadOptions, read_samples
from vlmtune.data.formats.write import sample_to_record


def _images(folder, *names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.new("RGB", (40, 30), (10, 20, 30)).save(folder / name)
    return [(folder / name).resolve() for name in names]


def test_round_trip_keeps_text_images_boxes_points_and_turns(tmp_path):
    a, b = _images(tmp_path / "imgs", "a.png", "b.png")
    sample = Sample((
        Message("system", (TextPart("Answer briefly."),)),
        Message("user", (ImagePart(a), TextPart("Where is the cat?"))),
        Message("assistant", (TextPart("Here: "), BoxPart((1.0, 2.0, 30.5, 25.0), 0, "cat"))),
        Message("user", (TextPart("And where do I click here?"), ImagePart(b))),
        Message("assistant", (TextPart("click "), PointPart((12.0, 7.25), 1), TextPart(" then done"))),
    ), id="x:1", meta={"source": "web", "score": 0.5, "bad": object()})
    record = sample_to_record(sample, tmp_path)
    assert record["messages"][1]["content"][0] == {"type": "image", "image": "imgs/a.png"}
    assert record["messages"][2]["content"][1] == {"type": "box", "box": [1, 2, 30.5, 25], "image": 0,
                                                   "label": "cat"}
    [back] = read_samples(write_jsonl(tmp_path / "out.jsonl", [json.loads(json.dumps(record))]))
    assert back.messages == sample.messages
    assert back.meta == {"source": "web", "score": 0.5}


def test_images_outside_the_folder_get_relative_paths_up(tmp_path):
    [a] = _images(tmp_path / "shared", "a.png")
    sample = Sample((Message("user", (ImagePart(a), TextPart("What colour?"))),
                     Message("assistant", (TextPart("dark"),))), id="x:1")
    out = tmp_path / "sets" / "one"
    out.mkdir(parents=True)
    record = sample_to_record(sample, out)
    assert record["messages"][0]["content"][0]["image"] == "../../shared/a.png"
    data = write_jsonl(out / "data.jsonl", [record])
    [back] = read_samples(data, options=ReadOptions(allow_outside_root=True))
    assert back.messages == sample.messages
