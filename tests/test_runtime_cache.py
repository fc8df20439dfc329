"""The adapter cache: LRU limits by count and bytes, one load per task, no stall for other tasks."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from conftest import assert_same_result
from hub.errors import HubError
from hub.runtime_cache import RuntimeCache


def _fake(name: str, size: int = 10):
    return SimpleNamespace(name=name, resident_bytes=size)


def test_least_recently_used_goes_first_past_the_count_limit():
    loads = []
    cache = RuntimeCache(lambda task: loads.append(task) or _fake(task), max_tasks=2)
    cache.get("a"), cache.get("b"), cache.get("a"), cache.get("c")  # b is the least recently used
    assert cache.resident() == ["a", "c"]
    cache.get("b")
    assert cache.resident() == ["c", "b"] and loads == ["a", "b", "c", "b"]
    assert cache.stats() | {"load_seconds": 0} == {"resident_tasks": 2, "resident_bytes": 20, "hits": 1, "misses": 4,
                                                   "evictions": 2, "load_seconds": 0}


def test_byte_limit_evicts_until_it_fits_but_keeps_a_lone_big_task():
    sizes = {"a": 40, "b": 40, "c": 30, "huge": 500}
    cache = RuntimeCache(lambda task: _fake(task, sizes[task]), max_bytes=100)
    for task in ("a", "b", "c"):
        cache.get(task)
    assert cache.resident() == ["b", "c"] and cache.stats()["resident_bytes"] == 70
    cache.get("huge")
    assert cache.resident() == ["huge"]


@pytest.mark.parametrize("limits", [{"max_tasks": 0}, {"max_bytes": -1}])
def test_limits_that_hold_nothing_are_refused(limits):
    with pytest.raises(HubError, match="would hold nothing"):
        RuntimeCache(_fake, **limits)


def test_a_slow_load_stalls_neither_loaded_tasks_nor_other_loads():
    release = threading.Event()

    def load(task):
        if task == "slow":
            assert release.wait(10)
        return _fake(task)

    cache = RuntimeCache(load)
    cache.get("ready")
    slow = threading.Thread(target=cache.get, args=("slow",))
    slow.start()
    time.sleep(0.05)
    started = time.perf_counter()
    assert cache.get("ready").name == "ready" and cache.get("other").name == "other"  # not behind "slow"
    assert time.perf_counter() - started < 1
    release.set()
    slow.join()
    assert set(cache.resident()) == {"ready", "slow", "other"}


def test_concurrent_first_requests_load_a_task_once():
    loads = []

    def load(task):
        loads.append(task)
        time.sleep(0.05)
        return _fake(task)

    cache = RuntimeCache(load)
    got = []
    threads = [threading.Thread(target=lambda: got.append(cache.get("t"))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert loads == ["t"] and len({id(r) for r in got}) == 1


def test_hub_with_a_one_task_cache_answers_like_an_unbounded_one(trained_registry):
    import hub

    bounded = hub.Hub.load(trained_registry, max_tasks=1)
    unbounded = hub.Hub.load(trained_registry)
    requests = [("sentiment", "a good movie"), ("paraphrase", ("a book", "the book")), ("sentiment", "sad plot"),
                ("entities", "the good movie was bad")] * 2
    for task, value in requests:
        assert_same_result(bounded.run(task, value), unbounded.run(task, value))
    assert bounded.cache.stats()["resident_tasks"] == 1 and bounded.cache.stats()["evictions"] >= 6
    # a mixed call needs several tasks at once: evicted runtimes stay usable by the batch that holds them
    mixed = bounded.run_many(requests)
    for got, (task, value) in zip(mixed, requests):
        assert_same_result(got, unbounded.run(task, value))
