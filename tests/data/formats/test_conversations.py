"""ShareGPT, LLaMA-Factory registry, LLaVA and Qwen-tag files read into the same canonical samples as the
equivalent messages file; placeholder rules; the real files those projects publish."""

import json
from pathlib import Path

import pytest

from tests.conftest import write_jsonl
from vlmtune.core.errors import DataError, RecordError
from vlmtune.core.sample import BoxPart, TextPart, VideoPart
from vlmtune.data.check import check_dataset
from vlmtune.data.formats import ReadOptions, get_reader, read_dataset, read_samples

REAL = (Path(__file__).parents[3].parent / "shared" / "fixtures" / "real").resolve()

# One two-turn, two-image conversation with a system prompt, in the canonical form ...
CANONICAL = {"messages": [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": [{"type": "image", "image": "red.png"}, {"type": "text", "text": "Colour?"}]},
    {"role": "assistant", "content": "red"},
    {"role": "user", "content": [{"type": "text", "text": "And this?"}, {"type": "image", "image": "blue.png"}]},
    {"role": "assistant", "content": "blue"},
]}
# ... and as each other format writes it (the newline before a placeholder that ends the text is the placeholder's).
SHAREGPT = {"messages": [
    {"role": "system", "content": "Be brief."}, {"role": "user", "content": "<image>Colour?"},
    {"role": "assistant", "content": "red"}, {"role": "user", "content": "And this?\n<image>"},
    {"role": "assistant", "content": "blue"}], "images": ["red.png", "blue.png"]}
SHAREGPT_HUMAN = {"conversations": [
    {"from": "human", "value": "<image>Colour?"}, {"from": "gpt", "value": "red"},
    {"from": "human", "value": "And this?\n<image>"}, {"from": "gpt", "value": "blue"}],
    "system": "Be brief.", "images": ["red.png", "blue.png"]}
LLAVA = {"id": "x1", "image": ["red.png", "blue.png"], "conversations": [
    {"from": "system", "value": "Be brief."},
    {"from": "human", "value": "<image>Colour?"}, {"from": "gpt", "value": "red"},
    {"from": "human", "value": "And this?\n<image>"}, {"from": "gpt", "value": "blue"}]}
QWEN_TAGS = {"messages": [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "<|vision_start|>red.png<|vision_end|>Colour?"},
    {"role": "assistant", "content": "red"},
    {"role": "user", "content": "And this?\n<|vision_start|>blue.png<|vision_end|>"},
    {"role": "assistant", "content": "blue"}]}


def _messages(samples):
    return [s.messages for s in samples]


@pytest.mark.parametrize("record, fmt, as_array", [
    (SHAREGPT, "sharegpt", True), (SHAREGPT_HUMAN, "sharegpt", False), (LLAVA, "llava", True),
    (LLAVA, "llava", False), (QWEN_TAGS, "qwen_tags", False)])
def test_each_format_reads_into_the_same_canonical_sample(tmp_path, images, record, fmt, as_array):
    expected = read_samples(write_jsonl(tmp_path / "canonical.jsonl", [CANONICAL]))
    path = tmp_path / ("data.json" if as_array else "data.jsonl")
    path.write_text(json.dumps([record, record], indent=2) if as_array else json.dumps(record) + "\n")
    assert get_reader(path).name == fmt
    samples = read_samples(path)
    assert _messages(samples) == _messages(expected) * (2 if as_array else 1)
    if as_array:  # records of a pretty-printed array are named by their index and the line they start on
        own = ', id "x1"' if "id" in record else ""
        second = 2 + json.dumps(record, indent=2).count(chr(10)) + 1
        assert [s.id for s in samples] == [f"{path}[0] (line 2{own})", f"{path}[1] (line {second}{own})"]


def test_llamafactory_registry_entry_with_custom_tags(tmp_path, images):
    (tmp_path / "data").mkdir()
    record = {"conv": [{"speaker": "person", "text": "<image>Colour?"}, {"speaker": "bot", "text": "red"},
                       {"speaker": "person", "text": "And this?\n<image>"}, {"speaker": "bot", "text": "blue"}],
              "pics": ["../red.png", "../blue.png"], "sys": "Be brief."}
    (tmp_path / "data" / "mine.json").write_text(json.dumps([record]))
    (tmp_path / "dataset_info.json").write_text(json.dumps({"mine": {
        "file_name": "data/mine.json", "formatting": "sharegpt",
        "columns": {"messages": "conv", "images": "pics", "system": "sys"},
        "tags": {"role_tag": "speaker", "content_tag": "text", "user_tag": "person", "assistant_tag": "bot"}},
        "remote": {"hf_hub_url": "someone/data"}, "alpaca": {"file_name": "alpaca.json"}}))
    expected = read_samples(write_jsonl(tmp_path / "canonical.jsonl", [CANONICAL]))
    # Image paths are relative to the registry's folder, as in LLaMA-Factory (its dataset_dir).
    (tmp_path / "dataset_info.json").write_text((tmp_path / "dataset_info.json").read_text().replace("../", ""))
    (tmp_path / "data" / "mine.json").write_text(json.dumps([{**record, "pics": ["red.png", "blue.png"]}]))
    assert _messages(read_samples(f"{tmp_path}/dataset_info.json#mine")) == _messages(expected)
    with pytest.raises(DataError, match="remote dataset; vlmtune reads local files only"):
        read_samples(f"{tmp_path}/dataset_info.json#remote")
    with pytest.raises(DataError, match="name the dataset as .*#NAME; entries: mine, remote, alpaca"):
        read_samples(tmp_path / "dataset_info.json")
    (tmp_path / "alpaca.json").write_text(json.dumps([{"instruction": "<image>Colour?", "input": "", "output": "red",
                                                         "images": ["red.png"]}]))
    [alpaca] = read_samples(f"{tmp_path}/dataset_info.json#alpaca")
    assert alpaca.messages == expected[0].messages[1:3]


@pytest.mark.parametrize("record, field, problem", [
    ({**SHAREGPT, "images": ["red.png"]}, "messages[3].content", "more <image> placeholders than images (1 given)"),
    ({**SHAREGPT, "images": ["red.png", "blue.png", "green.png"]}, "images", "3 images but 2 <image> placeholders"),
    ({**SHAREGPT, "videos": ["a.mp4"]}, "videos[0]", "video file not found 'a.mp4'"),
    ({**SHAREGPT, "audios": ["a.mp3"]}, "audios", "only images and videos are supported, not audio"),
    ({"messages": [{"role": "user", "content": "<image>hi"}, {"role": "assistant", "content": "<image>"}],
      "images": ["red.png", "blue.png"]}, "messages[1].content", "assistant turns cannot contain images"),
    ({"conversations": [{"from": "human", "value": "hi"}, {"from": "observation", "value": "x"}], "images": []},
     "conversations[1].from", "tool and function turns are not supported"),
    ({"conversations": [{"from": "human", "value": "hi"}], "images": []}, "messages", "no assistant turn"),
])
def test_placeholder_and_role_problems_name_the_field(tmp_path, images, record, field, problem):
    path = write_jsonl(tmp_path / "d.jsonl", [SHAREGPT, record])
    result = read_dataset(path, format="sharegpt")
    [error] = result.problems
    assert isinstance(error, RecordError) and error.line == 2 and error.field == field and problem in str(error)
    assert len(result.samples) == 1


def test_ms_swift_objects_become_boxes_in_original_pixels(tmp_path, images):
    record = {"messages": [{"role": "user", "content": "<image>Find the <ref-object>"},
                           {"role": "assistant", "content": "<bbox> and <bbox>"}],
              "images": ["red.png"], "objects": {"ref": ["dot"], "bbox": [[1, 2, 3, 4], [5.5, 6, 7, 8]]}}
    [sample] = read_samples(write_jsonl(tmp_path / "d.jsonl", [record]))
    assert sample.messages[0].text == "Find the dot"
    assert sample.messages[1].content == (BoxPart((1.0, 2.0, 3.0, 4.0)), TextPart(" and "),
                                          BoxPart((5.5, 6.0, 7.0, 8.0)))
    del record["objects"]["bbox"][1]
    with pytest.raises(RecordError, match="more <bbox> placeholders"):
        read_samples(write_jsonl(tmp_path / "d.jsonl", [record]))


def test_qwen_tags_refuse_mixing_with_placeholders(tmp_path, images):
    bad = {"messages": [{"role": "user", "content": "<image><|vision_start|>red.png<|vision_end|>"},
                        {"role": "assistant", "content": "x"}]}
    with pytest.raises(RecordError, match="mixes <image> placeholders"):
        read_samples(write_jsonl(tmp_path / "d.jsonl", [bad]))


def test_truncated_json_array_keeps_the_records_before_the_cut(tmp_path, images):
    path = tmp_path / "d.json"
    text = json.dumps([LLAVA, LLAVA], indent=2)
    path.write_text(text[: len(text) - 40])
    result = read_dataset(path)
    assert len(result.samples) == 1 and len(result.problems) == 1
    assert "the array cannot be read past it" in str(result.problems[0])


needs_real = pytest.mark.skipif(not REAL.is_dir(), reason="../shared/fixtures/real is not beside the project")


@needs_real
def test_llamafactory_demo_data_reads_as_llamafactory_reads_it():
    data = REAL / "llamafactory_mllm_demo" / "data"
    samples = read_samples(f"{data}/dataset_info.json#mllm_demo")
    direct = read_samples(data / "mllm_demo.json")
    assert len(samples) == 6 and _messages(samples) == _messages(direct)
    first = samples[0]
    # The same image used in two turns is two image parts, never de-duplicated.
    assert first.images == [data / "mllm_demo_data" / "1.jpg"] * 2
    assert first.messages[2].content[0] == TextPart("What are they doing?")
    videos = read_samples(f"{data}/dataset_info.json#mllm_video_demo")
    assert [[p.path.name for p in s.video_parts] for s in videos] == [["1.mp4"], ["2.avi"], ["3.mp4"]]
    assert videos[0].messages[0].content == (VideoPart(data / "mllm_demo_data" / "1.mp4"),
                                             TextPart("Why is this video funny?"))
    with pytest.raises(DataError, match="only images and videos are supported, not audio"):
        read_samples(f"{data}/dataset_info.json#mllm_audio_demo")
    # Its typed-content JSONL stores paths relative to the repository root, and ends with a blank line.
    v1 = read_samples(data / "v1_multimodal_demo.jsonl", options=ReadOptions(media_root=data.parent))
    assert _messages(v1) == _messages(direct) * 4
    # ... the same six conversations four times over: the checker keeps them and says so.
    report = check_dataset(data / "v1_multimodal_demo.jsonl", options=ReadOptions(media_root=data.parent))
    assert report.ok and len(report.duplicates) == 18
    assert report.duplicates[0] == (f"{data}/v1_multimodal_demo.jsonl:7", f"{data}/v1_multimodal_demo.jsonl:1")
    assert "warning: 18 samples repeat an earlier one" in report.summary()


@needs_real
def test_qwen_finetune_demo_reads_and_reports_its_missing_videos():
    # Qwen's fine-tuning format names a record's video in "video"; the demo ships without the video files.
    demo = REAL / "qwen_finetune_demo"
    samples = read_samples(demo / "demo" / "single_images.json", options=ReadOptions(media_root=demo))
    assert [s.messages[-1].text for s in samples] == ["Yes", "6", "2014"]
    assert samples[0].messages[0].content[-1].path == demo / "demo" / "images" / "10095.png"
    result = read_dataset(demo / "demo" / "video.json", options=ReadOptions(media_root=demo))
    assert not result.samples and [p.field for p in result.problems] == ["video[0]"] * 3
    assert all("video file not found 'v_" in str(p) for p in result.problems)


@needs_real
def test_ms_swift_examples_give_line_numbered_reasons():
    swift = REAL / "peer_samples" / "ms_swift"
    result = read_dataset(swift / "docs_sft_multimodal.jsonl")
    assert [s.id.rsplit(":", 1)[1] for s in result.samples] == ["1"]
    assert [(p.line, p.field) for p in result.problems] == [(2, "images[0]"), (3, "audios"), (4, "images[0]")]
    agent = read_dataset(swift / "docs_agent_multimodal.jsonl")
    assert not agent.samples and [p.line for p in agent.problems] == [1, 2]
