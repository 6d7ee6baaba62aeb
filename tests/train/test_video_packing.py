"""Packing (``train.packing``) with video samples: a packed row gives each sample the loss it has alone, Qwen2.5-VL's
per-video time spacing (``second_per_grid_ts``) included."""

import pytest
import torch

from tests.conftest import write_jsonl
from tests.data.video_clips import write_clip
from vlmtune.data import IGNORE_INDEX, EncodedDataset, Renderer
from vlmtune.data.check import check_dataset
from vlmtune.data.collate import SAMPLE_ID, SAMPLE_IDS
from vlmtune.data.pack import PackingCollator
from vlmtune.data.render import SEQUENCE_KEYS
from vlmtune.data.videos import VideoSettings
from vlmtune.models import load_model, load_processor, spec_for
from vlmtune.train.packing import model_positions


def _record(video: str | None, text: str, answer: str) -> dict:
    content = [{"type": "video", "video": video}] if video else []
    return {"messages": [{"role": "user", "content": [*content, {"type": "text", "text": text}]},
                         {"role": "assistant", "content": answer}]}


def _losses(logits: torch.Tensor, labels: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    return torch.stack([torch.nn.functional.cross_entropy(logit[:-1], label[1:], ignore_index=IGNORE_INDEX,
                                                          reduction="sum")
                        for logit, label in zip(logits.split(lengths), labels.split(lengths), strict=True)])


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
def test_a_packed_row_of_videos_gives_each_sample_its_own_loss(family, tiny_dir, tmp_path):
    write_clip(tmp_path / "a.mp4", frames=10, fps=4)  # 4 of 10 frames: 1.6 sampled frames a second
    write_clip(tmp_path / "b.mp4", frames=12, fps=3, direction="left")
    records = [_record("a.mp4", "Which way?", "right"), _record(None, "Name a shape.", "circle"),
               _record("b.mp4", "And this one?", "left, slowly")]
    samples = check_dataset(write_jsonl(tmp_path / "d.jsonl", records)).samples
    model_dir = tiny_dir(family)
    spec = spec_for(model_dir, check_split=False)
    renderer = Renderer(load_processor(model_dir, spec), spec, video=VideoSettings(max_pixels=64 * 64))
    features = [EncodedDataset(samples, renderer)[i] for i in range(3)]
    torch.manual_seed(0)
    model = load_model(model_dir).eval()
    batch = PackingCollator(model_positions(model))(features)
    lengths = [len(f["input_ids"]) for f in features]
    inputs = {k: v for k, v in batch.items() if k not in (SAMPLE_IDS, SAMPLE_ID, "labels")}
    with torch.no_grad():
        packed = _losses(model(**inputs).logits[0], batch["labels"][0], lengths)
        alone = []
        for f in features:
            one = {k: v[None] if k in SEQUENCE_KEYS else v for k, v in f.items() if k not in (SAMPLE_ID, "labels")}
            alone.append(_losses(model(**one).logits[0], f["labels"], [len(f["input_ids"])])[0])
    torch.testing.assert_close(packed, torch.stack(alone), atol=1e-5, rtol=1e-5)
