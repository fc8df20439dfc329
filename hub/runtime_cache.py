"""Loaded tasks (LoRA matrices, head, codec) in an LRU cache limited by count and/or bytes.

A task loads on its first request. Loading holds only that task's own lock, so a slow load (disk,
a Hub download) never stalls requests for tasks already loaded, nor other tasks' loads; two requests
for the same unloaded task load it once. Eviction only drops the cache's reference: a batch already
holding an evicted task's runtime finishes with it, and its memory goes when that batch is done.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from .errors import HubError
from .router import TaskRuntime


class RuntimeCache:
    """`get(task)` returns the loaded task, loading it with `load(task)` on a miss."""

    def __init__(self, load: Callable[[str], TaskRuntime], max_tasks: int | None = None, max_bytes: int | None = None):
        for name, value in (("max_tasks", max_tasks), ("max_bytes", max_bytes)):
            if value is not None and value < 1:
                raise HubError(f"adapter cache: {name}={value} would hold nothing; give a positive limit or none.")
        self._load = load
        self.max_tasks = max_tasks
        self.max_bytes = max_bytes
        # task -> (runtime, bytes), oldest first
        self._entries: OrderedDict[str, tuple[TaskRuntime, int]] = OrderedDict()
        self._lock = threading.Lock()
        self._task_locks: dict[str, threading.Lock] = {}
        self.resident_bytes = 0
        self.hits = self.misses = self.evictions = 0
        self.load_seconds = 0.0

    def get(self, task: str) -> TaskRuntime:
        with self._lock:
            if (found := self._hit(task)) is not None:
                return found
            task_lock = self._task_locks.setdefault(task, threading.Lock())
        with task_lock:
            with self._lock:
                if (found := self._hit(task)) is not None:  # loaded by the request we waited for
                    return found
            started = time.perf_counter()
            runtime = self._load(task)
            size = runtime.resident_bytes
            with self._lock:
                self.misses += 1
                self.load_seconds += time.perf_counter() - started
                self._entries[task] = (runtime, size)
                self.resident_bytes += size
                self._evict(keep=task)
            return runtime

    def _hit(self, task: str) -> TaskRuntime | None:
        entry = self._entries.get(task)
        if entry is None:
            return None
        self._entries.move_to_end(task)
        self.hits += 1
        return entry[0]

    def _evict(self, keep: str) -> None:
        """Drop least recently used tasks past the limits; `keep` (just loaded) stays even if alone too big."""
        while len(self._entries) > 1 and (
            (self.max_tasks is not None and len(self._entries) > self.max_tasks)
            or (self.max_bytes is not None and self.resident_bytes > self.max_bytes)
        ):
            oldest = next(iter(self._entries))
            if oldest == keep:
                break
            self.resident_bytes -= self._entries.pop(oldest)[1]
            self.evictions += 1

    def drop(self, task: str) -> None:
        """Unload `task` now if it is loaded (a batch holding its runtime finishes with it)."""
        with self._lock:
            entry = self._entries.pop(task, None)
            if entry is not None:
                self.resident_bytes -= entry[1]
                self.evictions += 1

    def loaded(self, task: str) -> bool:
        """Whether `task` is in the cache now (a lock-free peek: the answer may change right after)."""
        return task in self._entries

    def resident(self) -> list[str]:
        """Loaded tasks, least recently used first."""
        with self._lock:
            return list(self._entries)

    def stats(self) -> dict[str, float]:
        with self._lock:
            return {
                "resident_tasks": len(self._entries), "resident_bytes": self.resident_bytes, "hits": self.hits,
                "misses": self.misses, "evictions": self.evictions, "load_seconds": round(self.load_seconds, 6),
            }
