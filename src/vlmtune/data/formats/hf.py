"""Hugging Face datasets saved locally: a ``save_to_disk`` folder, a ``.parquet`` file or an ``.arrow`` file.

One row per sample, columns as in tables (:data:`~vlmtune.data.formats.table.DEFAULT_COLUMNS`, or named
with ``ReadOptions.columns``); an ``Image`` feature column is the image column unless named otherwise.
ChartQA-like rows (``image, query, label``) and CORD / Donut-like rows (``image, ground_truth``) read as
they are: a list answer gives its first item (the others go to ``meta["other_answers"]``), and a Donut
``ground_truth`` JSON string gives its ``gt_parse`` object as compact JSON.

Embedded images become files, because a sample refers to images by path: each is written once, named by
its content hash, to ``<dataset>.images/`` beside the dataset, or under ``~/.cache/vlmtune/images`` when
that folder cannot be written. A ``DatasetDict`` folder is read one split at a time: give the split's
folder. Needs ``pip install 'vlmtune[hf]'``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ...core.errors import DataError, RecordError, user_id
from ...core.sample import ImagePart, Sample
from ...files import make_readable
from . import register_reader
from .common import ReadOptions, Where, media_root
from .table import build_sample, resolve_columns

_SUFFIXES = (".parquet", ".arrow")
_LAYOUT_FILES = ("state.json", "dataset_info.json", "dataset_dict.json")
_BATCH = 64
_EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif"}


def _dataset_dir(path: Path) -> Path | None:
    """The ``save_to_disk`` folder ``path`` is (or one of whose layout files it is), else None."""
    if path.is_file() and path.name in _LAYOUT_FILES:
        path = path.parent
    if path.is_dir() and ((path / "state.json").is_file() or (path / "dataset_dict.json").is_file()):
        return path
    return None


class HFReader:
    name = "hf"

    def detect(self, path: Path, first_record: Any) -> bool:
        return _dataset_dir(path) is not None or (path.is_file() and path.suffix.lower() in _SUFFIXES)

    def read(self, path: Path, options: ReadOptions) -> Iterator[Sample | RecordError]:
        try:
            import datasets
        except ImportError:
            raise DataError(f"{path}: reading Hugging Face datasets needs the datasets package: "
                            "pip install 'vlmtune[hf]'") from None
        path = _dataset_dir(path) or path
        schema, features, batches = _open(path, datasets)
        images = [f.name for f in schema if _is_image_type(f.type)]
        columns = resolve_columns(path, schema.names, options, preferred={"image": images})
        feature = features.get(columns["answer"])
        labels = feature.names if isinstance(feature, datasets.ClassLabel) else None
        root, store = media_root(path, options), ImageStore(path)
        skip = {*columns.values(), *images}  # meta keeps the other columns, without their image bytes
        index = -1
        for batch in batches:
            for start in range(0, batch.num_rows, _BATCH):
                # converting a slice at a time keeps memory to a few rows' images, however big the batch
                for row in batch.slice(start, _BATCH).to_pylist():
                    index += 1  # named as datasets indexes rows: dataset[index]
                    where = Where(path, None, root, options.allow_outside_root, index, user_id(row))
                    try:
                        yield _parse_row(row, columns, labels, skip, options, where, store)
                    except RecordError as e:
                        yield e


def _open(path: Path, datasets: Any) -> tuple[Any, dict, Iterator[Any]]:
    """The source's arrow schema, its features and its record batches (read lazily, memory-mapped)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.is_dir():
        if (path / "dataset_dict.json").is_file():
            splits = sorted(p.name for p in path.iterdir() if (p / "state.json").is_file())
            raise DataError(f"{path}: a DatasetDict with splits {', '.join(splits) or '(none)'}; give one split's "
                            f"folder, e.g. {path / (splits[0] if splits else 'train')}")
        try:
            ds = datasets.load_from_disk(str(path))
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: cannot load the saved dataset: {e}") from None
        return ds.data.schema, dict(ds.features), iter(ds.with_format("arrow").iter(batch_size=1000))
    try:
        if path.suffix.lower() == ".parquet":
            parquet = pq.ParquetFile(path)
            schema, batches = parquet.schema_arrow, parquet.iter_batches(batch_size=1000)
        else:
            schema, batches = _arrow_batches(path, pa)
    except (OSError, pa.ArrowException) as e:
        raise DataError(f"{path}: cannot read it as {path.suffix[1:]}: {e}") from None
    return schema, dict(datasets.Features.from_arrow_schema(schema)), batches


def _arrow_batches(path: Path, pa: Any) -> tuple[Any, Iterator[Any]]:
    # datasets writes the IPC stream format; plain pyarrow users often write the IPC file format
    source = pa.memory_map(str(path))
    try:
        reader = pa.ipc.open_stream(source)
        return reader.schema, iter(reader)
    except pa.ArrowInvalid:
        reader = pa.ipc.open_file(source)
        return reader.schema, (reader.get_batch(i) for i in range(reader.num_record_batches))


def _is_image_type(kind: Any) -> bool:
    """An arrow type holding a datasets ``Image`` (``struct<bytes, path>``) or a list of them."""
    import pyarrow as pa

    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        kind = kind.value_type
    return pa.types.is_struct(kind) and {kind.field(i).name for i in range(kind.num_fields)} == {"bytes", "path"}


def _parse_row(row: dict, columns: dict[str, str | None], labels: list[str] | None, skip: set, options: ReadOptions,
               where: Where, store: ImageStore) -> Sample:
    image, prompt_col, answer_col, system_col = (columns[k] for k in ("image", "prompt", "answer", "system"))
    refs = row[image] if isinstance(row[image], list) else [row[image]]
    if not refs:
        raise where.error("no image", image)
    images = [_image(ref, where, f"{image}[{i}]" if len(refs) > 1 else image, store) for i, ref in enumerate(refs)]
    prompt, system = (_text(row, col, where) for col in (prompt_col, system_col))
    answer, others = _answer(row[answer_col], labels, where, answer_col)
    meta = {k: v for k, v in row.items() if k not in skip and not isinstance(v, bytes)}
    if others:
        meta["other_answers"] = others
    return build_sample(images, prompt or options.prompt, answer, system or options.system, where, answer_col, meta)


def _text(row: dict, column: str | None, where: Where) -> str | None:
    value = row[column] if column else None
    if value is not None and not isinstance(value, str):
        raise where.error(f"expected text, got {type(value).__name__}", column)
    return value


def _image(ref: Any, where: Where, field: str, store: ImageStore) -> ImagePart:
    if isinstance(ref, dict):  # an Image feature's storage: the file's bytes, or only its path
        ref = ref.get("bytes") or ref.get("path")
    if isinstance(ref, bytes):
        return store.put(ref, where, field)
    if ref is None:
        raise where.error("no image", field)
    return where.image(ref, field)


def _answer(value: Any, labels: list[str] | None, where: Where, field: str) -> tuple[str, list[str]]:
    """The answer text and, for a list of answers, the ones after the first."""
    if labels is not None and isinstance(value, int) and 0 <= value < len(labels):
        return labels[value], []
    if isinstance(value, list):
        if not value or not all(isinstance(v, str) for v in value):
            raise where.error("a list of answers must be non-empty and hold only strings", field)
        return value[0], value[1:]
    if isinstance(value, str):
        return _donut(value), []
    if isinstance(value, dict):
        return _compact(value), []
    if isinstance(value, int | float):
        return str(value), []
    raise where.error("no answer" if value is None else f"answer must be text, got {type(value).__name__}", field)


def _donut(text: str) -> str:
    """Donut's ``{"gt_parse": {...}}`` ground truth -> the parse as compact JSON; other text as it is."""
    if not text.lstrip().startswith("{"):
        return text
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        return text
    return _compact(parsed["gt_parse"]) if isinstance(parsed, dict) and "gt_parse" in parsed else text


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class ImageStore:
    """Writes embedded images to files named by content hash, so reading again writes nothing new."""

    def __init__(self, source: Path):
        name = source.name if source.is_dir() else source.stem
        self.primary = source.parent / f"{name}.images"
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        key = hashlib.sha256(str(source.resolve()).encode()).hexdigest()[:12]
        self.fallback = cache / "vlmtune" / "images" / f"{name}-{key}"
        self.folder = self.primary

    def put(self, data: bytes, where: Where, field: str) -> ImagePart:
        """The file holding ``data`` (written if no earlier read wrote it)."""
        name = hashlib.sha256(data).hexdigest()[:32] + _extension(data, where, field)
        for folder in (self.primary, self.fallback):
            if (folder / name).is_file():
                return ImagePart((folder / name).resolve())
        try:
            return ImagePart(_write(self.folder, name, data))
        except OSError:
            if self.folder == self.fallback:
                raise
        # the data's folder is read-only (a shared dataset): keep the images in the user's cache instead
        self.folder = self.fallback
        try:
            return ImagePart(_write(self.folder, name, data))
        except OSError as e:
            raise DataError(f"cannot write embedded images to {self.primary} nor {self.fallback}: {e}") from None


def _write(folder: Path, name: str, data: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    # write then rename, so a reader running at the same time (another rank) never sees half a file
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".", suffix=".part", delete=False) as f:
        try:
            f.write(data)
        except OSError:
            os.unlink(f.name)
            raise
    make_readable(f.name)  # NamedTemporaryFile makes a 0600 file
    os.replace(f.name, folder / name)
    return (folder / name).resolve()


def _extension(data: bytes, where: Where, field: str) -> str:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            kind = image.format or ""
    except (UnidentifiedImageError, OSError):
        raise where.error("embedded image bytes are not an image PIL can read", field) from None
    return _EXTENSIONS.get(kind, f".{kind.lower() or 'img'}")


register_reader(HFReader())
