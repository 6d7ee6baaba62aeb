"""Padding-free packing (``train.packing``): a batch's samples in one row, positions restarting per sample (3-D
M-RoPE for Qwen-VL), attention never crossing samples. A packed row gives every sample the loss and the gradients
it has alone."""

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import write_jsonl
from vlmtune.cli.main import main
from vlmtune.data import IGNORE_INDEX, EncodedDataset, Renderer
from vlmtune.data.check import check_dataset
from vlmtune.data.collate import SAMPLE_ID, SAMPLE_IDS, placeholder_image_features
from vlmtune.data.demo import make_demo_data
from vlmtune.data.pack import PackingCollator
from vlmtune.data.render import SEQUENCE_KEYS
from vlmtune.models import load_model, load_processor, spec_for
from vlmtune.train.packing import model_positions, split_per_sample

QWEN_VL = ["qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_5"]
PACKING = [*QWEN_VL, "llava", "llava_onevision", "internvl", "smolvlm", "idefics3"]  # plain RoPE, tiles


def _record(text: str, answer: str, *images: str) -> dict:
    content = [{"type": "image", "image": image} for image in images]
    return {"messages": [{"role": "user", "content": [*content, {"type": "text", "text": text}]},
                         {"role": "assistant", "content": answer}]}


@pytest.fixture
def packed_family(request, tiny_dir, tmp_path, images):
    """(spec, model, features of four samples: two images of different sizes, text only, one image)."""
    model_dir = tiny_dir(request.param)
    spec = spec_for(model_dir, check_split=False)
    records = [_record("What colours are these?", "red and blue", "red.png", "blue.png"),
               _record("Name three shapes, please.", "circle square triangle"),
               _record("What colour is this?", "green", "green.png"),
               _record("And this one?", "blue, a tall one", "blue.png")]
    samples = check_dataset(write_jsonl(tmp_path / "d.jsonl", records)).samples
    dataset = EncodedDataset(samples, Renderer(load_processor(model_dir, spec), spec))
    torch.manual_seed(0)
    model = load_model(model_dir).eval()  # eval: no dropout, so the packed and the single passes compare
    split_per_sample(model, spec.packing_per_sample_modules)
    return spec, model, [dataset[i] for i in range(len(dataset))]


def _summed_losses(logits: torch.Tensor, labels: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    """Next-token cross-entropy summed over each span's label tokens, one value per span."""
    losses = []
    for logit, label in zip(logits.split(lengths), labels.split(lengths), strict=True):
        losses.append(torch.nn.functional.cross_entropy(logit[:-1].float(), label[1:], ignore_index=IGNORE_INDEX,
                                                        reduction="sum"))
    return torch.stack(losses)


def _model_inputs(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if k not in (SAMPLE_IDS, SAMPLE_ID, "labels")}


@pytest.mark.slow  # forward and backward passes of nine families, packed and one sample at a time
@pytest.mark.parametrize("packed_family", PACKING, indirect=True)
def test_a_packed_row_gives_each_sample_its_own_loss_and_gradients(packed_family):
    spec, model, features = packed_family
    batch = PackingCollator(model_positions(model))(features)
    lengths = [len(f["input_ids"]) for f in features]
    assert batch["input_ids"].shape == (1, sum(lengths)) and "attention_mask" not in batch
    assert batch[SAMPLE_IDS] == [f[SAMPLE_ID] for f in features]

    model.zero_grad(set_to_none=True)
    packed = _summed_losses(model(**_model_inputs(batch)).logits[0], batch["labels"][0], lengths)
    packed.sum().backward()
    packed_grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}

    model.zero_grad(set_to_none=True)
    alone = []
    for f in features:
        inputs = {k: v[None] if k in SEQUENCE_KEYS else v for k, v in _model_inputs(f).items()}
        alone.append(_summed_losses(model(**inputs).logits[0], f["labels"], [len(f["input_ids"])])[0])
    torch.stack(alone).sum().backward()

    assert torch.allclose(packed, torch.stack(alone).detach(), atol=1e-5, rtol=1e-5), (packed, alone)
    assert all(loss > 0 for loss in alone)
    assert packed_grads.keys() == {k for k, p in model.named_parameters() if p.grad is not None}
    vision_grads = 0
    for name, p in model.named_parameters():
        if p.grad is None:  # a layer the model does not use (LLaVA's last vision layer); unused packed too
            continue
        assert torch.allclose(packed_grads[name], p.grad, atol=1e-5, rtol=1e-4), name
        vision_grads += spec.component_of(name) == "vision" and bool(p.grad.abs().sum() > 0)
    assert vision_grads > 0  # the images of every sample reached the loss


@pytest.mark.parametrize("packed_family", ["qwen2_vl"], indirect=True)
def test_positions_restart_at_every_sample_with_each_image_on_its_own_grid(packed_family):
    _spec, model, features = packed_family
    batch = PackingCollator(model_positions(model))(features)
    positions = batch["position_ids"][:, 0]
    assert positions.shape == (4, batch["input_ids"].shape[1])
    merge = model.config.vision_config.spatial_merge_size
    grids = iter(batch["image_grid_thw"].tolist())
    start = 0
    for f in features:
        types, n = f["mm_token_type_ids"].tolist(), len(f["input_ids"])
        got = positions[:, start:start + n]
        assert got[0].tolist() == list(range(n))  # the text row marks the sample: 0 .. n - 1
        # Text tokens step by one on all three axes; an image's tokens sit at (t, row, column) from where it
        # starts, and the text after it resumes past its longer side.
        expected, pos, i = [], 0, 0
        while i < n:
            if types[i] == 0:
                expected.append((pos, pos, pos))
                pos, i = pos + 1, i + 1
                continue
            _t, h, w = (side // merge if k else side for k, side in enumerate(next(grids)))
            expected += [(pos, pos + r, pos + c) for r in range(h) for c in range(w)]
            pos, i = pos + max(h, w), i + h * w
        assert [tuple(col) for col in got[1:].T.tolist()] == expected
        assert batch["labels"][0, start] == IGNORE_INDEX
        assert torch.equal(batch["labels"][0, start + 1:start + n], f["labels"][1:])
        start += n
    assert start == positions.shape[1] and next(grids, None) is None


def _config(tmp_path, data, family: str, name: str, **train) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(json.dumps({
        "model": {"path": family}, "data": {"train": str(data)}, "lora": {"r": 4, "dropout": 0.0},
        "train": {"output_dir": str(tmp_path / name), "batch_size": 4, "lr": 1e-3, "scheduler": "constant",
                  "logging_steps": 1, "seed": 3, "progress": False, "report_to": "none", "packing": True,
                  "trace_samples": True, **train},
    }))
    return str(path)


def _losses(run_dir: Path) -> dict[int, float]:
    entries = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {e["step"]: e["loss"] for e in entries if "loss" in e}


@pytest.mark.slow  # three short training runs
def test_packed_training_learns_and_resumes_exactly(tiny_dir, tmp_path):
    data = make_demo_data(tmp_path / "data", n_train=40, n_val=4, seed=1)["train"]
    model = str(tiny_dir("qwen2_5_vl"))
    assert main(["train", _config(tmp_path, data, model, "straight", max_steps=30)]) == 0
    straight = _losses(tmp_path / "straight")
    assert sorted(straight) == list(range(1, 31))
    first, last = sum(straight[s] for s in range(1, 6)) / 5, sum(straight[s] for s in range(26, 31)) / 5
    assert last < 0.5 * first, (first, last)
    trace = [json.loads(line) for line in (tmp_path / "straight" / "samples.rank0.jsonl").read_text().splitlines()]
    assert [len(t["ids"]) for t in trace] == [4] * 30  # batch_size samples in each packed row

    assert main(["train", _config(tmp_path, data, model, "resumed", max_steps=15, save_steps=15)]) == 0
    assert main(["train", _config(tmp_path, data, model, "resumed", max_steps=30, save_steps=15), "--resume"]) == 0
    resumed = _losses(tmp_path / "resumed")
    assert sorted(resumed) == list(range(1, 31))
    for step in range(1, 31):
        assert resumed[step] == pytest.approx(straight[step], rel=1e-4, abs=1e-5), step


def test_packing_is_refused_for_a_family_that_cannot_pack(tiny_dir, tmp_path, capsys):
    data = write_jsonl(tmp_path / "d.jsonl", [_record("What colour is the sky?", "blue")])
    assert main(["train", _config(tmp_path, data, str(tiny_dir("gemma3")), "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == ("vlmtune train: error: train.packing: gemma3 cannot pack samples into one row (its attention "
                       "does not keep packed samples apart); set train.packing: false")
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


@pytest.mark.parametrize("packed_family", ["qwen2_vl"], indirect=True)
def test_a_pack_without_images_gets_the_placeholder_image_as_a_segment_of_its_own(packed_family, tmp_path):
    spec, model, features = packed_family
    text_only = [features[1], features[1]]
    renderer = Renderer(load_processor(model.name_or_path, spec), spec)
    placeholder = placeholder_image_features(renderer)
    plain = PackingCollator(model_positions(model))(text_only)
    with_image = PackingCollator(model_positions(model), placeholder)(text_only)
    width, n = plain["input_ids"].shape[1], len(placeholder["input_ids"])
    assert with_image["input_ids"].shape[1] == width + n and "pixel_values" not in plain
    assert torch.equal(with_image["pixel_values"], placeholder["pixel_values"])
    assert with_image["position_ids"][0, 0, width:].tolist() == list(range(n))  # a sample of its own
    assert (with_image["labels"][0, width:] == IGNORE_INDEX).all()

    def loss_and_grads(batch):
        model.zero_grad(set_to_none=True)
        loss = _summed_losses(model(**_model_inputs(batch)).logits[0], batch["labels"][0],
                              [batch["input_ids"].shape[1]])[0]
        loss.backward()
        return loss.detach(), {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}

    loss, grads = loss_and_grads(plain)
    ph_loss, ph_grads = loss_and_grads(with_image)
    assert torch.allclose(loss, ph_loss, atol=1e-5) and grads.keys() < ph_grads.keys()
    assert all(torch.allclose(grads[k], ph_grads[k], atol=1e-6) for k in grads)
    # The vision tower ran (its weights have gradients), and learnt nothing from the placeholder.
    assert all(not ph_grads[k].any() for k in ph_grads.keys() - grads.keys())
