import pytest

from tests.conftest import write_jsonl
from vlmtune.core.errors import DataError
from vlmtune.data import get_reader, read_samples
from vlmtune.data.formats import ReadOptions, read_dataset


def chat(image: str, prompt: str | None, answer: str, system: str | None = None) -> dict:
    """The messages-format record a table row should read as."""
    user = [{"type": "image", "image": image}] + ([{"type": "text", "text": prompt}] if prompt else [])
    turns = [{"role": "system", "content": system}] if system else []
    return {"messages": turns + [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


def canonical(tmp_path, records: list[dict]) -> list:
    return [s.messages for s in read_samples(write_jsonl(tmp_path / "expected.jsonl", records), format="messages")]


def test_csv_reads_into_the_same_samples_as_messages(tmp_path, images):
    data = tmp_path / "vqa.csv"
    data.write_text('image_path,question,answer,source\n'
                    'red.png,What colour is it?,red,web\n'
                    'blue.png,"Colour, size?","Blue, and ""tall"".\nTaller than wide.",scan\n')
    samples = read_samples(data)
    assert get_reader(data).name == "table"
    assert [s.messages for s in samples] == canonical(tmp_path, [
        chat("red.png", "What colour is it?", "red"),
        chat("blue.png", "Colour, size?", 'Blue, and "tall".\nTaller than wide.')])
    assert [s.id for s in samples] == [f"{data}:2", f"{data}:3"]
    assert samples[1].meta == {"source": "scan"}


def test_tsv_with_bom_fixed_prompt_and_system_column(tmp_path, images):
    data = tmp_path / "captions.tsv"
    data.write_bytes("\ufeffImage_Path\tCaption\tsystem\nred.png\tA red square.\tBe brief.\n"
                     "green.png\tA green square.\t\n".encode())
    options = ReadOptions(prompt="Describe the image.", system="You caption images.")
    result = read_dataset(data, options=options)
    assert result.format == "table" and not result.problems
    assert [s.messages for s in result.samples] == canonical(tmp_path, [
        chat("red.png", "Describe the image.", "A red square.", system="Be brief."),
        chat("green.png", "Describe the image.", "A green square.", system="You caption images.")])


def test_columns_named_by_options_and_a_table_without_prompt(tmp_path, images):
    data = tmp_path / "t.csv"
    data.write_text("pic,ask,reply,caption\nred.png,Which colour?,red,a red square\n")
    mapped = read_samples(data, options=ReadOptions(columns={"image": "pic", "prompt": "ask", "answer": "reply"}))
    assert [s.messages for s in mapped] == canonical(tmp_path, [chat("red.png", "Which colour?", "red")])
    assert mapped[0].meta == {"caption": "a red square"}
    bare = read_samples(data, options=ReadOptions(columns={"image": "pic"}))
    assert [s.messages for s in bare] == canonical(tmp_path, [chat("red.png", None, "a red square")])


def test_bad_rows_are_numbered_by_file_line_and_the_good_rows_still_come(tmp_path, images):
    data = tmp_path / "mixed.csv"
    data.write_bytes(b"image,answer\n"
                     b"red.png,red\n"
                     b"blue.png,\n"
                     b"missing.png,grey\n"
                     b"green.png,gr\xffen\n"
                     b'green.png,"two\nlines"\n'
                     b"red.png,too,many\n"
                     b"\n"
                     b"blue.png,blue\n")
    result = read_dataset(data, "table")
    assert [s.id for s in result.samples] == [f"{data}:2", f"{data}:6", f"{data}:10"]
    assert result.samples[1].messages[-1].text == "two\nlines"
    got = [(e.line, e.field, e.problem) for e in result.problems]
    assert [(line, field) for line, field, _ in got] == [(3, "answer"), (4, "image"), (5, None), (8, None)]
    assert "empty answer" in got[0][2] and "image file not found" in got[1][2]
    assert "not UTF-8" in got[2][2] and "3 fields but the header has 2" in got[3][2]
    assert str(result.problems[0]).startswith(f"{data}:3 field 'answer'")


@pytest.mark.parametrize("header, options, expected", [
    ("picture,caption", ReadOptions(), ["no image column", "columns.image", "Columns: picture, caption"]),
    ("image,caption,text", ReadOptions(), ["could hold the answer (caption, text)", "columns.answer"]),
    ("image,caption", ReadOptions(columns={"answer": "label"}), ["columns.answer names 'label'"]),
    ("image,caption", ReadOptions(columns={"anwser": "caption"}), ["unknown columns key(s) anwser"]),
    ("image,answer,image", ReadOptions(), ["duplicate column name(s) image"]),
])
def test_missing_or_ambiguous_columns_name_the_header_and_the_key(tmp_path, header, options, expected):
    data = tmp_path / "t.csv"
    data.write_text(header + "\n")
    with pytest.raises(DataError) as err:
        read_dataset(data, options=options)
    for text in expected:
        assert text in str(err.value)
