"""``vlmtune data check`` on videos: the LLaMA-Factory video demo passes; unreadable, frameless, one-frame and
too-long videos are named with their record; shrink samples fewer frames; families without videos refuse them."""

import json
from pathlib import Path

import av
import pytest

from tests.conftest import write_jsonl
from tests.data.video_clips import LLAMAFACTORY_DEMO as DEMO
from tests.data.video_clips import write_clip
from vlmtune.cli.main import main


def _report(capsys) -> dict:
    out = capsys.readouterr().out
    return json.loads(out[out.index("{"):])  # past a line some installed package may print when imported


def _record(video: str, answer: str = "right") -> dict:
    return {"messages": [{"role": "user", "content": [{"type": "video", "video": video},
                                                      {"type": "text", "text": "Which way?"}]},
                         {"role": "assistant", "content": answer}]}


def _frameless(path: Path) -> Path:
    container = av.open(str(path), "w")
    stream = container.add_stream("mpeg4", rate=4)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    container.start_encoding()
    container.close()
    return path


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
def test_llamafactory_video_demo_passes_data_check(family, tiny_dir, capsys):
    status = main(["data", "check", f"{DEMO}#mllm_video_demo", "--model", str(tiny_dir(family)), "--json"])
    report = _report(capsys)
    assert (status, report["records"], report["usable"], report["videos"], report["problems"]) == (0, 3, 3, 3, [])


def test_bad_videos_are_named_with_their_record(tiny_dir, tmp_path, capsys):
    write_clip(tmp_path / "good.mp4")
    (tmp_path / "broken.mp4").write_bytes(b"not a video" * 20)
    _frameless(tmp_path / "empty.avi")
    write_clip(tmp_path / "one.mp4", frames=1)
    data = write_jsonl(tmp_path / "d.jsonl", [_record(name) for name in
                                              ("good.mp4", "broken.mp4", "empty.avi", "one.mp4", "missing.mp4")])
    status = main(["data", "check", str(data), "--model", str(tiny_dir("qwen2_vl")), "--json"])
    report = _report(capsys)
    problems = {p["where"].removeprefix(str(tmp_path) + "/"): p["problem"] for p in report["problems"]}
    assert status == 1 and report["usable"] == 1
    assert problems["d.jsonl:2"].startswith("broken.mp4: cannot use video: cannot decode it: ")
    assert problems["d.jsonl:3"] == "empty.avi: cannot use video: it has no frames"
    assert problems["d.jsonl:4"] == (f"cannot use video {tmp_path / 'one.mp4'}: it has 1 frame(s); qwen2_vl needs at "
                                     "least 2")
    assert problems["d.jsonl:5"].startswith("video file not found 'missing.mp4'")


def test_a_too_long_video_is_refused_or_sampled_with_fewer_frames(tiny_dir, tmp_path, capsys):
    write_clip(tmp_path / "long.mp4", frames=40, fps=4)  # 10 s: 20 frames at 2 fps
    data = write_jsonl(tmp_path / "d.jsonl", [_record("long.mp4")])
    model = str(tiny_dir("qwen2_vl"))
    settings = ["data.video_max_pixels=3136", "--max-length", "60"]
    assert main(["data", "check", str(data), "--model", model, "--json", *settings]) == 1
    [problem] = _report(capsys)["problems"]
    assert problem["kind"] == "too_long" and problem["problem"] == (
        "68 tokens (40 visual) exceed max_length=60; it is never cut (that would split image tokens or drop the "
        "answer). Raise data.max_length or lower data.video_max_pixels or data.video_fps")
    assert main(["data", "check", str(data), "--model", model, "--json", *settings, "--on-too-long", "shrink"]) == 0
    report = _report(capsys)
    # 4 visual tokens per 2 frames: 28 text tokens leave room for 32 visual, 16 frames.
    assert report["shrunk"] == [{"where": f"{data}:1", "scale": round(16 / 20, 4)}]
    assert report["tokens"]["total"]["max"] == 60


def test_families_without_video_refuse_it_naming_the_record_and_family(tiny_dir, tmp_path, capsys):
    write_clip(tmp_path / "clip.mp4")
    data = write_jsonl(tmp_path / "d.jsonl", [_record("clip.mp4")])
    assert main(["data", "check", str(data), "--model", str(tiny_dir("llava")), "--json"]) == 1
    [problem] = _report(capsys)["problems"]
    assert problem == {**problem, "where": f"{data}:1", "problem": (
        "has a video (clip.mp4), but vlmtune trains family llava on images only; videos: qwen2_5_vl, qwen2_vl, "
        "qwen3_5, qwen3_vl")}


def test_data_show_writes_a_videos_tokens_as_one_run(tiny_dir, tmp_path, capsys):
    write_clip(tmp_path / "clip.mp4")  # 2 s at 4 fps: 4 frames at 2 fps, 56x56 under the cap: 2 x 4 tokens
    data = write_jsonl(tmp_path / "d.jsonl", [_record("clip.mp4")])
    assert main(["data", "show", str(data), "--model", str(tiny_dir("qwen2_vl")), "data.video_max_pixels=3136"]) == 0
    out = capsys.readouterr().out
    assert "<|im_start|>user\n<|vision_start|><|video_pad|>x8<|vision_end|>Which way?<|im_end|>" in out
    assert "[[right<|im_end|>]]" in out
