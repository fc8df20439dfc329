"""Where a benchmark grid's cells run: here one after another, in worker processes, or as Ray tasks on a cluster.

Cells are independent (one training and one evaluation each), so they spread without coordination; the results come
back to the process that started the run, which alone appends them to the log (one writer: a killed run keeps every
finished cell, and resumes as before). Each worker process gets its share of the cores as torch threads; a Ray task
reserves `cpus_per_cell` CPUs (Ray sets its torch threads to that), so a cluster runs as many cells at once as it has
CPUs for. Every node must read the registry, its data files and the backbones at the same paths.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Literal

from ..errors import HubError
from ..registry import Registry
from .config import BenchConfig

Cell = tuple[str, str, int]  # task, method, seed
Backend = Literal["serial", "processes", "ray"]


def run_cells(config: BenchConfig, registry: Registry, cells: list[Cell], backend: Backend = "serial",
              workers: int = 1, cpus_per_cell: float = 1.0, progress: bool = True) -> Iterator[tuple[Cell, dict]]:
    """(cell, result) for every cell, as each finishes (in any order but `serial`'s)."""
    from .cells import run_cell

    if backend == "serial":
        for cell in cells:
            yield cell, run_cell(config, registry, *cell, progress)
    elif backend == "processes":
        yield from _in_processes(config, registry, cells, workers)
    elif backend == "ray":
        yield from _on_ray(config, registry, cells, cpus_per_cell)
    else:
        raise HubError(f"bench: unknown backend {backend!r}; use serial, processes or ray.")


def _cell_in_worker(config: BenchConfig, registry: Registry, cell: Cell) -> dict[str, Any]:
    from .cells import run_cell

    return run_cell(config, registry, *cell, False)


def _limit_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _in_processes(config: BenchConfig, registry: Registry, cells: list[Cell], workers: int
                  ) -> Iterator[tuple[Cell, dict]]:
    if workers < 1:
        raise HubError(f"bench: workers={workers}; give 1 or more.")
    threads = max(1, (os.cpu_count() or 1) // workers)
    # spawn: a fresh interpreter per worker (torch's threads and forked state do not mix)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_limit_threads, initargs=(threads,)) as pool:
        futures = {pool.submit(_cell_in_worker, config, registry, cell): cell for cell in cells}
        for future in as_completed(futures):
            yield futures[future], future.result()


def _on_ray(config: BenchConfig, registry: Registry, cells: list[Cell], cpus_per_cell: float
            ) -> Iterator[tuple[Cell, dict]]:
    try:
        import ray
    except ImportError:
        raise HubError("hub bench --ray needs Ray: pip install 'bert-adapter-hub[ray]'.") from None
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=os.environ.get("RAY_ADDRESS") or "local", log_to_driver=False)
    try:
        remote = ray.remote(num_cpus=cpus_per_cell, max_retries=1)(_cell_in_worker)
        pending = {remote.remote(config, registry, cell): cell for cell in cells}
        while pending:
            (done,), _ = ray.wait(list(pending), num_returns=1)
            yield pending.pop(done), ray.get(done)
    finally:
        if started_here:
            ray.shutdown()
