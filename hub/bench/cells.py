"""Benchmark cells (task, method, seed): train, measure on dev, log; a killed run resumes from the log."""

from __future__ import annotations

import gc
import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from tqdm.auto import tqdm

from ..adapter_folder import AdapterFolder
from ..data import load_split, sample_rows
from ..errors import HubError
from ..evaluation import evaluate_runtime
from ..metrics import evaluate_metric
from ..registry import Registry, TaskSpec
from .config import METHOD_NAMES, BenchConfig
from .parallel import Backend, run_cells
from .report import write_results

if TYPE_CHECKING:
    from ..training import Method


# Registry fields added after cells were logged (section, field), with the value that reads and trains exactly as
# before they existed: at that value they stay out of fingerprints, so adding a field does not throw away days of
# finished cells (tests/test_benchmarks.py holds the committed frontier table to this).
FIELDS_ADDED_LATER: dict[tuple[str, str], Any] = {("train", "runtime"): "float32", ("data", "drop"): {},
                                                 ("data", "token_pattern"): None, ("train", "max_train_seconds"): None,
                                                 ("train", "init_from"): None, ("data", "types"): None}


def fingerprinted_spec(spec: TaskSpec) -> dict[str, Any]:
    """The task's registry entry as cell fingerprints hash it."""
    dumped = spec.model_dump(mode="json")
    for (section, field), neutral in FIELDS_ADDED_LATER.items():
        if isinstance(dumped.get(section), dict) and dumped[section].get(field, neutral) == neutral:
            dumped[section].pop(field, None)
    return dumped


def _fingerprint(config: BenchConfig, registry: Registry, task: str, method: str) -> str:
    """The budget plus the task's registry entry (and, for `registered`, its adapter's weights): a changed
    recipe, data path or retrained adapter starts the cell afresh."""
    spec = registry.task(task)
    parts: list[Any] = [config.budget(), fingerprinted_spec(spec)]
    if method == "registered":
        weights = AdapterFolder(registry.adapter_dir(spec)).weights_file()
        parts.append(hashlib.sha256(weights.read_bytes()).hexdigest() if weights.is_file() else None)
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _overrides(config: BenchConfig, registry: Registry, task: str, method: str, seed: int) -> dict[str, Any]:
    """Training options of one cell: the shared budget, and the method's learning rate."""
    recipe = registry.task(task).train
    options: dict[str, Any] = {"seed": seed, "epochs": config.epochs, "max_train_examples": config.max_train_examples}
    if config.rank is not None:
        options["adapter"] = {**recipe.adapter.model_dump(), "r": config.rank, "alpha": 2.0 * config.rank}
    if method == "lora":
        options["learning_rate"] = config.learning_rate
    elif method == "full":
        options["learning_rate"] = config.full_learning_rate
        options["head_learning_rate"] = config.full_head_learning_rate or config.full_learning_rate
    else:
        options["learning_rate"] = options["head_learning_rate"] = config.probe_learning_rate
    return options


def _dev_rows(registry: Registry, task: str, limit: int | None):
    """The same dev rows for every cell of a task: all, or a fixed sample of `limit`."""
    return sample_rows(load_split(registry, registry.task(task), "dev"), limit, seed=0)


def _registered_cell(config: BenchConfig, registry: Registry, task: str, progress: bool) -> dict[str, Any]:
    """The registry's own adapter, served as usual, on the bench's dev rows; sizes and budget from its card."""
    from ..card import card_report
    from ..service import Hub

    hub = Hub(registry)
    dev = _dev_rows(registry, task, config.max_eval_examples)
    metrics = evaluate_runtime(hub.runtime(task), dev, hub.max_batch_size, progress=progress, scorer=evaluate_metric)
    spec = registry.task(task)
    folder = registry.adapter_dir(spec)
    report, recipe = card_report(folder), spec.train
    return {
        "task": task, "method": "registered", "seed": recipe.seed, "metric": spec.metric,
        "score": next(iter(metrics.values())), "metrics": metrics,
        "trainable_parameters": report["trainable_parameters"], "total_parameters": report["total_parameters"],
        "task_bytes": AdapterFolder(folder).nbytes(), "train_examples": report["train_examples"],
        "eval_examples": len(dev), "train_seconds": report["train_seconds"], "learning_rate": recipe.learning_rate,
        "epochs": recipe.epochs, "batch_size": recipe.batch_size,
    }


def run_cell(config: BenchConfig, registry: Registry, task: str, method: str, seed: int,
             progress: bool) -> dict[str, Any]:
    """Train one (task, method, seed) and measure it on dev (`registered`: measure the registry's adapter)."""
    from ..training import fit_task  # torch/peft training stack: only when a cell runs

    if method == "registered":
        return _registered_cell(config, registry, task, progress)
    # run_bench checked `method` against METHOD_NAMES, and `registered` returned above
    fitted = fit_task(registry, task, cast("Method", method), progress=progress,
                      **_overrides(config, registry, task, method, seed))
    dev = _dev_rows(registry, task, config.max_eval_examples)
    metrics = evaluate_runtime(fitted.runtime(), dev, progress=progress, scorer=evaluate_metric)
    report = fitted.report
    cell = {
        "task": task, "method": method, "seed": seed, "metric": fitted.task.metric,
        "score": next(iter(metrics.values())), "metrics": metrics,
        "trainable_parameters": report["trainable_parameters"], "total_parameters": report["total_parameters"],
        # what one more task costs to store: its trainable weights in float32
        "task_bytes": 4 * report["trainable_parameters"],
        "train_examples": report["train_examples"], "eval_examples": len(dev), "train_seconds": report["train_seconds"],
        "learning_rate": fitted.recipe.learning_rate, "epochs": fitted.recipe.epochs,
        "batch_size": fitted.recipe.batch_size,
    }
    del fitted
    gc.collect()
    return cell


def read_log(config: BenchConfig, registry: Registry) -> dict[tuple[str, str, int], dict[str, Any]]:
    """Finished cells of this budget (a half-written last line from a killed run is ignored)."""
    done: dict[tuple[str, str, int], dict[str, Any]] = {}
    if not config.log_path.exists():
        return done
    names = {t.name for t in registry.tasks}
    current: dict[tuple[str, str], str] = {}  # (task, method) -> fingerprint, computed once per pair
    for line in config.log_path.read_text(encoding="utf-8").splitlines():
        try:
            cell = json.loads(line)
        except ValueError:
            continue
        if cell.get("task") not in names:
            continue
        pair = (cell["task"], cell["method"])
        if pair not in current:
            current[pair] = _fingerprint(config, registry, *pair)
        if cell.get("fingerprint") == current[pair]:
            done[(cell["task"], cell["method"], cell["seed"])] = cell
    return done


def append_cell(path: Path, cell: dict[str, Any]) -> None:
    """One finished cell appended to a JSON-lines log and flushed to disk (a killed run keeps every finished cell)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as log:
        log.write(json.dumps(cell, ensure_ascii=False) + "\n")
        log.flush()
        os.fsync(log.fileno())


def run_bench(config: BenchConfig, registry: Registry, progress: bool = True, command: str = "",
              backend: Backend = "serial", workers: int = 1, cpus_per_cell: float = 1.0) -> str:
    """Run every missing cell (here, in `workers` processes, or as Ray tasks: hub/bench/parallel.py), then write
    `<stem>.md`, `<stem>.json` and `<stem>.png`; returns the markdown."""
    names = [t.name for t in registry.tasks]
    unknown = [t for t in config.tasks if t not in names]
    if unknown:
        raise HubError(f"bench: task(s) {unknown} are not in {registry.path}; registered: {', '.join(names)}.")
    bad = [m for m in config.methods if m not in METHOD_NAMES]
    if bad:
        raise HubError(f"bench: unknown method(s) {bad}; use {', '.join(METHOD_NAMES)}.")
    if config.max_eval_examples is not None and config.max_eval_examples < 1:
        raise HubError(f"bench: max_eval_examples={config.max_eval_examples} leaves no dev rows; "
                       "give 1 or more, or leave it out for all.")
    done = read_log(config, registry)
    # the registered adapter is one fixed model: one cell per task, whatever the seeds
    cells = [(t, m, s) for t in config.tasks for m in config.methods
             for s in ([registry.task(t).train.seed] if m == "registered" else config.seeds)]
    todo = [c for c in cells if c not in done]
    if done and todo:
        print(f"bench {config.suite}: resuming, {len(cells) - len(todo)} of {len(cells)} cells "
              f"already in {config.log_path}")
    finished = run_cells(config, registry, todo, backend, workers, cpus_per_cell, progress)
    for (task, method, seed), cell in tqdm(finished, total=len(todo), desc=f"bench {config.suite}", unit="cell",
                                           disable=not progress):
        cell["fingerprint"] = _fingerprint(config, registry, task, method)
        append_cell(config.log_path, cell)
        done[(task, method, seed)] = cell
        write_results(config, [done[c] for c in cells if c in done], command)
    return write_results(config, [done[c] for c in cells], command)
