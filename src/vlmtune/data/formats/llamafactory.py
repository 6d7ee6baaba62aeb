"""LLaMA-Factory's dataset registry: ``dataset_info.json`` names each dataset's file, formatting, columns and
tags. Point vlmtune at ``path/to/dataset_info.json#name``::

    {"mllm_demo": {"file_name": "mllm_demo.json", "formatting": "sharegpt",
                   "columns": {"messages": "messages", "images": "images"},
                   "tags": {"role_tag": "role", "content_tag": "content",
                            "user_tag": "user", "assistant_tag": "assistant"}}}

File and image paths are relative to the registry's folder (LLaMA-Factory's ``dataset_dir``). ``sharegpt``
and ``alpaca`` formattings are read, and sharegpt ranking (preference) entries, ``"ranking": true`` with
``chosen`` / ``rejected`` columns (:mod:`.preference`); hub entries are refused (vlmtune reads local files only).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ...core.errors import DataError, RecordError
from ...core.sample import Sample
from . import register_reader
from .common import ReadOptions, Where, build_conversation, media_root, parse_each, split_entry
from .preference import parse_sharegpt_preference
from .sharegpt import ShareGPTLayout, parse_sharegpt

REGISTRY_NAME = "dataset_info.json"
_HUB_KEYS = ("hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "cloud_file_name")
_ALPACA_COLUMNS = {"prompt": "instruction", "query": "input", "response": "output", "system": "system",
                   "history": "history", "images": "images"}


def load_entry(path: Path) -> tuple[Path, dict]:
    """The registry file and the entry ``path`` names (``dataset_info.json#name``)."""
    file, name = split_entry(path)
    try:
        registry = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{file}: cannot read the dataset registry: {e}") from None
    if not isinstance(registry, dict):
        raise DataError(f"{file}: a dataset registry is a JSON object of named entries")
    if name is None:
        raise DataError(f"{file}: name the dataset as {file}#NAME; entries: {', '.join(registry)}")
    if name not in registry:
        raise DataError(f"{file}: no dataset {name!r}; entries: {', '.join(registry)}")
    entry = registry[name]
    hub = [k for k in _HUB_KEYS if k in entry]
    if hub:
        raise DataError(f"{file}#{name}: {hub[0]} is a remote dataset; vlmtune reads local files only. Download "
                        "it and give its file_name")
    if "file_name" not in entry:
        raise DataError(f"{file}#{name}: entry has no file_name")
    if "audios" in entry.get("columns", {}):
        raise DataError(f"{file}#{name}: has audios; only images and videos are supported, not audio")
    if "videos" in entry.get("columns", {}) and entry.get("formatting", "alpaca") != "sharegpt":
        raise DataError(f"{file}#{name}: videos are read in the sharegpt formatting only")
    formatting = entry.get("formatting", "alpaca")
    if formatting not in ("sharegpt", "alpaca"):
        raise DataError(f"{file}#{name}: formatting {formatting!r} is not supported (sharegpt, alpaca)")
    if entry.get("ranking") and formatting != "sharegpt":
        raise DataError(f"{file}#{name}: ranking (preference) data is read in the sharegpt formatting only")
    return file, entry


class RegistryReader:
    name = "llamafactory"

    def detect(self, path: Path, first_record: Any) -> bool:
        file, entry = split_entry(path)
        return file.name == REGISTRY_NAME or (entry is not None and file.suffix == ".json")

    def read(self, path: Path, options: ReadOptions) -> Iterator[Sample | RecordError]:
        file, entry = load_entry(path)
        data = file.parent / entry["file_name"]
        files = sorted(p for p in data.iterdir() if p.suffix in (".json", ".jsonl")) if data.is_dir() else [data]
        if not files or not files[0].is_file():
            raise DataError(f"{path}: data file {data} not found")
        root = media_root(file, options)
        columns, tags = entry.get("columns", {}), entry.get("tags", {})
        layout = ShareGPTLayout.from_registry(columns, tags)
        if entry.get("ranking"):
            def parse(record, where):
                return parse_sharegpt_preference(record, where, layout, options.system,
                                                 (columns.get("chosen", "chosen"), columns.get("rejected", "rejected")))
        elif entry.get("formatting", "alpaca") == "sharegpt":
            def parse(record, where):
                return parse_sharegpt(record, where, layout, options.system)
        else:
            def parse(record, where):
                return parse_alpaca(record, where, {**_ALPACA_COLUMNS, **columns}, options.system)
        for data_file in files:
            yield from parse_each(data_file, options, parse, root)


def parse_alpaca(record: Any, where: Where, columns: dict[str, str], system: str | None) -> Sample:
    """An alpaca record (instruction, input, output, history, images) -> Sample."""
    if not isinstance(record, dict):
        raise where.error(f"expected a JSON object, got {type(record).__name__}")
    turns = []
    history = record.get(columns["history"]) or []
    if not isinstance(history, list):
        raise where.error("history must be a list of [prompt, response] pairs", columns["history"])
    for i, pair in enumerate(history):
        if not (isinstance(pair, list) and len(pair) == 2):
            raise where.error("history entries must be [prompt, response] pairs", f"{columns['history']}[{i}]")
        turns += [("user", pair[0], f"history[{i}][0]"), ("assistant", pair[1], f"history[{i}][1]")]
    prompt = record.get(columns["prompt"], "")
    query = record.get(columns["query"], "")
    if not isinstance(prompt, str) or not isinstance(query, str):
        raise where.error("instruction and input must be strings", columns["prompt"])
    turns.append(("user", "\n".join(t for t in (prompt, query) if t), columns["prompt"]))
    turns.append(("assistant", record.get(columns["response"]), columns["response"]))
    if isinstance(record.get(columns["system"]), str) and record[columns["system"]]:
        turns.insert(0, ("system", record[columns["system"]], columns["system"]))
    refs = record.get(columns["images"]) or []
    refs = [refs] if isinstance(refs, str) else refs
    if not isinstance(refs, list):
        raise where.error("images must be a list of file paths", columns["images"])
    images = [where.image(ref, f"{columns['images']}[{j}]") for j, ref in enumerate(refs)]
    used = set(columns.values())
    return build_conversation(turns, images, where, {k: v for k, v in record.items() if k not in used}, system)


register_reader(RegistryReader())
