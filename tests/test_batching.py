"""Dynamic batching: concurrent callers share batches, get their own answers in order, a full queue
says so at once, and freed memory goes back to the OS once traffic pauses."""

from __future__ import annotations

import asyncio
import platform
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import hub.batching as batching
from conftest import assert_same_result, random_request
from hub.batching import DynamicBatcher, OverloadedError
from hub.errors import HubError, InputError, UnknownTaskError
from hub.memory import release_free_memory


@pytest.fixture
def blocked_worker(monkeypatch):
    """Make the worker's backbone passes wait until the test sets the event (so jobs pile up in the queue)."""
    release, entered = threading.Event(), threading.Event()
    original = batching.forward

    def waiting(rows, max_batch_size):
        entered.set()
        assert release.wait(20)
        return original(rows, max_batch_size)

    monkeypatch.setattr(batching, "forward", waiting)
    yield entered, release
    release.set()


def test_concurrent_callers_get_their_own_answers_in_shared_batches(tiny_hub):
    rng = random.Random(7)
    jobs = [[random_request(rng) for _ in range(rng.randint(1, 4))] for _ in range(60)]
    records = []
    with DynamicBatcher(tiny_hub, max_batch_size=16, max_wait_ms=20, on_batch=records.append) as batcher:
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(batcher.run, jobs))
    for job, answer in zip(jobs, answers):
        assert [r["task"] for r in answer] == [task for task, _ in job]
        for got, (task, value) in zip(answer, job):
            assert_same_result(got, tiny_hub.run(task, value))
    assert sum(r.items for r in records) == sum(map(len, jobs))
    assert max(r.items for r in records) > 4  # callers' requests really were grouped
    assert all(r.items <= 16 or r.jobs == 1 for r in records)


def test_bad_requests_fail_in_the_caller_before_queueing(tiny_hub):
    with DynamicBatcher(tiny_hub) as batcher:
        with pytest.raises(UnknownTaskError, match="Did you mean 'sentiment'"):
            batcher.submit([("sentimant", "x")])
        with pytest.raises(InputError, match="request #1"):
            batcher.submit([("sentiment", "ok"), ("paraphrase", "only one text")])
        assert batcher.queued == 0
        assert batcher.run([("sentiment", "good")])[0]["task"] == "sentiment"


def test_a_full_queue_answers_overloaded_at_once(tiny_hub, blocked_worker):
    entered, release = blocked_worker
    with DynamicBatcher(tiny_hub, max_batch_size=2, max_wait_ms=0, max_queue=3) as batcher:
        first = batcher.submit([("sentiment", "good")])
        assert entered.wait(10)  # the worker holds the first job; the queue is empty again
        queued = [batcher.submit([("sentiment", "bad"), ("sentiment", "sad")]), batcher.submit([("sentiment", "fine")])]
        assert batcher.queued == 3
        with pytest.raises(OverloadedError, match="3 items are queued \\(limit 3\\)"):
            batcher.submit([("sentiment", "one more")])
        release.set()
        assert first.result(10)[0]["task"] == "sentiment"
        assert [len(f.result(10)) for f in queued] == [2, 1]
        assert batcher.run([("sentiment", "after the flood")])[0]["task"] == "sentiment"


def test_cancelled_jobs_are_dropped_and_close_fails_the_rest(tiny_hub, blocked_worker):
    entered, release = blocked_worker
    batcher = DynamicBatcher(tiny_hub, max_batch_size=1, max_wait_ms=0)
    running = batcher.submit([("sentiment", "good")])
    assert entered.wait(10)
    cancelled, pending = batcher.submit([("sentiment", "x")]), batcher.submit([("sentiment", "y")])
    assert cancelled.cancel()
    closer = threading.Thread(target=batcher.close)
    closer.start()
    release.set()
    closer.join(10)
    assert running.result(10)[0]["task"] == "sentiment"
    with pytest.raises(HubError, match="shut down"):
        pending.result(10)
    with pytest.raises(HubError, match="shut down"):
        batcher.submit([("sentiment", "late")])


def test_a_failing_job_fails_alone(tiny_hub, monkeypatch):
    original = batching.forward

    def fragile(rows, max_batch_size):
        if any("boom" in r.task.backbone.tokenizer.decode(r.row.input_ids) for r in rows):
            raise RuntimeError("boom")
        return original(rows, max_batch_size)

    monkeypatch.setattr(batching, "forward", fragile)
    with DynamicBatcher(tiny_hub, max_wait_ms=50) as batcher:
        bad = batcher.submit([("sentiment", "boom")])
        good = batcher.submit([("sentiment", "good")])
        assert good.result(10)[0]["task"] == "sentiment"
        with pytest.raises(RuntimeError, match="boom"):
            bad.result(10)


def test_asyncio_callers(tiny_hub):
    async def main(batcher):
        return await asyncio.gather(*(batcher.run_async([("sentiment", text)]) for text in ("good", "bad", "sad")))

    with DynamicBatcher(tiny_hub, max_wait_ms=20) as batcher:
        answers = asyncio.run(main(batcher))
    for text, answer in zip(("good", "bad", "sad"), answers):
        assert_same_result(answer[0], tiny_hub.run("sentiment", text))


def test_freed_memory_goes_back_once_traffic_pauses(tiny_hub, monkeypatch):
    releases = []
    monkeypatch.setattr(batching, "release_free_memory", lambda: releases.append(time.perf_counter()) or True)
    with DynamicBatcher(tiny_hub, max_wait_ms=0, idle_release_s=0.05) as batcher:
        time.sleep(0.3)
        assert releases == []  # nothing ran: nothing to give back
        batcher.run([("sentiment", "good")], timeout=10)
        ran = time.perf_counter()
        time.sleep(0.5)
        assert len(releases) == 1 and releases[0] - ran >= 0.04  # once, after the pause, not per idle check
        batcher.run([("sentiment", "bad")], timeout=10)
        time.sleep(0.5)
        assert len(releases) == 2 and batcher.memory_releases == 2
    with DynamicBatcher(tiny_hub, max_wait_ms=0, idle_release_s=None) as batcher:
        batcher.run([("sentiment", "good")], timeout=10)
        time.sleep(0.3)
    assert len(releases) == 2


def test_release_free_memory_works_on_glibc():
    assert release_free_memory() is (platform.libc_ver()[0] == "glibc")


@pytest.mark.parametrize("limits", [{"max_queue": 0}, {"max_wait_ms": -1}, {"max_batch_size": 0}, {"idle_release_s": -1}])
def test_limits_are_checked(tiny_hub, limits):
    with pytest.raises(HubError, match="batcher limits"):
        DynamicBatcher(tiny_hub, **limits)
