"""SmolVLM and Idefics3: tiles + global image, their framing tokens, the chat template, the parameter table, and a
SmolVLM that learns the demo task from tiled images."""

import json
import time

import pytest
import torch
from PIL import Image
from transformers import AutoConfig

from tests.conftest import dry_run_table, write_jsonl
from vlmtune.config import load_config
from vlmtune.data import IGNORE_INDEX, Renderer, read_samples
from vlmtune.data.demo import make_demo_data
from vlmtune.models import get_family, load_model, load_processor
from vlmtune.train import train

FAMILIES = ("smolvlm", "idefics3")


@pytest.fixture(scope="module", params=FAMILIES)
def family(request):
    return request.param


@pytest.fixture(scope="module")
def processor(tiny_dir, family):
    return load_processor(tiny_dir(family), get_family(family))


def test_dry_run_parameter_table_for_lora_r8(tiny_dir, family, tmp_path, capsys):
    folder = tiny_dir(family)
    rows = dry_run_table(folder, tmp_path, capsys, "lora.r=8")

    cfg = AutoConfig.from_pretrained(folder)
    text, vision = cfg.text_config, cfg.vision_config
    h, ffn, vocab = text.hidden_size, text.intermediate_size, text.vocab_size
    kv = text.num_key_value_heads * h // text.num_attention_heads
    vh, vffn, tile, patch = vision.hidden_size, vision.intermediate_size, vision.image_size, vision.patch_size
    # LoRA r on every language linear (default "all-linear"): A is r x in, B is out x r.
    r = 8
    shapes = [(h, h), (h, kv), (h, kv), (h, h), (h, ffn), (h, ffn), (ffn, h)]  # q k v o gate up down
    lora = text.num_hidden_layers * sum(r * (i + o) for i, o in shapes)
    # Llama layer: no biases, two RMSNorms; final norm; embeddings.
    layer = h * h + 2 * h * kv + h * h + 3 * h * ffn + 2 * h
    language = vocab * h + text.num_hidden_layers * layer + h
    # SigLIP-style layer: q/k/v/out with bias, two LayerNorms, fc1/fc2; patch conv, position table, final norm.
    vlayer = 4 * (vh * vh + vh) + 4 * vh + (vh * vffn + vffn) + (vffn * vh + vh)
    vision_total = (3 * patch * patch * vh + vh) + (tile // patch) ** 2 * vh + vision.num_hidden_layers * vlayer
    vision_total += 2 * vh
    projector = vh * cfg.scale_factor ** 2 * h  # pixel shuffle folds 2 x 2 patches into one vector; no bias

    assert rows["language"] == [lora, language + lora]
    assert rows["vision"] == [0, vision_total]
    assert rows["projector"] == [0, projector]
    assert rows["lm_head"] == [0, vocab * h]
    assert rows["all"] == [lora, language + lora + vision_total + projector + vocab * h]
    assert lora == 2 * 8 * (128 + 96 + 96 + 128 + 192 + 192 + 192)  # by hand: hidden 64, kv 32, ffn 128
    assert (vision_total, projector) == (23_840, 8_192)  # by hand: 32-px tiles of 8-px patches, hidden 32


def _samples(folder, records, size):
    Image.new("RGB", size, (255, 0, 0)).save(folder / "x.png")
    return read_samples(write_jsonl(folder / "d.jsonl", records))


_ONE_IMAGE = [{"messages": [
    {"role": "user", "content": [{"type": "image", "image": "x.png"}, {"type": "text", "text": "Colour?"}]},
    {"role": "assistant", "content": "red"}]}]


def _expected_expansion(rows: int, cols: int, n: int) -> str:
    """What an image becomes, written out from the published processors' layout."""
    tile = "<fake_token_around_image><row_{}_col_{}>" + "<image>" * n
    grid = "".join("".join(tile.format(r, c) for c in range(1, cols + 1)) + "\n" for r in range(1, rows + 1))
    glob = "<fake_token_around_image><global-img>" + "<image>" * n + "<fake_token_around_image>"
    return grid + "\n" + glob if rows else glob


@pytest.mark.parametrize(("size", "rows", "cols"), [
    ((64, 48), 2, 2),  # longest edge to 64 px, then 64 x 48 up to multiples of the 32-px tile
    ((112, 112), 2, 2),  # a demo image
    ((20, 20), 2, 2),  # small images are upscaled to the longest edge too
    ((64, 16), 1, 2),
    ((16, 80), 2, 1),
])
def test_an_image_becomes_rows_x_cols_tiles_and_a_global_image(processor, family, size, rows, cols, tmp_path):
    n = processor.image_seq_len
    assert n == 4  # (32 / 8)^2 patches, pixel-shuffled by 2 per side
    inputs = processor(text=["User:<image>Colour?"], images=[Image.new("RGB", size, (255, 0, 0))],
                       return_tensors="pt", add_special_tokens=False)
    tok, ids = processor.tokenizer, inputs["input_ids"][0]
    assert tok.decode(ids) == "User:" + _expected_expansion(rows, cols, n) + "Colour?"
    assert inputs["pixel_values"].shape == (1, rows * cols + 1, 3, 32, 32)
    assert int((ids == tok.convert_tokens_to_ids("<image>")).sum()) == (rows * cols + 1) * n
    # Counting from the image size alone gives the same number of tokens, without the pixels.
    spec = get_family(family)
    [sample] = _samples(tmp_path, _ONE_IMAGE, size)
    features = Renderer(processor, spec).encode(sample)
    assert sum(Renderer(processor, spec).count_tokens(sample, [size])) == len(features["input_ids"])


def test_tiny_config_matches_the_processor_and_the_real_ratios(tiny_dir, family, processor):
    folder = tiny_dir(family)
    cfg = AutoConfig.from_pretrained(folder)
    tile, patch = cfg.vision_config.image_size, cfg.vision_config.patch_size
    assert (tile // patch) ** 2 // cfg.scale_factor ** 2 == processor.image_seq_len == 4
    assert processor.image_processor.max_image_size == {"longest_edge": tile}
    assert (512 // 16) ** 2 // 4 ** 2 == 64  # SmolVLM-256M/500M: 512-px tiles, 16-px patches, scale factor 4
    assert (364 // 14) ** 2 // 2 ** 2 == 169  # Idefics3-8B: 364-px tiles, 14-px patches, scale factor 2
    assert json.loads((folder / "processor_config.json").read_text())["image_seq_len"] == 4
    assert cfg.image_token_id == processor.tokenizer.convert_tokens_to_ids("<image>")


def test_framing_tokens_are_single_special_tokens(tiny_dir, family, processor):
    tok = processor.tokenizer
    framing = ["<fake_token_around_image>", "<image>", "<global-img>", "<end_of_utterance>"]
    framing += [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
    for token in framing:
        assert len(tok.encode(token, add_special_tokens=False)) == 1, token
    assert tok.eos_token == "<end_of_utterance>"
    generation = json.loads((tiny_dir(family) / "generation_config.json").read_text())
    assert generation["eos_token_id"] == tok.convert_tokens_to_ids("<end_of_utterance>")


def test_smolvlm_tokenizer_names_its_image_tokens(tiny_dir):
    folder = tiny_dir("smolvlm")
    processor = load_processor(folder, get_family("smolvlm"))
    tok = processor.tokenizer
    # SmolVLMProcessor reads these attributes (the published tokenizer_config.json has them).
    assert (tok.fake_image_token, tok.image_token, tok.global_image_token) == (
        "<fake_token_around_image>", "<image>", "<global-img>")
    assert (tok.bos_token, tok.pad_token) == ("<|im_start|>", "<|im_end|>")
    assert json.loads((folder / "tokenizer_config.json").read_text())["tokenizer_class"] == "GPT2Tokenizer"


def test_idefics3_tokenizer_adds_begin_of_text_and_rendering_keeps_one(tiny_dir, tmp_path):
    spec = get_family("idefics3")
    processor = load_processor(tiny_dir("idefics3"), spec)
    tok = processor.tokenizer
    assert (tok.bos_token, tok.pad_token) == ("<|begin_of_text|>", "<|reserved_special_token_0|>")
    assert tok("red")["input_ids"][0] == tok.bos_token_id  # as Llama 3's tokenizer does
    [sample] = _samples(tmp_path, _ONE_IMAGE, (64, 48))
    ids = Renderer(processor, spec).encode(sample)["input_ids"]
    assert ids[0] == tok.bos_token_id and int((ids == tok.bos_token_id).sum()) == 1


# The conversation and expected renderings of test_apply_chat_template in huggingface/transformers
# tests/models/smolvlm/test_processing_smolvlm.py and tests/models/idefics3/test_processing_idefics3.py.
_UPSTREAM_CHAT = [
    {"role": "user", "content": [{"type": "text", "text": "What do these images show?"}, {"type": "image"},
                                 {"type": "image"}]},
    {"role": "assistant", "content": [{"type": "text", "text": (
        "The first image shows the statue of Liberty in New York. The second image picture depicts Idefix, the dog "
        "of Obelix in Asterix and Obelix.")}]},
    {"role": "user", "content": [{"type": "text", "text": "And who is that?"}]},
]
_UPSTREAM_RENDERING = (
    "User: What do these images show?<image><image><end_of_utterance>\n"
    "Assistant: The first image shows the statue of Liberty in New York. The second image picture depicts Idefix, "
    "the dog of Obelix in Asterix and Obelix.<end_of_utterance>\n"
    "User: And who is that?<end_of_utterance>\n"
    "Assistant:"
)
_START = {"smolvlm": "<|im_start|>", "idefics3": "<|begin_of_text|>"}


def test_template_renders_like_the_published_checkpoints(processor, family):
    rendered = processor.apply_chat_template(_UPSTREAM_CHAT, tokenize=False, add_generation_prompt=True)
    assert rendered == _START[family] + _UPSTREAM_RENDERING


def test_system_prompt_is_a_system_turn_and_answers_are_trained_from_their_leading_space(processor, family,
                                                                                        tmp_path):
    spec = get_family(family)
    [sample] = _samples(tmp_path, [{"messages": [
        {"role": "system", "content": "You answer briefly."},
        {"role": "user", "content": [{"type": "image", "image": "x.png"}, {"type": "text", "text": "Colour?"}]},
        {"role": "assistant", "content": "red"},
        {"role": "user", "content": "Say 'Assistant: blue' please."},
        {"role": "assistant", "content": "No."},
    ]}], (64, 48))
    renderer = Renderer(processor, spec)
    # No default system prompt; the role is capitalised like any other. A message that starts with an image
    # gets "User:" with no space before it.
    assert renderer.text(sample) == _START[family] + (
        "System: You answer briefly.<end_of_utterance>\nUser:<image>Colour?<end_of_utterance>\n"
        "Assistant: red<end_of_utterance>\nUser: Say 'Assistant: blue' please.<end_of_utterance>\n"
        "Assistant: No.<end_of_utterance>\n")
    prompt, _ = sample.prompt_and_answer()
    assert renderer.text(prompt, add_generation_prompt=True).endswith("<end_of_utterance>\nAssistant:")
    # The generation prompt stops at "Assistant:", so the answer's leading space is the model's to write; the
    # "Assistant:" a user typed is not a turn.
    features = renderer.encode(sample)
    ids, trained = features["input_ids"], (features["labels"] != IGNORE_INDEX).tolist()
    starts = [i for i, t in enumerate(trained) if t and (i == 0 or not trained[i - 1])]
    ends = [i + 1 for i, t in enumerate(trained) if t and (i + 1 == len(trained) or not trained[i + 1])]
    runs = [processor.tokenizer.decode(ids[a:b]) for a, b in zip(starts, ends, strict=True)]
    assert runs == [" red<end_of_utterance>", " No.<end_of_utterance>"]


def test_forward_backward_and_generate_on_tiled_images(tiny_dir, family, processor):
    model = load_model(tiny_dir(family))
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Same?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "no"}]}]
    images = [Image.new("RGB", (64, 16), (0, 0, 255)), Image.new("RGB", (40, 40), (0, 200, 0))]
    inputs = processor(text=[processor.apply_chat_template(chat, tokenize=False)], images=images,
                       return_tensors="pt", add_special_tokens=False)
    assert inputs["pixel_values"].shape[:2] == (1, 3 + 5)  # 1 x 2 tiles + global, then 2 x 2 tiles + global
    out = model(**inputs, labels=inputs["input_ids"])
    out.loss.backward()
    assert torch.isfinite(out.loss) and model.model.connector.modality_projection.proj.weight.grad is not None
    prompt = processor(text=[processor.apply_chat_template(chat[:1], tokenize=False, add_generation_prompt=True)],
                       images=images, return_tensors="pt", add_special_tokens=False)
    generated = model.generate(**prompt, max_new_tokens=3)
    assert generated.shape[1] > prompt["input_ids"].shape[1]


@pytest.fixture
def one_thread():
    # A model this small trains fastest on one thread; a second one only spins against other work on the machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow  # a learning test: trains the tiny model to an accuracy
def test_smolvlm_learns_the_demo_task_from_tiled_images(tiny_dir, tmp_path, one_thread):
    """LoRA on a random-init SmolVLM: held-out accuracy goes from 0 to well above an image-blind guess."""
    spec, folder = get_family("smolvlm"), tiny_dir("smolvlm")
    files = make_demo_data(tmp_path / "data", n_train=160, n_val=40)
    processor = load_processor(folder, spec)
    val = read_samples(files["val"])
    # Every demo image is 2 x 2 tiles + the global image.
    features = Renderer(processor, spec).encode(val[0])
    assert features["pixel_values"].shape == (1, 5, 3, 32, 32)
    assert processor.tokenizer.decode(features["input_ids"]).count("<row_") == 4

    start = time.perf_counter()
    cfg = load_config(None, [
        f"model.path={folder}", f"data.train={files['train']}", f"data.val={files['val']}",
        "data.cache_in_memory=true", f"train.output_dir={tmp_path / 'run'}", "train.epochs=4", "train.lr=1e-2",
        "train.batch_size=8", "train.warmup_steps=5", "train.seed=0", "train.progress=false", "train.report_to=none",
        "eval.max_new_tokens=4", "eval.metrics=[exact_match]",
    ])
    metrics = train(cfg).metrics
    elapsed = time.perf_counter() - start

    # The best a model that ignores the image can do: the commonest training answer to each question.
    train_records = [json.loads(line) for line in files["train"].read_text().splitlines()]
    val_records = [json.loads(line) for line in files["val"].read_text().splitlines()]

    def answer(record):
        return record["messages"][-1]["content"][0]["text"]

    commonest = {}
    for task in ("colour", "shape"):
        answers = [answer(r) for r in train_records if r["task"] == task]
        commonest[task] = max(set(answers), key=answers.count)
    blind = sum(answer(r) == commonest[r["task"]] for r in val_records) / len(val_records)

    assert metrics["val_samples"] == 40 and metrics["steps"] == 80
    assert metrics["base_val_exact_match"] <= 0.1  # random init: not even the answer words
    assert metrics["val_exact_match"] >= 0.8 and metrics["val_exact_match"] >= blind + 0.4, (metrics, blind)
    assert elapsed < 60
    print(f"smolvlm demo: base {metrics['base_val_exact_match']:.3f}, blind {blind:.3f}, "
          f"tuned {metrics['val_exact_match']:.3f} in {elapsed:.1f} s")


def test_generation_prompt_ends_where_a_trained_answer_begins(processor, family):
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What shape is this?"}]}]
    prompt = processor.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    full = processor.apply_chat_template(chat + [{"role": "assistant", "content": [
        {"type": "text", "text": "circle"}]}], tokenize=False)
    assert full.startswith(prompt) and full[len(prompt):] == " circle<end_of_utterance>\n"
