"""Where the HTTP API's items are answered: `Answerer` is what `hub.server.create_app` needs from a backend.

`LocalAnswerer` (what `hub serve` uses) answers in this process through the dynamic batcher; the Ray Serve
deployment (hub/ray_serve.py) answers on replicas elsewhere. The HTTP layer, its errors, limits and metrics are the
same for both, so clients change nothing between them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any, Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from starlette.concurrency import run_in_threadpool

from .batching import DynamicBatcher
from .devices import dtype_name
from .errors import DeadlineExceededError
from .service import Hub


class Answerer(Protocol):
    async def start(self, metrics: CollectorRegistry, on_batch: Any) -> None:
        """Begin answering; register what /metrics should show in `metrics`; `on_batch(BatchRecord)` per round."""

    async def answer(self, requests: list[tuple[str, Any]]) -> list[dict[str, Any]]:
        """The results of mixed-task `requests`, in order; HubError subclasses for refusals."""

    def health(self) -> dict[str, Any]:
        """GET /health's body: `status` (starting, ok, stalled, ...) and what the backend can tell."""

    def not_ready(self) -> str | None:
        """Why GET /health/ready must say 503 now, or None when ready."""

    def loaded(self, task: str) -> bool:
        """Whether `task` is loaded where it is answered."""

    async def close(self) -> None:
        """Stop answering; fail what is still queued."""


def limited_batcher(hub: Hub, limits: Any, on_batch: Any) -> DynamicBatcher:
    """The dynamic batcher over `hub` that the server's limits (hub.server.ServerLimits) describe."""
    return DynamicBatcher(hub, limits.max_batch_size, limits.max_wait_ms, limits.max_queue, on_batch=on_batch,
                          idle_release_s=limits.idle_release_s, max_rows_per_item=limits.max_rows_per_item,
                          max_rows_per_request=limits.max_rows_per_request,
                          request_timeout_s=limits.request_timeout_s)


class LocalAnswerer:
    """This process's dynamic batcher over `hub` (`hub serve`)."""

    def __init__(self, hub: Hub, limits: Any):
        self.hub, self.limits = hub, limits
        self.batcher: DynamicBatcher | None = None

    async def start(self, metrics: CollectorRegistry, on_batch: Any) -> None:
        self.batcher = limited_batcher(self.hub, self.limits, on_batch)
        metrics.register(CacheCollector(self.hub, self.batcher))

    async def answer(self, requests: list[tuple[str, Any]]) -> list[dict[str, Any]]:
        """The batcher's results (checks, loads tasks, tokenizes: off the event loop)."""
        assert self.batcher is not None, "start() first"
        timeout = self.limits.request_timeout_s
        future = await run_in_threadpool(self.batcher.submit, requests)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout)
        except asyncio.TimeoutError:  # the worker is stuck inside a long round: answer anyway
            raise DeadlineExceededError(f"the request was not answered within {timeout:.1f} s; the server is busy: "
                                        "retry later or send less work per request.") from None

    def health(self) -> dict[str, Any]:
        batcher, hub = self.batcher, self.hub
        status = ("starting" if batcher is None else
                  "stalled" if batcher.busy_seconds() > self.limits.ready_stall_s else "ok")
        return {"status": status, "queued_items": batcher.queued if batcher else 0,
                "loaded_tasks": hub.cache.stats()["resident_tasks"], "device": str(hub.device),
                "dtype": dtype_name(hub.dtype), "compiled": hub.compile}

    def not_ready(self) -> str | None:
        batcher = self.batcher
        if batcher is None or not batcher.alive:
            return "the batch worker is not running"
        busy = batcher.busy_seconds()
        return f"one batch round has run for {busy:.0f} s" if busy > self.limits.ready_stall_s else None

    def loaded(self, task: str) -> bool:
        return self.hub.cache.loaded(task)

    async def close(self) -> None:
        if self.batcher is not None:
            await run_in_threadpool(self.batcher.close)


class CacheCollector:
    """Prometheus view of the adapter cache, the queue and the batch worker, read at scrape time."""

    def __init__(self, hub: Hub, batcher: DynamicBatcher):
        self.hub, self.batcher = hub, batcher

    def collect(self) -> Iterator:
        stats = self.hub.cache.stats()
        for name in ("hits", "misses", "evictions"):
            yield CounterMetricFamily(f"hub_adapter_cache_{name}", f"adapter cache {name}", value=stats[name])
        yield GaugeMetricFamily("hub_adapter_cache_resident_tasks", "tasks loaded (adapter + head)",
                                value=stats["resident_tasks"])
        yield GaugeMetricFamily("hub_adapter_cache_resident_bytes", "bytes of loaded adapters and heads",
                                value=stats["resident_bytes"])
        yield GaugeMetricFamily("hub_tasks_unavailable", "tasks that cannot be served (broken or missing adapters)",
                                value=len(self.hub.unavailable()))
        yield GaugeMetricFamily("hub_queue_items", "items waiting for a batch", value=self.batcher.queued)
        yield CounterMetricFamily("hub_memory_releases", "times freed memory went back to the OS after traffic paused",
                                  value=self.batcher.memory_releases)
        yield CounterMetricFamily("hub_deadline_misses", "requests failed because their deadline passed in the queue",
                                  value=self.batcher.deadline_misses)
