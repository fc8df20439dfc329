"""The HTTP server (`hub serve`): FastAPI over the dynamic batcher, one process serving every task.

    POST /v1/run        {"task": "sst2", "input": "..."}  or  {"items": [{"task": ..., "input": ...}, ...]}
    POST /v1/embeddings {"model": "en", "input": ["...", ...]}: OpenAI's embeddings API (hub.embeddings)
    GET  /v1/tasks      what the registry serves (loaded or not, unavailable with the reason)
    GET  /health        queue depth, loaded and unavailable tasks, device and dtype
    GET  /health/live   the process answers (never behind the API key)
    GET  /health/ready  tasks loaded and the batch worker making progress (503 otherwise)
    GET  /metrics       Prometheus text: requests by status, items, batches, latency, queue, adapter cache
    GET  /docs          OpenAPI docs (assets served locally: works offline)

Every answer that is not a result is JSON `{"error": {"type": ..., "message": ...}}` whose message names
the problem and the fix, without server paths or internal class names; every outcome of /v1/run is
counted, and an unexpected error is a well-formed 500 that leaves the connection usable.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import logging
import re
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from heads import kind
from heads.codec import TEXT_SCHEMA

from .answering import Answerer, LocalAnswerer
from .batching import BatchRecord, OverloadedError
from .embeddings import embedding_task_name
from .errors import (
    AdapterError,
    BackboneError,
    DeadlineExceededError,
    HubError,
    InputError,
    RemoteError,
    RequestTooLargeError,
    ServiceUnavailableError,
    UnknownTaskError,
)
from .service import Hub
from .task_pages import backbone_sizes, describe_task, task_metrics

log = logging.getLogger("hub.server")
RUN_PATH = "/v1/run"
EMBEDDINGS_PATH = "/v1/embeddings"
OPEN_PATHS = ("/health/live", "/health/ready", "/docs", "/redoc", "/openapi.json", "/static-offline-docs", "/web/")
WEB = Path(__file__).parent / "web"  # the page (hub/web): plain HTML, CSS and JavaScript, no build step


@dataclass(frozen=True)
class ServerLimits:
    """What one request may hold and cost, how the batcher groups requests, and who may call."""

    max_body_bytes: int = 1 << 20
    max_items: int = 256
    max_batch_size: int | None = None  # None: the Hub's
    max_wait_ms: float = 5.0
    max_queue: int = 1024
    idle_release_s: float | None = 1.0  # idle this long: freed memory goes back to the OS (None: never)
    max_rows_per_item: int | None = 64  # backbone windows one item may need (a QA context, a long text)
    max_rows_per_request: int | None = 1024
    request_timeout_s: float | None = 60.0  # unanswered by then: 504, and its remaining work is dropped
    ready_stall_s: float = 30.0  # a round running longer than this: /health/ready says not ready
    api_key: str | None = None  # bearer token every call but the open health and docs paths must carry
    allowed_hosts: tuple[str, ...] = ()  # Host headers accepted ('*.example.com' allowed); empty: any
    cors_origins: tuple[str, ...] = ()  # browser origins allowed to call (CORS); empty: none


class ErrorDetail(BaseModel):
    type: str = Field(description="a short machine-readable kind, e.g. invalid_input, unknown_task, overloaded")
    message: str = Field(description="what is wrong and how to fix it")


class ErrorBody(BaseModel):
    error: ErrorDetail


class RunItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    task: str = Field(min_length=1, max_length=200, description="a task name from GET /v1/tasks")
    input: JsonValue = Field(description="a text; [text, text] for pairs and (question, context); a token list, "
                                         "or an object ({'question', 'context'}, {'text', 'head', 'tail'}) "
                                         "as the task needs")


class RunRequest(BaseModel):
    """One item (`task` + `input`) or many (`items`), answered in order."""

    model_config = ConfigDict(extra="forbid")
    task: str | None = Field(None, min_length=1, max_length=200)
    input: JsonValue = None
    items: list[RunItem] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _one_form(self) -> RunRequest:
        single = "task" in self.model_fields_set or "input" in self.model_fields_set
        if self.items is not None and single:
            raise ValueError("give either 'task' + 'input' (one item) or 'items' (a list of them), not both")
        if self.items is None and (self.task is None or "input" not in self.model_fields_set):
            raise ValueError("give 'task' and 'input' (one item) or 'items': [{'task': ..., 'input': ...}, ...]")
        return self

    def requests(self) -> list[tuple[str, Any]]:
        """(task, input) pairs for the hub; JSON lists become tuples (pairs, token lists)."""
        items = self.items if self.items is not None else [RunItem(task=self.task or "", input=self.input)]
        return [(item.task, tuple(item.input) if isinstance(item.input, list) else item.input) for item in items]


def _error(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"type": kind, "message": message}}, status_code=status, headers=headers)


_ABSOLUTE_PATH = re.compile(r"(?<![\w.~-])/(?:[^\s'\"():,;/]+/)*[^\s'\"():,;/]*")


def public_message(message: str, root: Path) -> str:
    """`message` without server paths: paths under the registry's folder become relative, other existing
    absolute paths become their last part (a client needs the file's name, not the server's layout)."""
    message = message.replace(str(root).rstrip("/") + "/", "")

    def shorten(match: re.Match) -> str:
        path = Path(match.group().rstrip("."))
        return (path.name + match.group()[len(str(path)):] if path.name and (path.exists() or path.parent.exists())
                else match.group())

    return _ABSOLUTE_PATH.sub(shorten, message)


def _validation_message(exc: RequestValidationError) -> tuple[int, str]:
    """400 for a body that is not JSON at all, 422 (each field named) for JSON of the wrong shape."""
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        detail = next(e for e in errors if e.get("type") == "json_invalid").get("ctx", {}).get("error", "")
        return 400, (f"the body is not valid JSON ({detail}); send a UTF-8 JSON object with "
                     "Content-Type: application/json.")
    parts = []
    for e in errors:
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {e.get('msg', 'invalid').removeprefix('Value error, ')}")
    return 422, "invalid request: " + "; ".join(parts) + ". See GET /docs for the request schema."


class _Outcomes:
    """ASGI middleware (outermost): counts every /v1/run outcome by status and its latency, whatever
    answered it (the app, a limit, the key check, an unexpected error)."""

    def __init__(self, app, metrics: _Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("path") != RUN_PATH:
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), "disconnected"  # no response started: the client went away

        async def counting_send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = str(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            self.metrics.requests.labels(status).inc()
            self.metrics.latency.observe(time.perf_counter() - started)


class _Unexpected:
    """ASGI middleware (innermost): an exception nothing else handled becomes a JSON 500 with an error id
    (the traceback goes to the log), and is not re-raised, so the server keeps the connection open."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracking_send(message):
            nonlocal started
            started |= message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except BaseException as exc:
            # a Rust panic inside a tokenizer (pyo3's PanicException) is a BaseException, not an Exception
            if started or isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt, SystemExit, GeneratorExit)):
                raise  # half a response is out (only closing the connection is honest), or the server is stopping
            error_id = uuid.uuid4().hex[:12]
            log.exception("unexpected error on %s (error id %s)", scope.get("path"), error_id)
            response = _error(500, "internal", f"internal error (error id {error_id}); the server log has the details. "
                                               "Retry, and report the id if it persists.")
            await response(scope, receive, send)


class _BodyLimit:
    """ASGI middleware: refuse bodies over `limit` bytes with 413, without holding more than that.

    A declared Content-Length over the limit is refused before reading; a chunked body is read up to
    the limit, then handed to the app in one piece.
    """

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await self._refuse(scope, receive, send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.limit:
                return await self._refuse(scope, receive, send)
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: disconnect notices
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope, receive, send):
        response = _error(413, "too_large", f"the request body is over {self.limit:,} bytes; send fewer or shorter "
                                            "items per request.")
        await response(scope, receive, send)


class _Access:
    """ASGI middleware: the Host header must be an allowed host (against DNS rebinding), and every path
    but the open ones needs the API key (`Authorization: Bearer KEY` or `X-API-Key: KEY`)."""

    def __init__(self, app, api_key: str | None, allowed_hosts: tuple[str, ...]):
        self.app = app
        self.key = api_key.encode() if api_key else None
        self.hosts = tuple(h.lower() for h in allowed_hosts)

    def _host_allowed(self, host: str) -> bool:
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host  # drop a port; keep [::1]
        name = name.lower()
        return any(name == h or (h.startswith("*.") and name.endswith(h[1:])) or h == "*" for h in self.hosts)

    def _key_ok(self, headers: dict[bytes, bytes]) -> bool:
        given = headers.get(b"x-api-key")
        auth = headers.get(b"authorization", b"")
        if given is None and auth[:7].lower() == b"bearer ":
            given = auth[7:].strip()
        return given is not None and hmac.compare_digest(given, self.key or b"")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        if self.hosts and not self._host_allowed(headers.get(b"host", b"").decode("latin-1")):
            response = _error(400, "host_not_allowed", "this server does not answer for that Host header; call it by "
                                                       "one of its configured names (hub serve --allowed-host).")
            return await response(scope, receive, send)
        path = scope.get("path", "")
        if self.key is not None and scope.get("method") != "OPTIONS" and not path.startswith(OPEN_PATHS) \
                and path != "/" and not self._key_ok(headers):
            response = _error(401, "unauthorized", "this server needs an API key: send `Authorization: Bearer KEY` "
                                                   "(or `X-API-Key: KEY`) with the key it was started with.",
                              headers={"WWW-Authenticate": "Bearer"})
            return await response(scope, receive, send)
        await self.app(scope, receive, send)


class _Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("hub_http_requests", "HTTP requests to /v1/run by status code", ["status"],
                                registry=self.registry)
        self.items = Counter("hub_items", "items answered, by task", ["task"], registry=self.registry)
        self.latency = Histogram("hub_request_seconds", "latency of /v1/run", registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
        self.batch_items = Histogram("hub_batch_items", "items completed per batch round", registry=self.registry,
                                     buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        self.batch_rows = Histogram("hub_batch_rows", "backbone rows per batch round", registry=self.registry,
                                    buckets=(1, 4, 16, 32, 64, 128, 256))
        self.batch_wait = Histogram("hub_batch_wait_seconds", "oldest starting job's wait before its round ran",
                                    registry=self.registry)
        self.batch_run = Histogram("hub_batch_run_seconds", "router time per batch round", registry=self.registry)
        self.batch_tasks = Histogram("hub_batch_tasks", "distinct tasks whose rows shared a batch round",
                                     registry=self.registry, buckets=(1, 2, 4, 8, 16, 32, 64))

    def batch(self, record: BatchRecord) -> None:
        self.batch_items.observe(record.items)
        self.batch_rows.observe(record.rows)
        if record.wait_seconds is not None:
            self.batch_wait.observe(record.wait_seconds)
        self.batch_run.observe(record.run_seconds)
        self.batch_tasks.observe(record.tasks)


_ERRORS = {401: "the API key is missing or wrong", 400: "the body is not JSON, or the Host is not allowed",
           404: "unknown task (the closest names are suggested)",
           413: "the body, the items or the work they need are over the limits",
           422: "the request or an input does not fit the schema or its task",
           500: "an unexpected error (with an error id)",
           503: "overloaded (Retry-After) or the task is unavailable", 504: "not answered within the request deadline"}


def _responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorBody, "description": _ERRORS[status]} for status in statuses}


MAX_TASKS_IN_SCHEMA = 200  # past this many tasks the schema names them without per-task input shapes
ANY_INPUT = {"anyOf": [TEXT_SCHEMA, {"type": "array", "minItems": 1}, {"type": "object"}]}


def _refine_openapi(schema: dict[str, Any], hub: Hub, limits: ServerLimits) -> dict[str, Any]:
    """Make the schema say exactly what the server takes: one item or `items`, and for each task the
    input shapes its kind accepts (so generated clients and schema fuzzers agree with the server)."""
    schemas = schema["components"]["schemas"]
    tasks = hub.registry.tasks
    described = schemas["RunItem"]["properties"]["input"].get("description", "")
    if len(tasks) <= MAX_TASKS_IN_SCHEMA:
        branches = [{"title": t.name, "type": "object", "additionalProperties": False, "required": ["task", "input"],
                     "properties": {"task": {"const": t.name}, "input": kind(t.kind).codec.input_schema(t.inputs)}}
                    for t in tasks]
        schemas["RunItem"] = {"title": "RunItem", "description": "one task and its input; " + described,
                              "oneOf": branches or [{"not": {}}]}
    else:
        schemas["RunItem"]["properties"].update(task={"type": "string", "enum": [t.name for t in tasks]},
                                                input=ANY_INPUT)
    item = {"$ref": "#/components/schemas/RunItem"}
    schemas["RunRequest"] = {
        "title": "RunRequest", "description": "One item (`task` + `input`) or many (`items`), answered in order.",
        "oneOf": [
            {"title": "OneItem", **item},
            {"title": "Items", "type": "object", "additionalProperties": False, "required": ["items"],
             "properties": {"items": {"type": "array", "minItems": 1, "maxItems": limits.max_items, "items": item}}},
        ],
        "examples": [{"task": tasks[0].name if tasks else "sst2", "input": "This movie was amazing!"}],
    }
    if limits.api_key:
        schema["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        for path, operations in schema["paths"].items():
            if not path.startswith(OPEN_PATHS):
                for operation in operations.values():
                    operation["security"] = [{"bearer": []}]
    return schema


class RunResponse(BaseModel):
    """Exactly one of the two: `result` answers a one-item request, `results` answers `items` in order."""

    model_config = ConfigDict(json_schema_extra=lambda schema: schema.update(
        oneOf=[{"required": ["result"]}, {"required": ["results"]}]))
    result: dict[str, Any] | None = Field(None, description="the answer to a one-item request")
    results: list[dict[str, Any]] | None = Field(None, description="the answers to `items`, in order")


class EmbeddingsRequest(BaseModel):
    """OpenAI's embeddings request, plus how to embed (`layers`, `pooling`, `normalize`)."""

    model_config = ConfigDict(extra="forbid")
    input: str | list[str] = Field(description="a text or a list of texts (token arrays are not taken: send text)")
    model: str = Field(min_length=1, max_length=200,
                       description="a backbone (e.g. en, zh), or a task to embed through its adapter")
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="base64: little-endian float32 bytes, what OpenAI's clients ask for by default")
    dimensions: int | None = Field(None, ge=1, description="accepted only as the model's own width")
    user: str | None = Field(None, max_length=256, description="ignored")
    layers: str | int = Field("last", description="last, last4 (their mean), mix (a task head's mix), a layer number")
    pooling: Literal["mean", "cls"] = Field(
        "mean", description="one vector per text (per-token vectors: POST /v1/run with hub.embeddings' request name)")
    normalize: bool = Field(True, description="unit-length vectors, as OpenAI's are")


class EmbeddingItem(BaseModel):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str
    truncated: bool | None = Field(None, description="present when the text was cut to the model's window")


class EmbeddingsResponse(BaseModel):
    object: Literal["list"]
    data: list[EmbeddingItem]
    model: str
    usage: dict[str, int]


def _vector(values: list[float], encoding: str) -> list[float] | str:
    """`values` as JSON floats, or base64 of little-endian float32 (how OpenAI's clients decode it)."""
    if encoding == "float":
        return values
    return base64.b64encode(np.asarray(values, dtype="<f4").tobytes()).decode("ascii")


def create_app(hub: Hub, limits: ServerLimits = ServerLimits(), answerer: Answerer | None = None) -> FastAPI:
    """The ASGI app serving `hub` (load tasks beforehand with `hub.runtime(task)` to skip first-request loads).
    `answerer`: where items are answered (default: this process's dynamic batcher; hub.ray_serve: Ray Serve
    replicas); `hub` then lists the tasks and shapes the schema."""
    metrics = _Metrics()
    backend: Answerer = answerer if answerer is not None else LocalAnswerer(hub, limits)
    root = hub.registry.path.parent

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await backend.start(metrics.registry, metrics.batch)
        try:
            yield
        finally:
            await backend.close()

    app = FastAPIOffline(title="BERT adapter hub", version="1", lifespan=lifespan,
                         description="Many NLP tasks from one frozen BERT per language: mixed-task requests share "
                                     "backbone passes.")
    app.add_middleware(_Unexpected)
    app.add_middleware(_BodyLimit, limit=limits.max_body_bytes)
    if limits.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(limits.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type", "X-API-Key"])
    app.add_middleware(_Access, api_key=limits.api_key, allowed_hosts=limits.allowed_hosts)
    app.add_middleware(_Outcomes, metrics=metrics)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        status, message = _validation_message(exc)
        return _error(status, "invalid_json" if status == 400 else "invalid_request", message)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # FastAPI could not even decode the body (e.g. invalid UTF-8)
            message = f"the body could not be read ({exc.detail}); send UTF-8 JSON with Content-Type: application/json."
        else:
            message = (f"{exc.detail}; see GET /docs for the endpoints." if exc.status_code in (404, 405)
                       else str(exc.detail))
        return _error(exc.status_code, "http", message, headers=getattr(exc, "headers", None))

    def refusal(exc: HubError) -> JSONResponse:
        """The HTTP answer for a refused request: status by error class, message without server paths."""
        message = public_message(str(exc), root)
        if isinstance(exc, UnknownTaskError):
            return _error(404, "unknown_task", message)
        if isinstance(exc, RequestTooLargeError):
            return _error(413, "too_much_work", message)
        if isinstance(exc, InputError):
            return _error(422, "invalid_input", message)
        if isinstance(exc, OverloadedError):
            return _error(503, "overloaded", message, headers={"Retry-After": "1"})
        if isinstance(exc, ServiceUnavailableError):
            return _error(503, "unavailable", message, headers={"Retry-After": "1"})
        if isinstance(exc, DeadlineExceededError):
            return _error(504, "deadline_exceeded", message)
        if isinstance(exc, (AdapterError, BackboneError, RemoteError)):
            return _error(503, "task_unavailable", message)
        return _error(500, "hub_error", message)

    @app.post(RUN_PATH, summary="Answer one item or a list of mixed-task items, in order", response_model=None,
              responses={200: {"model": RunResponse, "description": "`result` for one item, `results` for `items`"},
                         **_responses(400, 401, 404, 413, 422, 500, 503, 504)})
    async def run(body: RunRequest) -> dict[str, Any] | JSONResponse:
        requests = body.requests()
        if len(requests) > limits.max_items:
            return _error(413, "too_many_items", f"{len(requests)} items in one request; the limit is "
                                                 f"{limits.max_items}. Split the request.")
        try:
            results = await answered(requests)
        except HubError as exc:
            return refusal(exc)
        for result in results:
            metrics.items.labels(result["task"]).inc()
        return {"results": results} if body.items is not None else {"result": results[0]}

    async def answered(requests: list[tuple[str, Any]]) -> list[dict[str, Any]]:
        return await backend.answer(requests)

    @app.post(EMBEDDINGS_PATH, summary="Embeddings in the shape of OpenAI's API, batched with every other request",
              response_model=EmbeddingsResponse, responses=_responses(400, 401, 404, 413, 422, 500, 503, 504))
    async def embeddings(body: EmbeddingsRequest) -> dict[str, Any] | JSONResponse:
        texts = [body.input] if isinstance(body.input, str) else body.input
        if not texts:
            return _error(422, "invalid_input", "input is an empty list; send a text or a list of texts.")
        if len(texts) > limits.max_items:
            return _error(413, "too_many_items", f"{len(texts)} inputs in one request; the limit is "
                                                 f"{limits.max_items}. Split the request.")
        try:
            name = embedding_task_name(body.model, body.layers, body.pooling, body.normalize)
            results = await answered([(name, text) for text in texts])
        except HubError as exc:
            return refusal(exc)
        width = len(results[0]["embedding"])
        if body.dimensions is not None and body.dimensions != width:
            return _error(422, "invalid_input", f"dimensions={body.dimensions}: {body.model!r} gives vectors of "
                                                f"{width} (it was not trained to be shortened); omit dimensions.")
        metrics.items.labels("embeddings").inc(len(results))
        tokens = sum(result["token_count"] for result in results)
        return {"object": "list", "model": body.model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                "data": [{"object": "embedding", "index": i, "embedding": _vector(result["embedding"],
                                                                                  body.encoding_format),
                          **({"truncated": True} if result.get("truncated") else {})}
                         for i, result in enumerate(results)]}

    @app.get("/v1/tasks", summary="The tasks this server answers, and the backbones they share",
             responses=_responses(401))
    def tasks() -> dict[str, Any]:
        listed = []
        for t in hub.tasks():
            if "unavailable" in t:
                t["unavailable"] = public_message(t["unavailable"], root)
            listed.append({**t, "loaded": backend.loaded(t["task"]), "dev_metrics": task_metrics(hub, t["task"])})
        return {"tasks": listed, "backbones": backbone_sizes(hub)}

    @app.get("/v1/tasks/{task}", summary="One task: its registry entry and its rendered model card",
             response_model=None, responses={200: {"description": "entry, language, state, dev metrics, card_html"},
                                             **_responses(401, 404)})
    def task_detail(task: str) -> dict[str, Any] | JSONResponse:
        try:
            return describe_task(hub, task, backend.loaded(task), root)
        except HubError as exc:
            return refusal(exc)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(WEB / "index.html", media_type="text/html")

    app.mount("/web", StaticFiles(directory=WEB), name="web")

    @app.get("/health", summary="Queue depth, loaded and unavailable tasks, the device they run on and its precision",
             responses=_responses(401))
    def health() -> dict[str, Any]:
        return {**backend.health(),
                "unavailable_tasks": {task: public_message(why, root) for task, why in hub.unavailable().items()}}

    @app.get("/health/live", summary="Liveness: the process answers")
    def live() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/health/ready", summary="Readiness: tasks loaded and the batch worker making progress",
             responses={503: {"description": "not ready (starting, stalled or stopped)"}})
    def ready() -> JSONResponse:
        reason = backend.not_ready()
        if reason is not None:
            return JSONResponse({"status": "not_ready", "reason": reason}, status_code=503)
        return JSONResponse({"status": "ready", "queued_items": backend.health().get("queued_items", 0)})

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response, responses=_responses(401))
    def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = FastAPI.openapi(app)
            _refine_openapi(app.openapi_schema, hub, limits)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


@contextmanager
def running_server(app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve `app` with uvicorn in a background thread (port 0: a free one); yields the base URL.

    For tests and notebooks; `hub serve` runs uvicorn in the foreground instead.
    """
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, name="hub-http", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise HubError(f"the HTTP server did not start on {host}:{port}; is the port free?")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(30)
