"""One rule for boxes and points in every reader: finite, not negative, a box with x1 < x2 and y1 < y2, inside its
image. Anything else is refused with the record and the field named, by `data check` with or without a model, and
nothing is clamped."""

import json

import pytest

from vlmtune.cli.main import main

PIXELS = "pixels of the original image"


def _messages(*answer):
    return {"messages": [{"role": "user", "content": [{"type": "image", "image": "red.png"},  # red.png is 64x48
                                                      {"type": "text", "text": "Where?"}]},
                         {"role": "assistant", "content": list(answer)}]}


def _swift(*boxes):
    return {"messages": [{"role": "user", "content": "<image>Find the dot"},
                         {"role": "assistant", "content": " ".join("<bbox>" for _ in boxes)}],
            "images": ["red.png"], "objects": {"ref": [], "bbox": list(boxes)}}


def _event(**target):
    return {"type": "action_description", "screenshot": "red.png", "instruction": "Click it", **target}


def _box(*box):
    return {"type": "box", "box": list(box)}


def _point(*point):
    return {"type": "point", "point": list(point)}


# (reader's records, [(line, field, problem)]); each file's first record is good.
CASES = {
    "messages": ([_messages(_box(1, 2, 30, 40), _point(0, 0)), _messages(_box(1, float("nan"), 3, 4)),
                  _messages(_point(float("inf"), 5)), _messages(_point(-3, 5)), _messages(_box(-1, 2, 30, 40)),
                  _messages(_box(10, 2, 10, 40)), _messages(_point(70, 5)), _messages(_box(1, 2, 30, 49)),
                  _messages(_box(1, 2, "3", 4)), '{"messages": [{"role": "user", "content": [{"type": "image", '
                  '"image": "red.png"}]}, {"role": "assistant", "content": [{"type": "point", "point": '
                  f'[1{"0" * 400}, 1]}}]}}]}}'], [
        (2, "messages[1].content[0]", f"box [1, NaN, 3, 4] has a coordinate that is not a finite number ({PIXELS})"),
        (3, "messages[1].content[0]", f"point [Infinity, 5] has a coordinate that is not a finite number ({PIXELS})"),
        (4, "messages[1].content[0]", f"point [-3, 5] has a negative coordinate ({PIXELS}, from 0)"),
        (5, "messages[1].content[0]", f"box [-1, 2, 30, 40] has a negative coordinate ({PIXELS}, from 0)"),
        (6, "messages[1].content[0]", "box [10, 2, 10, 40] is empty or inverted: need x1 < x2 and y1 < y2"),
        (7, "messages[1].content[0]", f"point [70.0, 5.0] lies outside its 64x48 image red.png (coordinates are "
                                      f"{PIXELS})"),
        (8, "messages[1].content[0]", f"box [1.0, 2.0, 30.0, 49.0] lies outside its 64x48 image red.png "
                                      f"(coordinates are {PIXELS})"),
        (9, "messages[1].content[0]", f'box must be a list of 4 numbers ({PIXELS}), got [1, 2, "3", 4]'),
        (10, "messages[1].content[0]", f"point {json.dumps([10 ** 400, 1])[:80]} has a coordinate that is not a "
                                       f"finite number ({PIXELS})"),  # an integer too large for a float
    ]),
    "sharegpt": ([_swift([1, 2, 30, 40]), _swift([1, 2, 30, 40], [float("nan"), 2, 3, 4]), _swift([5, -2, 9, 9]),
                  _swift(["a", 2, 3, 4]), _swift([1, 2, 3]), _swift([1, 2, 65, 9])], [
        (2, "objects.bbox[1]", f"box [NaN, 2, 3, 4] has a coordinate that is not a finite number ({PIXELS})"),
        (3, "objects.bbox[0]", f"box [5, -2, 9, 9] has a negative coordinate ({PIXELS}, from 0)"),
        (4, "objects.bbox[0]", f'box must be a list of 4 numbers ({PIXELS}), got ["a", 2, 3, 4]'),
        (5, "objects.bbox[0]", f"box must be a list of 4 numbers ({PIXELS}), got [1, 2, 3]"),
        (6, "objects.bbox[0]", f"box [1.0, 2.0, 65.0, 9.0] lies outside its 64x48 image red.png (coordinates are "
                               f"{PIXELS})"),
    ]),
    "gui_events": ([_event(point=[3, 4]), _event(point=[float("nan"), 4]), _event(point=[-1, 4]),
                    _event(bbox=[5, 5, 5, 9]), _event(bbox=[1, 2, 30, 49])], [
        (2, "point", "point [NaN, 4] has a coordinate that is not a finite number (pixels of the screenshot)"),
        (3, "point", "point [-1, 4] has a negative coordinate (pixels of the screenshot, from 0)"),
        (4, "bbox", "box [5, 5, 5, 9] is empty or inverted: need x1 < x2 and y1 < y2"),
        (5, "bbox", "box [1, 2, 30, 49] lies outside the 64x48 screenshot"),
    ]),
}


@pytest.mark.parametrize("fmt", list(CASES))
def test_bad_coordinates_are_refused_alike_with_and_without_a_model(fmt, tmp_path, images, tiny_dir, capsys):
    records, expected = CASES[fmt]
    path = tmp_path / "d.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    for model in ([], ["--model", str(tiny_dir("qwen2_vl"))]):
        assert main(["data", "check", str(path), "--json", *model]) == 1
        out = capsys.readouterr().out
        report = json.loads(out[out.index("{\n"):])  # after any notice the model's libraries print on import
        assert report["format"] == fmt and report["usable"] == 1
        assert [(p["where"], p["field"], p["problem"]) for p in report["problems"]] == [
            (f"{path}:{line}", field, problem) for line, field, problem in expected]
