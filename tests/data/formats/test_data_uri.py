"""Images given as base64 ``data:`` URIs (OpenAI fine-tuning JSONL) are decoded to content-addressed files, and
the data check names the record of one that does not decode."""

import base64
import io
import json

from PIL import Image

from tests.conftest import write_jsonl
from vlmtune.cli.main import main
from vlmtune.data import read_samples


def _uri(colour, size=(20, 10), kind="PNG") -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, kind)
    return f"data:image/{kind.lower()};base64," + base64.b64encode(buffer.getvalue()).decode()


def _openai(url: str) -> dict:
    return {"messages": [
        {"role": "user", "content": [{"type": "text", "text": "Colour?"},
                                     {"type": "image_url", "image_url": {"url": url}}]},
        {"role": "assistant", "content": "red"}]}


def test_base64_images_are_read_into_content_addressed_files(tmp_path):
    red = _uri((255, 0, 0))
    data = write_jsonl(tmp_path / "openai.jsonl", [_openai(red), _openai(red), _openai(_uri((0, 0, 255), kind="JPEG"))])
    samples = read_samples(data)
    first, second, third = (s.images[0] for s in samples)
    assert first == second and first.parent == tmp_path / "openai.images" and first.suffix == ".png"
    assert third.suffix == ".jpg" and third != first
    with Image.open(first) as image:
        assert image.size == (20, 10) and image.convert("RGB").getpixel((3, 3)) == (255, 0, 0)
    assert sorted(p.name for p in (tmp_path / "openai.images").iterdir()) == sorted({first.name, third.name})


def test_data_check_names_each_record_whose_data_uri_is_unusable(tmp_path, capsys):
    records = [_openai(_uri((255, 0, 0))), _openai("data:image/png;base64,@@not base64@@"),
               _openai("data:image/png;base64," + base64.b64encode(b"not an image").decode()),
               _openai("data:text/plain;base64,aGVsbG8="), _openai("data:image/png,rawbytes")]
    data = write_jsonl(tmp_path / "mixed.jsonl", records)
    assert main(["data", "check", str(data), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["usable"] == 1
    assert [(p["where"], p["problem"]) for p in report["problems"]] == [
        (f"{data}:2", "data URI is not valid base64"),
        (f"{data}:3", "embedded image bytes are not an image PIL can read"),
        (f"{data}:4", "data URI holds text/plain, not an image"),
        (f"{data}:5", "data URI 'data:image/png,rawbytes'... is not base64 (expected data:image/png;base64,...)"),
    ]
