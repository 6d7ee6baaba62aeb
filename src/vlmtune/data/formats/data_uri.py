"""Images given inline as ``data:`` URIs (``data:image/png;base64,...``), as OpenAI's fine-tuning JSONL writes
them: decoded once to a file named by its content hash (see :class:`~.hf.ImageStore`: ``<data file>.images/``
beside the data, or the user's cache where that folder cannot be written), so a sample still refers to its image by
path and every later read finds the file already there."""

from __future__ import annotations

import base64
import binascii
import re
from pathlib import Path
from typing import TYPE_CHECKING

from ...core.sample import ImagePart

if TYPE_CHECKING:
    from .common import Where
    from .hf import ImageStore

_HEADER = re.compile(r"data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[^;,]*)*)(?P<b64>;base64)?,",
                     re.IGNORECASE)
_STORES: dict[Path, ImageStore] = {}


def is_data_uri(ref: str) -> bool:
    """Whether an image reference is an inline ``data:`` URI."""
    return ref[:5].lower() == "data:"


def data_uri_image(ref: str, where: Where, field: str) -> ImagePart:
    """The file holding the image of a base64 ``data:`` URI (written by the first read). A URI that is not
    base64, does not decode, or holds bytes PIL cannot read is the record's error."""
    from .hf import ImageStore  # hf imports this module's importer (common); imported when an URI is met

    match = _HEADER.match(ref)
    if match is None or not match["b64"]:
        raise where.error(f"data URI {ref[:40]!r}... is not base64 (expected data:image/png;base64,...)", field)
    mime = (match["mime"] or "").lower()
    if mime and not mime.startswith("image/"):
        raise where.error(f"data URI holds {mime}, not an image", field)
    try:
        data = base64.b64decode(re.sub(r"\s+", "", ref[match.end():]), validate=True)
    except (binascii.Error, ValueError):
        raise where.error("data URI is not valid base64", field) from None
    if not data:
        raise where.error("data URI holds no bytes", field)
    store = _STORES.get(where.path)
    if store is None:
        store = _STORES[where.path] = ImageStore(where.path)
    return store.put(data, where, field)
