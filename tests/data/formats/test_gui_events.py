import json
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import write_jsonl
from vlmtune.core.sample import BoxPart, ImagePart, Message, PointPart, TextPart
from vlmtune.data.formats import ReadOptions, get_reader, read_dataset, read_samples
from vlmtune.data.formats.gui_events import GuiEventsReader, convert_gui_events


@pytest.fixture
def shots(tmp_path):
    """Screenshots as GUI datasets ship them: RGB, RGBA (half transparent) and palette PNGs."""
    folder = tmp_path / "shots"
    folder.mkdir()
    Image.new("RGB", (200, 100), (240, 240, 240)).save(folder / "form.png")
    dialog = Image.new("RGBA", (160, 120), (0, 0, 0, 0))
    dialog.paste((30, 90, 200, 255), (0, 0, 80, 120))
    dialog.save(folder / "dialog.png")
    Image.new("RGB", (80, 60), (0, 128, 0)).convert("P").save(folder / "menu.png")
    return folder


ACTIONS = [
    {"type": "action_description", "screenshot": "shots/form.png", "instruction": "Save the form",
     "bbox": [150, 70, 190, 90], "target": "Save button", "id": "ev1"},
    {"type": "action_description", "image": "shots/dialog.png", "instruction": "Enter the city",
     "action": "type", "click": [40, 60], "text": 'Berlin "Mitte"'},
    {"type": "context_extraction", "screenshot": "shots/menu.png", "instruction": "Which menu is open?",
     "text": "File"},
    {"type": "action_description", "screenshot": "shots/form.png", "instruction": "Open the context menu",
     "action": "Right Click", "point": [10.5, 20]},
]


def test_reads_actions_and_extractions_into_grounded_answers(tmp_path, shots):
    data = write_jsonl(tmp_path / "events.jsonl", ACTIONS)
    assert get_reader(data).name == "gui_events"
    click, typing, extract, right = read_samples(data)
    form, dialog = (shots / "form.png").resolve(), (shots / "dialog.png").resolve()
    assert click.messages == (
        Message("user", (ImagePart(form), TextPart("Save the form"))),
        Message("assistant", (TextPart("click "), BoxPart((150.0, 70.0, 190.0, 90.0), 0, "Save button"))),
    )
    assert click.meta == {"id": "ev1", "event": "action_description"} and click.id == f'{data}:1 (id "ev1")'
    assert typing.messages[0].content[0] == ImagePart(dialog)
    assert typing.messages[1].content == (TextPart("type "), PointPart((40.0, 60.0)),
                                          TextPart(' "Berlin \\"Mitte\\""'))
    assert extract.messages[1].content == (TextPart("File"),)
    assert right.messages[1].content == (TextPart("right_click "), PointPart((10.5, 20.0)))


def test_system_prompt_from_options(tmp_path, shots):
    data = write_jsonl(tmp_path / "events.jsonl", ACTIONS[:1])
    [sample] = read_samples(data, options=ReadOptions(system="You operate a computer."))
    assert sample.messages[0] == Message("system", (TextPart("You operate a computer."),))


def _bad(**changes):
    record = {"type": "action_description", "screenshot": "shots/form.png", "instruction": "Save",
              "point": [20, 20]}
    return {k: v for k, v in {**record, **changes}.items() if v is not None}


BAD = [
    (_bad(type="drag_and_drop"), "type", "unknown record type 'drag_and_drop'"),
    (_bad(instruction="  "), "instruction", "non-empty string"),
    (_bad(instruction=None), "instruction", "non-empty string"),
    (_bad(screenshot="shots/missing.png"), "screenshot", "image file not found"),
    (_bad(screenshot=None), "screenshot", "missing 'screenshot'"),
    (_bad(point=[250, 20]), "point", "outside the 200x100 screenshot"),
    (_bad(point=None, bbox=[10, 10, 10, 30]), "bbox", "is empty"),
    (_bad(point=None, bbox=[10, 10, 50, 101]), "bbox", "outside the 200x100 screenshot"),
    (_bad(point=None), "bbox", "exactly one of"),
    (_bad(bbox=[1, 1, 5, 5]), "bbox", "exactly one of"),
    (_bad(point=[1, True]), "point", "list of 2 numbers"),
    (_bad(action="type"), "text", "needs the 'text'"),
    (_bad(text="Save"), "text", "only for type actions"),
    (_bad(action="click twice!"), "action", "one word"),
    ({"type": "context_extraction", "screenshot": "shots/menu.png", "instruction": "Menu?", "text": ""},
     "text", "non-empty string"),
]


def test_bad_records_are_dropped_with_line_and_field(tmp_path, shots):
    data = write_jsonl(tmp_path / "events.jsonl", [ACTIONS[0]] + [r for r, _, _ in BAD] + ["{oops", ACTIONS[2]])
    result = read_dataset(data, "gui_events")
    assert result.format == "gui_events" and len(result.samples) == 2
    assert [p.line for p in result.problems] == list(range(2, len(BAD) + 3))
    for problem, (_, field, text) in zip(result.problems, BAD, strict=False):
        assert (problem.field, text in problem.problem) == (field, True), str(problem)
    assert "not valid JSON" in result.problems[-1].problem


def test_detects_only_event_records(tmp_path):
    reader = GuiEventsReader()
    assert reader.detect(tmp_path, {"type": "context_extraction"})
    assert not reader.detect(tmp_path, {"type": "click"})
    assert not reader.detect(tmp_path, {"messages": []})


def test_converter_writes_rgb_jpegs_once_and_messages_that_read_back(tmp_path, shots):
    records = ACTIONS + [_bad(point=[500, 5]), ACTIONS[0]]
    data = write_jsonl(tmp_path / "events.jsonl", records)
    out = tmp_path / "converted"
    report = convert_gui_events(data, out, jpeg_quality=85)
    assert (report.read, report.written, report.images) == (6, 5, 3)
    assert [(e.line, e.field) for e in report.dropped] == [(5, "point")] and "events.jsonl:5" in str(report)

    jpegs = sorted((out / "images").iterdir())
    assert len(jpegs) == 3 and all(p.suffix == ".jpg" for p in jpegs)
    for jpeg in jpegs:
        with Image.open(jpeg) as im:
            assert im.format == "JPEG" and im.mode == "RGB"
    with Image.open(next(p for p in jpegs if "dialog" in p.name)) as im:
        assert im.size == (160, 120)
        assert all(c > 240 for c in im.getpixel((150, 60)))  # transparent pixels came out white
        assert im.getpixel((20, 60))[2] > 170

    lines = (out / "annotations.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["messages"][0]["content"][0]["image"].startswith("images/")
    assert get_reader(out / "annotations.jsonl").name == "messages"
    back = read_samples(out / "annotations.jsonl")
    original = read_dataset(data, "gui_events").samples
    assert len(back) == len(original) == 5
    for new, old in zip(back, original, strict=True):
        assert _without_images(new) == _without_images(old)
        assert all(p.parent == (out / "images").resolve() for p in new.images)
        for jpeg, png in zip(new.images, old.images, strict=True):
            with Image.open(jpeg) as a, Image.open(png) as b:
                assert a.size == b.size
        assert new.meta["event"] == old.meta["event"]
    assert back[0].images == back[4].images  # the shared screenshot was written once


def _without_images(sample):
    """The messages with every image path blanked, so positions still count."""
    return [(m.role, tuple(ImagePart(Path()) if isinstance(p, ImagePart) else p for p in m.content))
            for m in sample.messages]


def test_converter_rejects_bad_quality(tmp_path):
    with pytest.raises(ValueError, match="jpeg_quality"):
        convert_gui_events(tmp_path / "x.jsonl", tmp_path / "out", jpeg_quality=0)


def test_unreadable_screenshot_is_dropped(tmp_path, shots):
    (shots / "broken.png").write_bytes(b"not a png")
    data = write_jsonl(tmp_path / "events.jsonl", [{**ACTIONS[2], "screenshot": "shots/broken.png"}])
    [problem] = read_dataset(data, "gui_events").problems
    assert problem.field == "screenshot" and "not a readable image" in problem.problem
