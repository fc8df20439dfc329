"""Dynamic batching: requests from concurrent callers (threads, asyncio, HTTP) queue up and go through
the router together, so many small requests share backbone passes, and no request can hold the others.

A caller's `submit` checks and encodes its request (tokenizing, windowing) in the caller's own thread,
refuses one that would cause more backbone rows than `max_rows_per_item` / `max_rows_per_request`
(RequestTooLargeError) or that does not fit the bounded queue (OverloadedError), and queues it.

One worker thread runs rounds. A round admits queued jobs (waiting at most `max_wait_ms` for company
when nothing is in flight) while the jobs in flight hold under `max_batch_size` items, then runs at most
ROUND_PASSES passes' worth of rows, shared max-min fairly between the jobs in flight: a 600-window
request gets the rows the small ones leave, so a one-word request behind it waits a round, not its whole
duration. A job is answered once all its rows have run. Jobs past their deadline (`request_timeout_s`)
fail with DeadlineExceededError and their rows are dropped, as are those of cancelled jobs. Once no job
has come for `idle_release_s`, the worker hands the memory the passes freed back to the OS (hub.memory).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from .errors import DeadlineExceededError, HubError, RequestTooLargeError
from .memory import release_free_memory
from .router import RouterRow, TaskRuntime, encode, finish, forward
from .service import Hub

ROUND_PASSES = 2  # rows per round = this many full passes: room for every small job beside a large one


class OverloadedError(HubError):
    """The request queue is full; the caller should retry later."""


@dataclass(frozen=True)
class BatchRecord:
    """One round: jobs that had rows in it, items it completed, rows it ran, the queue wait of the
    oldest job that started in it (None if none started), how long it ran, and the distinct tasks of its rows."""

    jobs: int
    items: int
    rows: int
    wait_seconds: float | None
    run_seconds: float
    tasks: int = 1


@dataclass(eq=False)
class _Job:
    items: list[tuple[TaskRuntime, Any]]
    rows_of_item: list[list[RouterRow]]
    future: Future
    enqueued: float
    deadline: float | None
    pending: deque[RouterRow] = field(default_factory=deque)  # rows not run yet, in order
    decoded: dict[int, dict[str, Any]] = field(default_factory=dict)
    started: bool = False

    def __post_init__(self) -> None:
        self.pending.extend(r for rows in self.rows_of_item for r in rows)


def fair_shares(demands: Sequence[int], capacity: int) -> list[int]:
    """Max-min fair split of `capacity` rows between jobs wanting `demands` (oldest first gets spare rows)."""
    shares = [0] * len(demands)
    open_jobs = [i for i, wanted in enumerate(demands) if wanted > 0]
    left = capacity
    while left > 0 and open_jobs:
        each = max(1, left // len(open_jobs))
        for i in list(open_jobs):
            give = min(each, demands[i] - shares[i], left)
            shares[i] += give
            left -= give
            if shares[i] == demands[i]:
                open_jobs.remove(i)
            if left == 0:
                break
    return shares


class DynamicBatcher:
    """Queue `(task, input)` requests from many callers; answer each caller's requests in order."""

    def __init__(self, hub: Hub, max_batch_size: int | None = None, max_wait_ms: float = 5.0, max_queue: int = 1024,
                 on_batch: Callable[[BatchRecord], None] | None = None, idle_release_s: float | None = 1.0,
                 max_rows_per_item: int | None = None, max_rows_per_request: int | None = None,
                 request_timeout_s: float | None = None):
        """`idle_release_s`: after this long without jobs, give freed memory back to the OS (None: never).
        `max_rows_per_item` / `max_rows_per_request`: backbone rows (windows) one item / one request may
        need (None: no limit). `request_timeout_s`: a job not answered by then fails (None: no deadline)."""
        positive = {"max_rows_per_item": max_rows_per_item, "max_rows_per_request": max_rows_per_request,
                    "request_timeout_s": request_timeout_s}
        if (max_queue < 1 or max_wait_ms < 0 or (max_batch_size is not None and max_batch_size < 1)
                or (idle_release_s is not None and idle_release_s < 0)
                or any(value is not None and value <= 0 for value in positive.values())):
            raise HubError(f"batcher limits: max_queue={max_queue} (needs >= 1), max_wait_ms={max_wait_ms} "
                           f"(needs >= 0), max_batch_size={max_batch_size} (needs >= 1), "
                           f"idle_release_s={idle_release_s} (needs >= 0 or None), "
                           + ", ".join(f"{name}={value} (needs > 0 or None)" for name, value in positive.items()) + ".")
        self.hub = hub
        self.max_batch_size = max_batch_size or hub.max_batch_size
        self.max_wait = max_wait_ms / 1000
        self.max_queue = max_queue
        self.on_batch = on_batch
        self.idle_release_s = idle_release_s
        self.max_rows_per_item = max_rows_per_item
        self.max_rows_per_request = max_rows_per_request
        self.request_timeout_s = request_timeout_s
        self.memory_releases = 0  # times freed memory went back to the OS
        self.deadline_misses = 0  # jobs failed because their deadline passed
        self._jobs: deque[_Job] = deque()
        self._queued_items = 0
        self._round_started: float | None = None  # when the round in progress began (None: idle)
        self._closed = False
        self._ready = threading.Condition()
        self._worker = threading.Thread(target=self._serve, name="hub-batcher", daemon=True)
        self._worker.start()

    @property
    def queued(self) -> int:
        """Items waiting for a round (not counting the jobs in flight)."""
        return self._queued_items

    def busy_seconds(self) -> float:
        """How long the worker has been inside its current round (0 when idle): readiness checks read it."""
        started = self._round_started
        return 0.0 if started is None else time.perf_counter() - started

    @property
    def alive(self) -> bool:
        return self._worker.is_alive() and not self._closed

    def submit(self, requests: list[tuple[str, Any]], timeout_s: float | None = None) -> Future:
        """Queue mixed requests; the future gives their results in order. Bad input, an unknown task, too
        much work or a full queue raise here, in the caller (tasks load and inputs are encoded here too).
        `timeout_s`: this job's deadline (default: the batcher's `request_timeout_s`)."""
        self._refuse_if_full(len(requests))  # a flood is refused before any work is done for it
        items = self.hub.prepare(requests)
        rows_of_item = encode(items)
        self._check_work(items, rows_of_item)
        timeout = timeout_s if timeout_s is not None else self.request_timeout_s
        now = time.perf_counter()
        job = _Job(items, rows_of_item, Future(), now, None if timeout is None else now + timeout)
        with self._ready:
            if self._closed:
                raise HubError("the batcher is shut down; start a new one.")
            self._refuse_if_full(len(items))
            self._jobs.append(job)
            self._queued_items += len(items)
            self._ready.notify()
        return job.future

    def _refuse_if_full(self, items: int) -> None:
        if self._queued_items + items > self.max_queue:
            raise OverloadedError(f"overloaded: {self._queued_items} items are queued (limit {self.max_queue}); retry "
                                  "shortly or raise max_queue.")

    def _check_work(self, items: list[tuple[TaskRuntime, Any]], rows_of_item: list[list[RouterRow]]) -> None:
        if self.max_rows_per_item is not None:
            for i, ((task, _), rows) in enumerate(zip(items, rows_of_item)):
                if len(rows) > self.max_rows_per_item:
                    where = (f"item #{i} (task {task.spec.name!r})" if len(items) > 1
                             else f"the input (task {task.spec.name!r})")
                    raise RequestTooLargeError(
                        f"{where} needs {len(rows)} backbone windows of up to {task.codec.max_length} tokens; the "
                        f"limit is {self.max_rows_per_item} per item. Send a shorter text (or context), or split it.")
        total = sum(map(len, rows_of_item))
        if self.max_rows_per_request is not None and total > self.max_rows_per_request:
            raise RequestTooLargeError(
                f"the request needs {total} backbone windows in all; the limit is {self.max_rows_per_request} per "
                "request. Send fewer or shorter items per request.")

    def run(self, requests: list[tuple[str, Any]], timeout: float | None = None) -> list[dict[str, Any]]:
        """Blocking: queue the requests and wait for their results."""
        return self.submit(requests).result(timeout)

    async def run_async(self, requests: list[tuple[str, Any]]) -> list[dict[str, Any]]:
        """asyncio: queue the requests (in a thread: a first request may load a task) and await the results."""
        future = await asyncio.get_running_loop().run_in_executor(None, self.submit, requests)
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        """Finish the round in flight, fail what is still queued or unfinished, stop the worker."""
        with self._ready:
            self._closed = True
            pending, self._jobs = list(self._jobs), deque()
            self._queued_items = 0
            self._ready.notify()
        for job in pending:
            _fail(job, HubError("the batcher shut down before this request ran; retry on a running server."))
        self._worker.join()

    def __enter__(self) -> DynamicBatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _admit(self, in_flight: list[_Job], idle_timeout: float | None) -> list[_Job] | None:
        """Queued jobs that join the jobs in flight, while those hold under max_batch_size items (at least one
        job when none is in flight, after waiting at most max_wait for company). [] if nothing came within
        `idle_timeout` while idle (None: wait as long as it takes); None once the batcher is closed."""
        with self._ready:
            if not in_flight:
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
            elif self._closed:
                return None
            size = sum(len(job.items) for job in in_flight)
            admitted: list[_Job] = []
            while self._jobs and (not (in_flight or admitted)
                                  or size + len(self._jobs[0].items) <= self.max_batch_size):
                job = self._jobs.popleft()
                self._queued_items -= len(job.items)
                if not job.future.cancelled():
                    admitted.append(job)
                    size += len(job.items)
            return admitted

    def _serve(self) -> None:
        in_flight: list[_Job] = []
        worked = False  # since the last memory release
        while (admitted := self._admit(in_flight, self.idle_release_s if worked else None)) is not None:
            in_flight.extend(admitted)
            if not in_flight:  # nothing came within the idle timeout (or all of it was cancelled)
                if worked:  # idle: outside the lock, so submitting callers never wait on it
                    self.memory_releases += release_free_memory()
                    worked = False
                continue
            worked = True
            self._round_started = time.perf_counter()
            try:
                in_flight = self._round(in_flight)
            finally:
                self._round_started = None
        for job in in_flight:
            _fail(job, HubError("the batcher shut down before this request finished; retry on a running server."))

    def _round(self, in_flight: list[_Job]) -> list[_Job]:
        """Run one round's fair share of rows; answer the jobs it completes; return the jobs still in flight."""
        started = time.perf_counter()
        live = [job for job in in_flight if self._still_wanted(job, started)]
        shares = fair_shares([len(job.pending) for job in live], ROUND_PASSES * self.max_batch_size)
        taken = {id(job): [job.pending.popleft() for _ in range(n)] for job, n in zip(live, shares)}
        starting = [job for job in live if not job.started and taken[id(job)]]
        for job in starting:
            job.started = True
        self._forward(live, taken)
        left, items = [], 0
        for job in live:
            if job.future.done():
                continue  # failed in this round
            if job.pending:
                left.append(job)
                continue
            items += len(job.items)
            _answer(job)
        if self.on_batch is not None:
            waits = [started - job.enqueued for job in starting]
            tasks = len({row.task.spec.name for rows in taken.values() for row in rows})
            self.on_batch(BatchRecord(sum(1 for job in live if taken[id(job)]), items, sum(map(len, taken.values())),
                                      max(waits) if waits else None, time.perf_counter() - started, tasks))
        return left

    def _still_wanted(self, job: _Job, now: float) -> bool:
        """False for a cancelled job, or one past its deadline (failed here; its rows are dropped)."""
        if job.future.cancelled():
            return False
        if job.deadline is not None and now > job.deadline:
            self.deadline_misses += 1
            waited = now - job.enqueued
            _fail(job, DeadlineExceededError(
                f"the request was not answered within its deadline ({job.deadline - job.enqueued:.1f} s; it waited "
                f"{waited:.1f} s and {len(job.pending)} of its windows had not run); the server is busy: retry later, "
                "send less work per request, or raise the request timeout."))
            return False
        return True

    def _forward(self, live: list[_Job], taken: dict[int, list[RouterRow]]) -> None:
        """One shared run of every job's taken rows; if it fails, each job's rows alone, so a bad job fails
        only itself."""
        rows = [r for job in live for r in taken[id(job)]]
        if not rows:
            return
        try:
            decoded = forward(rows, self.max_batch_size)
        except Exception:
            for job in live:
                if taken[id(job)]:
                    try:
                        job.decoded.update(forward(taken[id(job)], self.max_batch_size))
                    except Exception as exc:
                        _fail(job, exc)
            return
        for job in live:
            job.decoded.update((id(r), decoded[id(r)]) for r in taken[id(job)])


def _answer(job: _Job) -> None:
    try:
        results = finish(job.items, job.rows_of_item, job.decoded)
    except Exception as exc:
        _fail(job, exc)
        return
    if job.future.set_running_or_notify_cancel():
        job.future.set_result(results)


def _fail(job: _Job, exc: BaseException) -> None:
    if not job.future.done() and job.future.set_running_or_notify_cancel():
        job.future.set_exception(exc)
