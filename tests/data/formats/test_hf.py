import hashlib
import json
import sys

import pytest

from tests.conftest import write_jsonl
from vlmtune.core.errors import DataError
from vlmtune.data import get_reader, read_samples
from vlmtune.data.formats import ReadOptions, read_dataset

datasets = pytest.importorskip("datasets")

GT = [{"menu": [{"nm": "Latte", "price": "4.50"}], "total": {"total_price": "4.50"}}, {"total": "9"}]


def embedded(path) -> dict:
    """An ``Image`` feature value holding the file's bytes, as datasets on the hub store them."""
    return {"bytes": path.read_bytes(), "path": None}


def cached(folder, image) -> str:
    """Where the reader writes an embedded copy of ``image`` (named by content hash)."""
    return f"{folder}/{hashlib.sha256(image.read_bytes()).hexdigest()[:32]}.png"


def chat(image: str, prompt: str | None, answer: str) -> dict:
    user = [{"type": "image", "image": image}] + ([{"type": "text", "text": prompt}] if prompt else [])
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


def canonical(tmp_path, records: list[dict]) -> list:
    return [s.messages for s in read_samples(write_jsonl(tmp_path / "expected.jsonl", records), format="messages")]


@pytest.fixture
def chartqa(tmp_path, images):
    """A ChartQA-shaped dataset saved with ``save_to_disk``: image, query, label (a list of answers)."""
    features = datasets.Features({"image": datasets.Image(), "query": datasets.Value("string"),
                                  "label": datasets.List(datasets.Value("string")),
                                  "human_or_machine": datasets.ClassLabel(names=["human", "machine"])})
    ds = datasets.Dataset.from_dict({
        "image": [embedded(images["red.png"]), embedded(images["blue.png"]), embedded(images["red.png"])],
        "query": ["Which colour is the bar?", "How tall is it?", "Is it red?"],
        "label": [["red"], ["120", "120 px"], ["Yes"]],
        "human_or_machine": [0, 1, 0]}, features=features)
    ds.save_to_disk(tmp_path / "chartqa")
    return tmp_path / "chartqa"


def test_save_to_disk_dataset_reads_into_the_same_samples_as_messages(tmp_path, images, chartqa):
    result = read_dataset(chartqa)
    assert result.format == "hf" and get_reader(chartqa).name == "hf" and not result.problems
    red, blue = cached("chartqa.images", images["red.png"]), cached("chartqa.images", images["blue.png"])
    assert [s.messages for s in result.samples] == canonical(tmp_path, [
        chat(red, "Which colour is the bar?", "red"), chat(blue, "How tall is it?", "120"),
        chat(red, "Is it red?", "Yes")])
    assert result.samples[0].images[0].read_bytes() == images["red.png"].read_bytes()
    # rows are named as datasets indexes them, dataset[i]
    assert [s.id for s in result.samples] == [f"{chartqa}[0]", f"{chartqa}[1]", f"{chartqa}[2]"]
    assert result.samples[1].meta == {"human_or_machine": 1, "other_answers": ["120 px"]}


def test_rereading_writes_no_duplicate_images(chartqa):
    first = read_samples(chartqa)
    files = sorted((chartqa.parent / "chartqa.images").iterdir())
    stamps = [f.stat().st_mtime_ns for f in files]
    assert read_samples(chartqa) == first
    assert len(files) == 2 and sorted((chartqa.parent / "chartqa.images").iterdir()) == files
    assert [f.stat().st_mtime_ns for f in files] == stamps


def test_arrow_file_and_a_layout_file_read_as_the_dataset(chartqa):
    [arrow] = chartqa.glob("*.arrow")
    assert get_reader(arrow).name == "hf" and get_reader(chartqa / "dataset_info.json").name == "hf"
    whole = [s.messages for s in read_samples(chartqa)]
    assert [s.messages[-1] for s in read_samples(arrow)] == [m[-1] for m in whole]
    assert [s.messages for s in read_samples(chartqa / "dataset_info.json")] == whole


def test_cord_like_parquet_gives_gt_parse_as_compact_json(tmp_path, images):
    truths = [json.dumps({"gt_parse": GT[0], "meta": {"split": "train"}}), "9 in total"]
    ds = datasets.Dataset.from_dict({"image": [embedded(images["green.png"]), embedded(images["blue.png"])],
                                     "ground_truth": truths},
                                    features=datasets.Features({"image": datasets.Image(),
                                                                "ground_truth": datasets.Value("string")}))
    data = tmp_path / "cord.parquet"
    ds.to_parquet(data)
    assert get_reader(data).name == "hf"
    samples = read_samples(data, options=ReadOptions(prompt="Read the receipt."))
    green, blue = cached("cord.images", images["green.png"]), cached("cord.images", images["blue.png"])
    assert [s.messages for s in samples] == canonical(tmp_path, [
        chat(green, "Read the receipt.", '{"menu":[{"nm":"Latte","price":"4.50"}],"total":{"total_price":"4.50"}}'),
        chat(blue, "Read the receipt.", "9 in total")])
    assert [m.role for m in read_samples(data)[0].messages] == ["user", "assistant"]


def test_image_paths_mapped_columns_and_bad_rows(tmp_path, images):
    ds = datasets.Dataset.from_dict({"file": ["red.png", "nope.png", "blue.png", "green.png"],
                                     "ask": ["Colour?", "Colour?", "Colour?", "Colour?"],
                                     "reply": ["red", "grey", "", "green"]})
    data = tmp_path / "paths.parquet"
    ds.to_parquet(data)
    result = read_dataset(data, "hf", ReadOptions(columns={"image": "file", "prompt": "ask", "answer": "reply"}))
    assert [s.messages for s in result.samples] == canonical(tmp_path, [
        chat("red.png", "Colour?", "red"), chat("green.png", "Colour?", "green")])
    assert [s.id for s in result.samples] == [f"{data}[0]", f"{data}[3]"]
    assert [(e.where, e.field) for e in result.problems] == [(f"{data}[1]", "file"), (f"{data}[2]", "reply")]
    assert "image file not found" in str(result.problems[0]) and "empty answer" in str(result.problems[1])
    assert not (tmp_path / "paths.images").exists()


def test_missing_columns_and_dataset_dicts_are_file_errors(tmp_path, images):
    data = tmp_path / "x.parquet"
    datasets.Dataset.from_dict({"picture": ["red.png"], "words": ["red"]}).to_parquet(data)
    with pytest.raises(DataError, match=r"no image column.*columns\.image.*no answer column.*Columns: picture, words"):
        read_dataset(data)
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"image": ["red.png"], "answer": ["red"]}),
                               "test": datasets.Dataset.from_dict({"image": ["red.png"], "answer": ["red"]})})
    dd.save_to_disk(tmp_path / "dd")
    with pytest.raises(DataError, match="splits test, train; give one split's folder"):
        read_dataset(tmp_path / "dd")
    [sample] = read_samples(tmp_path / "dd" / "train", options=ReadOptions(media_root=tmp_path))
    assert sample.images == [images["red.png"].resolve()]


def test_images_go_to_the_user_cache_when_the_data_folder_cannot_take_them(tmp_path, monkeypatch, chartqa):
    (tmp_path / "chartqa.images").write_text("a file where the image folder would go")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    samples = read_samples(chartqa)
    folder = samples[0].images[0].parent
    assert folder.parent == (tmp_path / "cache" / "vlmtune" / "images").resolve()
    assert folder.name.startswith("chartqa-") and len(list(folder.iterdir())) == 2


def test_without_datasets_the_error_says_what_to_install(monkeypatch, chartqa):
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(DataError, match=r"pip install 'vlmtune\[hf\]'"):
        read_dataset(chartqa)
