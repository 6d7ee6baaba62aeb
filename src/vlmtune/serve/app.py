"""The FastAPI application: ``POST /v1/chat/completions`` (plain and streamed), ``GET /v1/models``, and ``GET /stats``
(the batch sizes the worker formed)."""

from __future__ import annotations

import hmac
import json
import logging
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from . import openai_api as api
from .engine import Engine, RequestError, Stream

log = logging.getLogger("vlmtune")


def create_app(engine: Engine, api_key: str | None = None, local_root: str | Path | None = None) -> FastAPI:
    """The server for ``engine``. ``api_key``: required as ``Authorization: Bearer KEY`` on every request;
    ``local_root``: the folder whose image files requests may name (None: none)."""
    app = FastAPI(title="vlmtune", docs_url=None, redoc_url=None, openapi_url=None)
    root = Path(local_root).resolve() if local_root else None
    created = int(time.time())

    @app.middleware("http")
    async def require_key(request: Request, call_next):
        if api_key is not None:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                return JSONResponse(api.error("Incorrect or missing API key: send 'Authorization: Bearer KEY'",
                                              code="invalid_api_key"), status_code=401)
        return await call_next(request)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse(api.error(str(exc.detail)), status_code=exc.status_code)

    @app.get("/v1/models")
    def models() -> dict:
        return {"object": "list", "data": [{"id": name, "object": "model", "created": created, "owned_by": "vlmtune"}
                                           for name in engine.model_names()]}

    @app.get("/stats")
    def stats() -> dict:
        return {"batch_sizes": engine.batch_sizes()}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        raw = await request.body()
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            return JSONResponse(api.error(f"the body is not valid JSON: {e}"), status_code=400)
        try:
            return await run_in_threadpool(_answer, engine, body, root)
        except RequestError as e:
            return JSONResponse(api.error(e.message, e.param), status_code=400)
        except Exception as e:  # noqa: BLE001 - any failure is the client's 500, and the server keeps serving
            log.exception("chat completion failed")
            return JSONResponse(api.error(f"generation failed: {e}", kind="server_error"), status_code=500)

    return app


def _answer(engine: Engine, body: object, root: Path | None):
    # Decoded images live only until the prompt is encoded (the renderer reads them then).
    with tempfile.TemporaryDirectory(prefix="vlmtune-serve-") as images:
        request = api.parse_request(body, Path(images), root)
        sampling = engine.sampling(request.model, request.max_tokens, request.temperature, request.top_p,
                                   request.seed, request.stop)
        if request.stream:
            stream = engine.start_stream(request.model, request.messages, sampling)
            return StreamingResponse(_events(stream, request), media_type="text/event-stream")
        return JSONResponse(api.response(request.model, engine.complete(request.model, request.messages, sampling)))


def _events(stream: Stream, request: api.ChatRequest) -> Iterator[str]:
    """Server-sent events in OpenAI's chunk format, ending with ``data: [DONE]``."""
    cid, created = api.completion_id(), int(time.time())

    def event(obj: dict) -> str:
        return f"data: {json.dumps(obj)}\n\n"

    try:
        yield event(api.chunk(cid, request.model, {"role": "assistant", "content": ""}, created=created))
        for piece in stream:
            yield event(api.chunk(cid, request.model, {"content": piece}, created=created))
        done = stream.completion
        yield event(api.chunk(cid, request.model, {}, done.finish_reason, created=created))
        if request.include_usage:
            yield event(api.usage_chunk(cid, request.model, done))
    except Exception as e:  # noqa: BLE001 - the status line is sent already: the error goes in the stream
        log.exception("streamed completion failed")
        yield event(api.error(f"generation failed: {e}", kind="server_error"))
    finally:
        stream.close()
    yield "data: [DONE]\n\n"
