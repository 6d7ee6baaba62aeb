"""OpenAI's chat completions API in vlmtune's terms: a request body becomes canonical :class:`Message`\\ s and
:class:`Sampling`; a :class:`Completion` becomes OpenAI's response, chunk and error shapes."""

from __future__ import annotations

import base64
import binascii
import io
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from PIL import Image, UnidentifiedImageError

from ..core.sample import ImagePart, Message, TextPart
from .engine import Completion, RequestError

# OpenAI's limit on stop sequences.
MAX_STOPS = 4
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


@dataclass(frozen=True)
class ChatRequest:
    """The fields of a chat completion request that vlmtune honours (others are ignored, as OpenAI does)."""

    model: str
    messages: tuple[Message, ...]
    max_tokens: int | None
    temperature: float
    top_p: float | None
    seed: int | None
    stop: tuple[str, ...]
    stream: bool
    include_usage: bool


def parse_request(body: Any, images_dir: Path, local_root: Path | None = None) -> ChatRequest:
    """``body`` (parsed JSON) as a :class:`ChatRequest`; images are written to ``images_dir``. ``local_root``: the
    folder ``file://`` URLs and paths may point into (None: no local file is read). Raises :class:`RequestError`."""
    if not isinstance(body, dict):
        raise RequestError("the body must be a JSON object", None)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError("model: required, the name of a served model (GET /v1/models lists them)", "model")
    n = body.get("n")
    if n is not None and n != 1:
        raise RequestError(f"n: only 1 is supported, got {n!r}", "n")
    messages = _messages(body.get("messages"), images_dir, local_root)
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    field = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    if max_tokens is not None and (not _is_int(max_tokens) or max_tokens < 1):
        raise RequestError(f"{field}: expected a positive integer, got {max_tokens!r}", field)
    temperature = _number(body, "temperature", 0.0, 2.0)
    top_p = _number(body, "top_p", 0.0, 1.0)
    if top_p is not None and top_p <= 0:
        raise RequestError(f"top_p: must be above 0, got {top_p!r}", "top_p")
    seed = body.get("seed")
    if seed is not None and not _is_int(seed):
        raise RequestError(f"seed: expected an integer, got {seed!r}", "seed")
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise RequestError(f"stream: expected true or false, got {stream!r}", "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise RequestError("stream_options: expected an object", "stream_options")
    return ChatRequest(model, messages, max_tokens, 0.0 if temperature is None else temperature, top_p, seed,
                       _stops(body.get("stop")), stream, bool(options.get("include_usage")))


def _messages(raw: Any, images_dir: Path, local_root: Path | None) -> tuple[Message, ...]:
    if not isinstance(raw, list) or not raw:
        raise RequestError("messages: expected a non-empty list of messages", "messages")
    messages = []
    for i, item in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(item, dict):
            raise RequestError(f"{where}: expected an object with role and content", where)
        role = _ROLES.get(item.get("role"))
        if role is None:
            raise RequestError(f"{where}.role: expected one of {', '.join(_ROLES)}, got {item.get('role')!r}",
                               f"{where}.role")
        messages.append(Message(role, _content(item.get("content"), f"{where}.content", images_dir, local_root)))
    if not any(isinstance(p, TextPart) and p.text.strip() for m in messages for p in m.content):
        raise RequestError("messages: no text in the messages; add a text part with the question", "messages")
    return tuple(messages)


def _content(content: Any, where: str, images_dir: Path, local_root: Path | None) -> tuple:
    if isinstance(content, str):
        return (TextPart(content),)
    if content is None:
        return ()
    if not isinstance(content, list):
        raise RequestError(f"{where}: expected a string or a list of parts", where)
    parts = []
    for j, part in enumerate(content):
        at = f"{where}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            parts.append(TextPart(part["text"]))
        elif kind == "image_url":
            url = part.get("image_url")
            url = url.get("url") if isinstance(url, dict) else url
            if not isinstance(url, str):
                raise RequestError(f"{at}.image_url.url: expected a string", f"{at}.image_url")
            parts.append(ImagePart(_image(url, f"{at}.image_url", images_dir, local_root)))
        else:
            raise RequestError(f"{at}: expected a part of type text or image_url, got {kind!r}", at)
    return tuple(parts)


def _image(url: str, where: str, images_dir: Path, local_root: Path | None) -> Path:
    """The image file ``url`` stands for: a ``data:`` URI written to ``images_dir``, or a file under
    ``local_root``."""
    scheme = urlparse(url).scheme.lower()
    if url.startswith("data:"):
        header, sep, payload = url.partition(",")
        if not sep or not header.endswith(";base64"):
            raise RequestError(f"{where}: expected a base64 data URI (data:image/png;base64,...)", where)
        try:
            data = base64.b64decode(payload, validate=True)
            with Image.open(io.BytesIO(data)) as im:
                im.verify()
        except (binascii.Error, ValueError, OSError, UnidentifiedImageError, Image.DecompressionBombError) as e:
            raise RequestError(f"{where}: cannot decode the image: {e}", where) from None
        path = images_dir / f"image{len(list(images_dir.iterdir()))}"
        path.write_bytes(data)
        return path
    if scheme in ("http", "https"):
        raise RequestError(f"{where}: images are not fetched from the network; send the image as a base64 data "
                           "URI (data:image/png;base64,...)", where)
    if local_root is None:
        raise RequestError(f"{where}: local image files are not allowed (start the server with --allow-local-files "
                           "DIR); send the image as a base64 data URI", where)
    if scheme not in ("", "file"):
        raise RequestError(f"{where}: unsupported URL scheme {scheme!r}; use a data: URI", where)
    raw = unquote(urlparse(url).path) if scheme == "file" else url
    path = Path(raw).expanduser()
    path = (path if path.is_absolute() else local_root / path).resolve()  # symlinks followed before the check
    if not path.is_relative_to(local_root):
        raise RequestError(f"{where}: {raw} is outside the folder allowed for local files ({local_root})", where)
    if not path.is_file():
        raise RequestError(f"{where}: image file not found: {raw}", where)
    return path


def _stops(stop: Any) -> tuple[str, ...]:
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops) or len(stops) > MAX_STOPS:
        raise RequestError(f"stop: expected a string or a list of up to {MAX_STOPS} strings", "stop")
    return tuple(s for s in stops if s)


def _number(body: dict, key: str, low: float, high: float) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise RequestError(f"{key}: expected a number from {low:g} to {high:g}, got {value!r}", key)
    return float(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def error(message: str, param: str | None = None, kind: str = "invalid_request_error",
          code: str | None = None) -> dict:
    """OpenAI's error body."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def usage(c: Completion) -> dict:
    return {"prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens,
            "total_tokens": c.prompt_tokens + c.completion_tokens}


def response(model: str, c: Completion) -> dict:
    """A ``chat.completion`` object."""
    return {"id": completion_id(), "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": c.text},
                         "logprobs": None, "finish_reason": c.finish_reason}],
            "usage": usage(c)}


def chunk(cid: str, model: str, delta: dict, finish_reason: str | None = None, created: int | None = None) -> dict:
    """A ``chat.completion.chunk`` object with one choice."""
    return {"id": cid, "object": "chat.completion.chunk", "created": created or int(time.time()), "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}


def usage_chunk(cid: str, model: str, c: Completion) -> dict:
    """The last chunk of a stream asked for ``stream_options.include_usage``: no choices, the usage."""
    return {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
            "choices": [], "usage": usage(c)}
