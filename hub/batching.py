"""Dynamic batching: requests from concurrent callers (threads, asyncio, HTTP) queue up and go through
the router together, so many small requests share backbone passes.

One worker thread takes the oldest job, waits at most `max_wait_ms` for more while the batch is below
`max_batch_size` items, and runs them in one `run_batch` call (which groups rows by backbone and sorts
them by length, so padding stays small). While a batch runs, new jobs pile up and form the next one
without waiting. The queue is bounded by `max_queue` items: past it `submit` raises OverloadedError
at once (the HTTP server answers 503), so a flood never grows memory without limit. Once no job has
come for `idle_release_s`, the worker hands the memory the passes freed back to the OS (hub.memory).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from .errors import HubError
from .memory import release_free_memory
from .router import TaskRuntime, run_batch
from .service import Hub


class OverloadedError(HubError):
    """The request queue is full; the caller should retry later."""


@dataclass(frozen=True)
class BatchRecord:
    """What one batch was: how many jobs and items, how long its oldest job waited, how long it ran."""

    jobs: int
    items: int
    wait_seconds: float
    run_seconds: float


@dataclass(eq=False)
class _Job:
    items: list[tuple[TaskRuntime, Any]]
    future: Future
    enqueued: float


class DynamicBatcher:
    """Queue `(task, input)` requests from many callers; answer each caller's requests in order."""

    def __init__(self, hub: Hub, max_batch_size: int | None = None, max_wait_ms: float = 5.0, max_queue: int = 1024,
                 on_batch: Callable[[BatchRecord], None] | None = None, idle_release_s: float | None = 1.0):
        """`idle_release_s`: after this long without jobs, give freed memory back to the OS (None: never)."""
        if (max_queue < 1 or max_wait_ms < 0 or (max_batch_size is not None and max_batch_size < 1)
                or (idle_release_s is not None and idle_release_s < 0)):
            raise HubError(f"batcher limits: max_queue={max_queue} (needs >= 1), max_wait_ms={max_wait_ms} (needs >= 0), "
                           f"max_batch_size={max_batch_size} (needs >= 1), idle_release_s={idle_release_s} (needs >= 0 or None).")
        self.hub = hub
        self.max_batch_size = max_batch_size or hub.max_batch_size
        self.max_wait = max_wait_ms / 1000
        self.max_queue = max_queue
        self.on_batch = on_batch
        self.idle_release_s = idle_release_s
        self.memory_releases = 0  # times freed memory went back to the OS
        self._jobs: deque[_Job] = deque()
        self._queued_items = 0
        self._closed = False
        self._ready = threading.Condition()
        self._worker = threading.Thread(target=self._serve, name="hub-batcher", daemon=True)
        self._worker.start()

    @property
    def queued(self) -> int:
        """Items waiting for a batch (not counting the batch running now)."""
        return self._queued_items

    def submit(self, requests: list[tuple[str, Any]]) -> Future:
        """Queue mixed requests; the future gives their results in order. Bad input, an unknown task or
        a full queue raise here, in the caller (tasks load here too, never in the worker)."""
        items = self.hub.prepare(requests)
        job = _Job(items, Future(), time.perf_counter())
        with self._ready:
            if self._closed:
                raise HubError("the batcher is shut down; start a new one.")
            if self._queued_items + len(items) > self.max_queue:
                raise OverloadedError(
                    f"overloaded: {self._queued_items} items are queued (limit {self.max_queue}); retry shortly "
                    "or raise max_queue.")
            self._jobs.append(job)
            self._queued_items += len(items)
            self._ready.notify()
        return job.future

    def run(self, requests: list[tuple[str, Any]], timeout: float | None = None) -> list[dict[str, Any]]:
        """Blocking: queue the requests and wait for their results."""
        return self.submit(requests).result(timeout)

    async def run_async(self, requests: list[tuple[str, Any]]) -> list[dict[str, Any]]:
        """asyncio: queue the requests (in a thread: a first request may load a task) and await the results."""
        future = await asyncio.get_running_loop().run_in_executor(None, self.submit, requests)
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        """Finish the batch in flight, fail what is still queued, stop the worker."""
        with self._ready:
            self._closed = True
            pending, self._jobs = list(self._jobs), deque()
            self._queued_items = 0
            self._ready.notify()
        for job in pending:
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(HubError("the batcher shut down before this request ran; retry on a running server."))
        self._worker.join()

    def __enter__(self) -> "DynamicBatcher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _next_batch(self, idle_timeout: float | None) -> list[_Job] | None:
        """The oldest jobs up to max_batch_size items (at least one job), after waiting at most max_wait for
        more; jobs their callers cancelled meanwhile are dropped. [] if no job came within `idle_timeout`
        (None: wait as long as it takes); None once the batcher is closed."""
        with self._ready:
            batch: list[_Job] = []
            while not batch:
                while not self._jobs and not self._closed:
                    if not self._ready.wait(idle_timeout) and not self._jobs and not self._closed:
                        return []
                if self._closed:
                    return None
                deadline = self._jobs[0].enqueued + self.max_wait
                while self._queued_items < self.max_batch_size and (left := deadline - time.perf_counter()) > 0:
                    self._ready.wait(left)
                    if self._closed:
                        return None
                size = 0
                while self._jobs and (not batch or size + len(self._jobs[0].items) <= self.max_batch_size):
                    job = self._jobs.popleft()
                    self._queued_items -= len(job.items)
                    if job.future.set_running_or_notify_cancel():
                        batch.append(job)
                        size += len(job.items)
            return batch

    def _serve(self) -> None:
        worked = False  # since the last memory release
        while (batch := self._next_batch(self.idle_release_s if worked else None)) is not None:
            if not batch:  # idle: outside the lock, so submitting callers never wait on it
                self.memory_releases += release_free_memory()
                worked = False
                continue
            worked = True
            started = time.perf_counter()
            self._run(batch)
            if self.on_batch is not None:
                self.on_batch(BatchRecord(len(batch), sum(len(j.items) for j in batch), started - batch[0].enqueued,
                                          time.perf_counter() - started))

    def _run(self, batch: list[_Job]) -> None:
        """One router call for the whole batch; if it fails, each job alone, so one bad job fails only itself."""
        try:
            results = run_batch([item for job in batch for item in job.items], self.max_batch_size)
        except Exception as exc:  # noqa: BLE001 - the worker must outlive any one batch
            if len(batch) == 1:
                batch[0].future.set_exception(exc)
                return
            for job in batch:
                self._run([job])
            return
        start = 0
        for job in batch:
            job.future.set_result(results[start:start + len(job.items)])
            start += len(job.items)
