"""The HTTP server (`hub serve`): FastAPI over the dynamic batcher, one process serving every task.

    POST /v1/run      {"task": "sst2", "input": "..."}  or  {"items": [{"task": ..., "input": ...}, ...]}
    GET  /v1/tasks    what the registry serves (and which tasks are loaded)
    GET  /health      liveness, queue depth, device and dtype
    GET  /metrics     Prometheus text: requests, items, batch sizes, latency, queue, adapter cache
    GET  /docs        OpenAPI docs

Every refused request gets a 4xx JSON body `{"error": {"type": ..., "message": ...}}` whose message
names the problem and the fix; a full queue answers 503 with Retry-After.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .batching import BatchRecord, DynamicBatcher, OverloadedError
from .devices import dtype_name
from .errors import AdapterError, BackboneError, HubError, InputError, RemoteError, UnknownTaskError
from .service import Hub

log = logging.getLogger("hub.server")


@dataclass(frozen=True)
class ServerLimits:
    """What one request may hold, and how the batcher groups requests."""

    max_body_bytes: int = 1 << 20
    max_items: int = 256
    max_batch_size: int | None = None  # None: the Hub's
    max_wait_ms: float = 5.0
    max_queue: int = 1024
    idle_release_s: float | None = 1.0  # idle this long: freed memory goes back to the OS (None: never)


class RunItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    task: str = Field(min_length=1, max_length=200, description="a task name from GET /v1/tasks")
    input: JsonValue = Field(description="a text; [text, text] for pairs and (question, context); a token list, "
                                         "or an object ({'question', 'context'}, {'text', 'head', 'tail'}) as the task needs")


class RunRequest(BaseModel):
    """One item (`task` + `input`) or many (`items`), answered in order."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"task": "sst2", "input": "This movie was amazing!"},
        {"items": [{"task": "sst2", "input": "Dull."}, {"task": "mrpc", "input": ["He said hi.", "He greeted us."]}]},
    ]})
    task: str | None = Field(None, min_length=1, max_length=200)
    input: JsonValue = None
    items: list[RunItem] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _one_form(self) -> "RunRequest":
        single = "task" in self.model_fields_set or "input" in self.model_fields_set
        if self.items is not None and single:
            raise ValueError("give either 'task' + 'input' (one item) or 'items' (a list of them), not both")
        if self.items is None and (self.task is None or "input" not in self.model_fields_set):
            raise ValueError("give 'task' and 'input' (one item) or 'items': [{'task': ..., 'input': ...}, ...]")
        return self

    def requests(self) -> list[tuple[str, Any]]:
        """(task, input) pairs for the hub; JSON lists become tuples (pairs, token lists)."""
        items = self.items if self.items is not None else [RunItem(task=self.task, input=self.input)]
        return [(item.task, tuple(item.input) if isinstance(item.input, list) else item.input) for item in items]


def _error(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"type": kind, "message": message}}, status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> tuple[int, str]:
    """400 for a body that is not JSON at all, 422 (each field named) for JSON of the wrong shape."""
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        detail = next(e for e in errors if e.get("type") == "json_invalid").get("ctx", {}).get("error", "")
        return 400, f"the body is not valid JSON ({detail}); send a UTF-8 JSON object with Content-Type: application/json."
    parts = []
    for e in errors:
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {e.get('msg', 'invalid').removeprefix('Value error, ')}")
    return 422, "invalid request: " + "; ".join(parts) + ". See GET /docs for the request schema."


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
        response = _error(413, "too_large", f"the request body is over {self.limit:,} bytes; send fewer or shorter items per request.")
        await response(scope, receive, send)


class _CacheCollector:
    """Prometheus view of the adapter cache and the queue, read at scrape time."""

    def __init__(self, hub: Hub, batcher: DynamicBatcher):
        self.hub, self.batcher = hub, batcher

    def collect(self) -> Iterator:
        stats = self.hub.cache.stats()
        for name in ("hits", "misses", "evictions"):
            yield CounterMetricFamily(f"hub_adapter_cache_{name}", f"adapter cache {name}", value=stats[name])
        yield GaugeMetricFamily("hub_adapter_cache_resident_tasks", "tasks loaded (adapter + head)", value=stats["resident_tasks"])
        yield GaugeMetricFamily("hub_adapter_cache_resident_bytes", "bytes of loaded adapters and heads", value=stats["resident_bytes"])
        yield GaugeMetricFamily("hub_queue_items", "items waiting for a batch", value=self.batcher.queued)
        yield CounterMetricFamily("hub_memory_releases", "times freed memory went back to the OS after traffic paused",
                                  value=self.batcher.memory_releases)


class _Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("hub_http_requests", "HTTP requests to /v1/run by status code", ["status"], registry=self.registry)
        self.items = Counter("hub_items", "items answered, by task", ["task"], registry=self.registry)
        self.latency = Histogram("hub_request_seconds", "latency of /v1/run", registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.batch_items = Histogram("hub_batch_items", "items per batch", registry=self.registry,
                                     buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        self.batch_wait = Histogram("hub_batch_wait_seconds", "oldest job's wait before its batch ran", registry=self.registry)
        self.batch_run = Histogram("hub_batch_run_seconds", "router time per batch", registry=self.registry)

    def batch(self, record: BatchRecord) -> None:
        self.batch_items.observe(record.items)
        self.batch_wait.observe(record.wait_seconds)
        self.batch_run.observe(record.run_seconds)


def create_app(hub: Hub, limits: ServerLimits = ServerLimits()) -> FastAPI:
    """The ASGI app serving `hub` (load tasks beforehand with `hub.runtime(task)` to skip first-request loads)."""
    metrics = _Metrics()
    state: dict[str, DynamicBatcher] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher = DynamicBatcher(hub, limits.max_batch_size, limits.max_wait_ms, limits.max_queue, on_batch=metrics.batch,
                                 idle_release_s=limits.idle_release_s)
        metrics.registry.register(_CacheCollector(hub, batcher))
        state["batcher"] = batcher
        try:
            yield
        finally:
            await run_in_threadpool(batcher.close)

    app = FastAPI(title="BERT adapter hub", version="1", lifespan=lifespan,
                  description="Many NLP tasks from one frozen BERT per language: mixed-task requests share backbone passes.")
    app.add_middleware(_BodyLimit, limit=limits.max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        status, message = _validation_message(exc)
        if request.url.path == "/v1/run":
            metrics.requests.labels(str(status)).inc()
        return _error(status, "invalid_json" if status == 400 else "invalid_request", message)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # FastAPI could not even decode the body (e.g. invalid UTF-8)
            message = f"the body could not be read ({exc.detail}); send UTF-8 JSON with Content-Type: application/json."
        else:
            message = f"{exc.detail}; see GET /docs for the endpoints." if exc.status_code in (404, 405) else str(exc.detail)
        if request.url.path == "/v1/run":
            metrics.requests.labels(str(exc.status_code)).inc()
        return _error(exc.status_code, "http", message, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        return _error(500, "internal", f"internal error ({type(exc).__name__}); the server log has the details.")

    @app.post("/v1/run", summary="Answer one item or a list of mixed-task items, in order")
    async def run(body: RunRequest) -> dict[str, Any]:
        started = time.perf_counter()
        response = await _answer(body)
        status = response.status_code if isinstance(response, JSONResponse) else 200
        metrics.requests.labels(str(status)).inc()
        metrics.latency.observe(time.perf_counter() - started)
        return response

    async def _answer(body: RunRequest) -> dict[str, Any] | JSONResponse:
        requests = body.requests()
        if len(requests) > limits.max_items:
            return _error(413, "too_many_items", f"{len(requests)} items in one request; the limit is {limits.max_items}. Split the request.")
        batcher = state["batcher"]
        try:
            if all(hub.cache.loaded(task) for task, _ in requests):
                future = batcher.submit(requests)  # cheap: checks inputs and queues
            else:
                future = await run_in_threadpool(batcher.submit, requests)  # a task loads first: not on the event loop
            results = await asyncio.wrap_future(future)
        except UnknownTaskError as exc:
            return _error(404, "unknown_task", str(exc))
        except InputError as exc:
            return _error(422, "invalid_input", str(exc))
        except OverloadedError as exc:
            return _error(503, "overloaded", str(exc), headers={"Retry-After": "1"})
        except (AdapterError, BackboneError, RemoteError) as exc:
            return _error(503, "task_unavailable", str(exc))
        except HubError as exc:
            return _error(500, "hub_error", str(exc))
        for result in results:
            metrics.items.labels(result["task"]).inc()
        return {"results": results} if body.items is not None else {"result": results[0]}

    @app.get("/v1/tasks", summary="The tasks this server answers")
    def tasks() -> dict[str, Any]:
        return {"tasks": [{**t, "loaded": hub.cache.loaded(t["task"])} for t in hub.tasks()]}

    @app.get("/health", summary="Liveness, queue depth, loaded tasks, the device they run on and its precision")
    def health() -> dict[str, Any]:
        batcher = state.get("batcher")
        return {"status": "ok" if batcher else "starting", "queued_items": batcher.queued if batcher else 0,
                "loaded_tasks": hub.cache.stats()["resident_tasks"], "device": str(hub.device),
                "dtype": dtype_name(hub.dtype)}

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

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
