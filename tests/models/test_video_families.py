"""Videos in the Qwen-VL families: rendering equals the processor's own chat template with the same frames, labels
are exactly the answers, token counts equal the encoding, and the frames are the family's own sampling."""

import numpy as np
import pytest
import torch

from tests.conftest import write_jsonl
from tests.data.video_clips import write_clip
from vlmtune.data import IGNORE_INDEX, Renderer, read_samples
from vlmtune.data.videos import VIDEO_KWARGS, VideoSettings, load_frames, metadata
from vlmtune.models import get_family, load_processor
from vlmtune.models.video_frames import qwen2_frame_indices, qwen3_frame_indices

VIDEO_FAMILIES = ["qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_5"]
SETTINGS = VideoSettings(fps=2.0, max_pixels=64 * 64)


def _video_sample(tmp_path, frames=10):
    write_clip(tmp_path / "clip.mp4", frames=frames)
    record = {"messages": [
        {"role": "user", "content": [{"type": "video", "video": "clip.mp4"},
                                     {"type": "text", "text": "Which way does it move?"}]},
        {"role": "assistant", "content": "right"},
        {"role": "user", "content": "Sure?"},
        {"role": "assistant", "content": "Yes, right."},
    ]}
    [sample] = read_samples(write_jsonl(tmp_path / "d.jsonl", [record]))
    return sample


def _setup(family, tiny_dir, tmp_path):
    spec = get_family(family)
    processor = load_processor(tiny_dir(family), spec)
    return spec, processor, Renderer(processor, spec, video=SETTINGS), _video_sample(tmp_path)


@pytest.mark.parametrize("family", VIDEO_FAMILIES)
def test_video_rendering_equals_the_processors_own_chat_template(family, tiny_dir, tmp_path):
    spec, processor, renderer, sample = _setup(family, tiny_dir, tmp_path)
    ours = renderer.encode(sample)
    [frame_plan] = renderer.frame_plans(sample)
    frames = load_frames(sample.video_parts[0].path, frame_plan)
    chat = sample.to_chat()
    chat[0]["content"][0]["video"] = frames
    theirs = processor.apply_chat_template(
        chat, tokenize=True, return_dict=True, return_tensors="pt",
        processor_kwargs={"video_metadata": [metadata(frame_plan)], "videos_kwargs": VIDEO_KWARGS})
    assert ours["input_ids"].tolist() == theirs["input_ids"][0].tolist()
    assert ours["video_grid_thw"].tolist() == theirs["video_grid_thw"].tolist() == [list(frame_plan.grid)]
    assert set(theirs) - {"attention_mask"} <= set(ours)
    for key, value in theirs.items():  # pixels, types, Qwen2.5-VL's second_per_grid_ts: all as the processor's
        if key not in ("input_ids", "attention_mask"):
            expected = value[0] if value.shape[0] == 1 and ours[key].dim() < value.dim() else value
            torch.testing.assert_close(ours[key], expected, msg=f"{family}: {key} differs")
    if "second_per_grid_ts" in ours:  # 4 of the clip's 10 frames at 4 fps: 1.6 frames a second, 2 per grid step
        assert ours["second_per_grid_ts"].tolist() == [pytest.approx(2 / 1.6)]
    video_id = processor.tokenizer.convert_tokens_to_ids(processor.video_token)
    merge = processor.video_processor.merge_size
    assert int((ours["input_ids"] == video_id).sum()) == int(np.prod(frame_plan.grid)) // merge ** 2


@pytest.mark.parametrize("family", VIDEO_FAMILIES)
def test_video_labels_are_exactly_the_answers(family, tiny_dir, tmp_path):
    spec, processor, renderer, sample = _setup(family, tiny_dir, tmp_path)
    features = renderer.encode(sample)
    labels, ids = features["labels"], features["input_ids"]
    trained = (labels != IGNORE_INDEX).nonzero().flatten().tolist()
    runs, start = [], trained[0]
    for a, b in zip(trained, trained[1:] + [None], strict=True):
        if b != a + 1:
            runs.append(processor.tokenizer.decode(ids[start:a + 1]))
            start = b
    assert runs == ["right<|im_end|>", "Yes, right.<|im_end|>"]


@pytest.mark.parametrize("family", VIDEO_FAMILIES)
def test_video_token_count_equals_the_encoding(family, tiny_dir, tmp_path):
    spec, processor, renderer, sample = _setup(family, tiny_dir, tmp_path)
    text, visual = renderer.count_tokens(sample, [])
    features = renderer.encode(sample)
    assert text + visual == len(features["input_ids"])
    assert visual == int((features["mm_token_type_ids"] != 0).sum())


def test_qwen2_frames_follow_qwen_vl_utils_smart_nframes():
    # 10 frames at 4 fps, sampled at 2 fps: 5 frames wanted, floored to the temporal patch of 2 -> 4, spread evenly.
    assert qwen2_frame_indices(10, 4.0, 2.0, 4, 768) == [0, 3, 6, 9]
    # A long clip: 2 fps of a 30 fps, 100-frame video is 6.67 frames -> 6.
    assert qwen2_frame_indices(100, 30.0, 2.0, 4, 768) == [0, 20, 40, 59, 79, 99]
    assert qwen2_frame_indices(300, 30.0, 2.0, 4, 8) == [0, 43, 85, 128, 171, 214, 256, 299]  # max_frames
    assert qwen2_frame_indices(3, 4.0, 2.0, 4, 768) == [0, 2]  # fewer than min_frames: what the video has, even
    assert qwen2_frame_indices(1, 4.0, 2.0, 4, 768) == []  # one frame cannot fill a temporal patch


def test_qwen3_frames_are_its_video_processors_own(tiny_dir):
    from transformers.video_utils import VideoMetadata

    vp = load_processor(tiny_dir("qwen3_vl"), get_family("qwen3_vl")).video_processor
    for total, fps, wanted in ((10, 4.0, 2.0), (100, 30.0, 2.0), (301, 25.0, 1.0), (3, 4.0, 2.0), (2000, 30.0, 2.0)):
        theirs = vp.sample_frames(VideoMetadata(total_num_frames=total, fps=fps), fps=wanted).tolist()
        assert qwen3_frame_indices(total, fps, wanted, vp.min_frames, vp.max_frames) == theirs
