"""`vlmtune data split` and `data convert` never write over a file they read: the same path, a path through a
symbolic link, a hard link, or the data file of a dataset registry entry. They refuse in one line before writing."""

import json
import os

from tests.conftest import conversation, write_jsonl
from vlmtune.cli.main import main


def _data(folder, n=4):
    folder.mkdir(exist_ok=True)
    return write_jsonl(folder / "train.jsonl", [conversation("../red.png", "../blue.png") | {"id": i}
                                               for i in range(n)])


def _refused(capsys, command, output, same=None, remedy="-o another folder"):
    extra = f" (the same file as {same})" if same else ""
    assert capsys.readouterr().err == (f"vlmtune data {command}: error: refusing to write {output}: it is an input "
                                       f"file{extra} and would be overwritten; give {remedy}\n")


def test_split_into_the_inputs_own_folder_is_refused_before_anything_is_written(tmp_path, images, capsys):
    data = _data(tmp_path / "data")
    before = data.read_bytes()
    roundabout = tmp_path / "data" / ".." / "data"
    for option, written, same in (([], data, None), (["-o", str(data.parent)], data, None),
                                  (["-o", str(roundabout)], roundabout / "train.jsonl", data)):
        assert main(["data", "split", str(data), "--allow-outside-root", *option]) == 2
        _refused(capsys, "split", written, same)
        assert data.read_bytes() == before and not (tmp_path / "data" / "val.jsonl").exists()
    # Elsewhere it writes, and a second run over its own output folder is fine: the input is not there.
    for _ in range(2):
        assert main(["data", "split", str(data), "--allow-outside-root", "-o", str(tmp_path / "out")]) == 0
    assert data.read_bytes() == before


def test_links_to_the_input_are_refused(tmp_path, images, capsys):
    out = tmp_path / "out"
    data = _data(out)
    before = data.read_bytes()
    (tmp_path / "all.jsonl").symlink_to(data)  # the input is a link into the output folder
    assert main(["data", "split", str(tmp_path / "all.jsonl"), "-o", str(out), "--allow-outside-root"]) == 2
    _refused(capsys, "split", out / "train.jsonl", same=tmp_path / "all.jsonl")
    (tmp_path / "via").symlink_to(out, target_is_directory=True)  # the output folder is a link to the input's
    assert main(["data", "split", str(data), "-o", str(tmp_path / "via"), "--allow-outside-root"]) == 2
    _refused(capsys, "split", tmp_path / "via" / "train.jsonl", same=data)
    hard = tmp_path / "hard"
    hard.mkdir()
    os.link(data, hard / "val.jsonl")  # a hard link: another name, the same file
    assert main(["data", "split", str(data), "-o", str(hard), "--allow-outside-root"]) == 2
    _refused(capsys, "split", hard / "val.jsonl", same=data)
    assert main(["data", "convert", str(data), "-o", str(hard / "val.jsonl"), "--allow-outside-root"]) == 2
    _refused(capsys, "convert", hard / "val.jsonl", same=data, remedy="-o another file")
    assert data.read_bytes() == before


def test_a_registry_entrys_data_file_is_an_input(tmp_path, images, capsys):
    data = _data(tmp_path / "data")
    before = data.read_bytes()
    (tmp_path / "data" / "dataset_info.json").write_text(json.dumps({"mine": {
        "file_name": "train.jsonl", "formatting": "sharegpt", "columns": {"messages": "messages"}}}))
    assert main(["data", "split", f"{tmp_path}/data/dataset_info.json#mine", "-o", str(tmp_path / "data")]) == 2
    _refused(capsys, "split", data)
    assert data.read_bytes() == before
