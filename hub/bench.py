"""`hub bench glue|clue`: LoRA vs full fine-tuning vs a linear probe, per task, on one training budget.

Every cell (task, method, seed) trains with the project's own trainer on the same examples, epochs and
batch size, is evaluated on dev through the serving router with the task's official metric (computed
by the `evaluate` library from the hub's local metric module), and is appended to a JSON-lines log as
soon as it ends, so a killed run picks up where it stopped. The table (markdown + JSON) and the plot
are rebuilt from that log after every cell.

Each method keeps its usual learning rate (LoRA: the task's recipe; full fine-tuning 5e-5, as in
BERT's paper; probe 5e-3); everything else in the budget is shared. Method `registered` measures the
adapter the registry already has (its own budget, recorded in its card) on the same dev rows.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import platform
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .data import load_split
from .errors import HubError
from .evaluation import evaluate_runtime
from .metrics import evaluate_metric
from .registry import Registry

# GLUE/CLUE proper plus the NER and QA tasks of each language (issue: "include them once their heads exist").
SUITES: dict[str, tuple[str, ...]] = {
    "glue": ("cola", "sst2", "mrpc", "stsb", "rte", "conll2003", "xquad_en"),
    "clue": ("tnews", "afqmc", "cluener", "msra_ner", "cmrc2018"),
}
METHOD_NAMES = {"lora": "LoRA", "full": "full fine-tune", "probe": "linear probe", "registered": "registered adapter"}


@dataclass
class BenchConfig:
    """One benchmark run: which cells, on which budget, written where."""

    suite: str
    tasks: list[str]
    methods: list[str] = field(default_factory=lambda: ["lora", "full", "probe"])
    seeds: list[int] = field(default_factory=lambda: [42])
    max_train_examples: int | None = 2000
    max_eval_examples: int | None = None
    epochs: float | None = None
    learning_rate: float | None = None
    full_learning_rate: float = 5e-5
    probe_learning_rate: float = 5e-3
    rank: int | None = None
    out: Path = Path("benchmarks/results")
    name: str | None = None  # file stem of the results (default: the suite), for runs on another budget

    def budget(self) -> dict[str, Any]:
        """What a cell's result depends on besides (task, method, seed): cells only mix within one budget."""
        keys = ("max_train_examples", "max_eval_examples", "epochs", "learning_rate", "full_learning_rate", "probe_learning_rate", "rank")
        return {k: getattr(self, k) for k in keys}

    @property
    def stem(self) -> str:
        return self.name or self.suite

    @property
    def log_path(self) -> Path:
        return self.out / f"{self.stem}.cells.jsonl"


def _fingerprint(config: BenchConfig, registry: Registry, task: str, method: str) -> str:
    """The budget plus the task's registry entry (and, for `registered`, its adapter's weights): a changed
    recipe, data path or retrained adapter starts the cell afresh."""
    spec = registry.task(task)
    parts: list[Any] = [config.budget(), spec.model_dump(mode="json")]
    if method == "registered":
        weights = registry.adapter_dir(spec) / "adapter_model.safetensors"
        parts.append(hashlib.sha256(weights.read_bytes()).hexdigest() if weights.is_file() else None)
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _overrides(config: BenchConfig, registry: Registry, task: str, method: str, seed: int) -> dict[str, Any]:
    """Training options of one cell: the shared budget, and the method's learning rate."""
    recipe = registry.task(task).train
    options: dict[str, Any] = {"seed": seed, "epochs": config.epochs, "max_train_examples": config.max_train_examples}
    if config.rank is not None:
        options["lora"] = {**recipe.lora.model_dump(), "r": config.rank, "alpha": 2.0 * config.rank}
    if method == "lora":
        options["learning_rate"] = config.learning_rate
    elif method == "full":
        options["learning_rate"] = config.full_learning_rate
    else:
        options["learning_rate"] = options["head_learning_rate"] = config.probe_learning_rate
    return options


def _dev_rows(registry: Registry, task: str, limit: int | None):
    """The same dev rows for every cell of a task: all, or a fixed sample of `limit`."""
    dev = load_split(registry, registry.task(task), "dev")
    return dev if limit is None or limit >= len(dev) else dev.shuffle(seed=0).select(range(limit))


def _registered_cell(config: BenchConfig, registry: Registry, task: str, progress: bool) -> dict[str, Any]:
    """The registry's own adapter, served as usual, on the bench's dev rows; sizes and budget from its card."""
    from .adapters import folder_bytes
    from .card import card_report
    from .service import Hub

    hub = Hub(registry)
    dev = _dev_rows(registry, task, config.max_eval_examples)
    metrics = evaluate_runtime(hub.runtime(task), dev, hub.max_batch_size, progress=progress, scorer=evaluate_metric)
    folder = registry.adapter_dir(registry.task(task))
    report, recipe = card_report(folder), registry.task(task).train
    return {
        "task": task, "method": "registered", "seed": recipe.seed, "metric": registry.task(task).metric,
        "score": next(iter(metrics.values())), "metrics": metrics, "trainable_parameters": report["trainable_parameters"],
        "total_parameters": report["total_parameters"], "task_bytes": folder_bytes(folder), "train_examples": report["train_examples"],
        "eval_examples": len(dev), "train_seconds": report["train_seconds"], "learning_rate": recipe.learning_rate,
        "epochs": recipe.epochs, "batch_size": recipe.batch_size,
    }


def run_cell(config: BenchConfig, registry: Registry, task: str, method: str, seed: int, progress: bool) -> dict[str, Any]:
    """Train one (task, method, seed) and measure it on dev (`registered`: measure the registry's adapter)."""
    from .training import fit_task  # torch/peft training stack: only when a cell runs

    if method == "registered":
        return _registered_cell(config, registry, task, progress)
    fitted = fit_task(registry, task, method, progress=progress, **_overrides(config, registry, task, method, seed))
    dev = _dev_rows(registry, task, config.max_eval_examples)
    metrics = evaluate_runtime(fitted.runtime(), dev, progress=progress, scorer=evaluate_metric)
    report = fitted.report
    cell = {
        "task": task, "method": method, "seed": seed, "metric": fitted.task.metric, "score": next(iter(metrics.values())),
        "metrics": metrics, "trainable_parameters": report["trainable_parameters"], "total_parameters": report["total_parameters"],
        # what one more task costs to store: its trainable weights in float32
        "task_bytes": 4 * report["trainable_parameters"],
        "train_examples": report["train_examples"], "eval_examples": len(dev), "train_seconds": report["train_seconds"],
        "learning_rate": fitted.recipe.learning_rate, "epochs": fitted.recipe.epochs, "batch_size": fitted.recipe.batch_size,
    }
    del fitted
    gc.collect()
    return cell


def read_log(config: BenchConfig, registry: Registry) -> dict[tuple[str, str, int], dict[str, Any]]:
    """Finished cells of this budget (a half-written last line from a killed run is ignored)."""
    done: dict[tuple[str, str, int], dict[str, Any]] = {}
    if not config.log_path.exists():
        return done
    for line in config.log_path.read_text(encoding="utf-8").splitlines():
        try:
            cell = json.loads(line)
        except ValueError:
            continue
        if cell.get("task") in [t.name for t in registry.tasks] and cell.get("fingerprint") == _fingerprint(config, registry, cell["task"], cell["method"]):
            done[(cell["task"], cell["method"], cell["seed"])] = cell
    return done


def _append(path: Path, cell: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as log:
        log.write(json.dumps(cell, ensure_ascii=False) + "\n")
        log.flush()
        os.fsync(log.fileno())


def run_bench(config: BenchConfig, registry: Registry, progress: bool = True, command: str = "") -> str:
    """Run every missing cell, then write `<stem>.md`, `<stem>.json` and `<stem>.png`; returns the markdown."""
    unknown = [t for t in config.tasks if t not in [t.name for t in registry.tasks]]
    if unknown:
        raise HubError(f"bench: task(s) {unknown} are not in {registry.path}; registered: {', '.join([t.name for t in registry.tasks])}.")
    bad = [m for m in config.methods if m not in METHOD_NAMES]
    if bad:
        raise HubError(f"bench: unknown method(s) {bad}; use {', '.join(METHOD_NAMES)}.")
    done = read_log(config, registry)
    # the registered adapter is one fixed model: one cell per task, whatever the seeds
    cells = [(t, m, s) for t in config.tasks for m in config.methods
             for s in ([registry.task(t).train.seed] if m == "registered" else config.seeds)]
    todo = [c for c in cells if c not in done]
    if done and todo:
        print(f"bench {config.suite}: resuming, {len(cells) - len(todo)} of {len(cells)} cells already in {config.log_path}")
    for task, method, seed in tqdm(todo, desc=f"bench {config.suite}", unit="cell", disable=not progress):
        cell = run_cell(config, registry, task, method, seed, progress)
        cell["fingerprint"] = _fingerprint(config, registry, task, method)
        _append(config.log_path, cell)
        done[(task, method, seed)] = cell
        write_results(config, [done[c] for c in cells if c in done], command)
    return write_results(config, [done[c] for c in cells], command)


def with_data_root(registry: Registry, root: Path) -> Registry:
    """The registry with data files under its default data folder (../shared/data beside the repository)
    read from `root` instead, e.g. a copy of GLUE/CLUE elsewhere."""
    default = registry.resolve("../shared/data")
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise HubError(f"bench: data folder {root} does not exist; give the folder that holds glue/, clue/, conll2003/ ...")

    def moved(path: str | None) -> str | None:
        if path is None:
            return None
        absolute = registry.resolve(path)
        return str(root / absolute.relative_to(default)) if absolute.is_relative_to(default) else path

    tasks = [t.model_copy(update={"data": t.data.model_copy(update={"train": moved(t.data.train), "dev": moved(t.data.dev)})})
             if t.data else t for t in registry.tasks]
    return registry.model_copy(update={"tasks": tasks})


def machine() -> str:
    """The machine the numbers come from, for the table's header."""
    if torch.cuda.is_available():
        device = torch.cuda.get_device_name(0)
    else:
        device = f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"
    return f"{device}; torch {torch.__version__}"


def _points(scores: Sequence[float]) -> str:
    """Mean (± std over seeds) in points (x100)."""
    mean = 100 * statistics.fmean(scores)
    return f"{mean:.1f}" if len(scores) < 2 else f"{mean:.1f} ± {100 * statistics.stdev(scores):.1f}"


def _share(share: float) -> str:
    return f"{share:.2%}" if share >= 1e-4 else f"{share:.4%}"


def summarize(cells: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """task -> method -> {scores, mean, trainable_parameters, task_bytes, share}."""
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for cell in cells:
        entry = table.setdefault(cell["task"], {}).setdefault(cell["method"], {"scores": [], "metric": cell["metric"]})
        entry["scores"].append(cell["score"])
        entry.update(trainable_parameters=cell["trainable_parameters"], task_bytes=cell["task_bytes"],
                     share=cell["trainable_parameters"] / cell["total_parameters"], train_examples=cell["train_examples"],
                     eval_examples=cell["eval_examples"], epochs=cell["epochs"], learning_rate=cell["learning_rate"])
    for methods in table.values():
        for entry in methods.values():
            entry["mean"] = statistics.fmean(entry["scores"])
    return table


def markdown(config: BenchConfig, cells: list[dict[str, Any]], command: str) -> str:
    """The results table: scores per method, the LoRA - full gap, and what each method stores per task."""
    table = summarize(cells)
    methods = [m for m in config.methods if any(m in row for row in table.values())]
    seeds = ", ".join(map(str, config.seeds))
    epochs = "the task recipe's epochs" if config.epochs is None else f"{config.epochs:g} epoch(s)"
    lines = [
        f"# {config.suite.upper()} benchmark: {', '.join(METHOD_NAMES[m] for m in methods)}",
        "",
        f"Command: `{command}`" if command else "Command: (library call)",
        f"Machine: {machine()}. Seeds: {seeds} (mean ± std over seeds where more than one).",
        f"Budget, the same for every method: at most {config.max_train_examples or 'all'} training examples per task, "
        f"{epochs}, the task's batch size; dev: "
        f"{'all' if config.max_eval_examples is None else f'a fixed sample of {config.max_eval_examples}'} examples. "
        f"Learning rates: LoRA {config.learning_rate or 'the task recipe'}, full fine-tuning {config.full_learning_rate}, "
        f"probe {config.probe_learning_rate}. Scores are the task's official dev metric x100, computed with `evaluate` "
        "(hub/evaluate_modules/hub_metric).",
        "",
    ]
    with_gap = {"lora", "full"} <= set(methods)
    header = "| task | metric | " + " | ".join(METHOD_NAMES[m] for m in methods) + (" | LoRA − full |" if with_gap else " |")
    lines += [header, "|" + "---|" * (header.count("|") - 1)]
    for task, row in table.items():
        scores = [_points(row[m]["scores"]) if m in row else "–" for m in methods]
        gap = [f"{100 * (row['lora']['mean'] - row['full']['mean']):+.1f}" if "lora" in row and "full" in row else ""] if with_gap else []
        lines.append(f"| {task} | {next(iter(row.values()))['metric']} | " + " | ".join(scores + gap) + " |")
    if table and all(m in row for row in table.values() for m in methods):
        average = {m: statistics.fmean(row[m]["mean"] for row in table.values()) for m in methods}
        gap = [f"{100 * (average['lora'] - average['full']):+.1f}"] if with_gap else []
        lines.append("| **average** | | " + " | ".join([f"**{100 * average[m]:.1f}**" for m in methods] + gap) + " |")
    lines += ["", "What each method stores per task (its trainable weights in float32; a registered adapter: its folder):", ""]
    size_header = "| task | " + " | ".join(f"{METHOD_NAMES[m]}: params (share) | bytes" for m in methods) + " |"
    lines += [size_header, "|" + "---|" * (size_header.count("|") - 1)]
    for task, row in table.items():
        parts = [f"{row[m]['trainable_parameters']:,} ({_share(row[m]['share'])}) | {row[m]['task_bytes']:,}" if m in row else "– | –"
                 for m in methods]
        lines.append(f"| {task} | " + " | ".join(parts) + " |")
    return "\n".join(lines) + "\n"


def plot(config: BenchConfig, cells: list[dict[str, Any]], path: Path) -> None:
    """Grouped bars: one group per task, one bar per method, error bars = std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = summarize(cells)
    tasks = list(table)
    methods = [m for m in config.methods if any(m in row for row in table.values())]
    width = 0.8 / max(1, len(methods))
    figure, axes = plt.subplots(figsize=(1.4 * len(tasks) + 2, 4))
    for i, m in enumerate(methods):
        means = [100 * table[t][m]["mean"] if m in table[t] else 0.0 for t in tasks]
        stds = [100 * statistics.stdev(table[t][m]["scores"]) if m in table[t] and len(table[t][m]["scores"]) > 1 else 0.0 for t in tasks]
        axes.bar([x + (i - (len(methods) - 1) / 2) * width for x in range(len(tasks))], means, width, yerr=stds, capsize=3,
                 label=METHOD_NAMES[m])
    axes.set_xticks(range(len(tasks)), [f"{t}\n({next(iter(table[t].values()))['metric']})" for t in tasks], fontsize=8)
    axes.set_ylabel("dev score (x100)")
    axes.set_title(f"{config.suite.upper()}: same backbone, same budget")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_results(config: BenchConfig, cells: list[dict[str, Any]], command: str) -> str:
    """`<stem>.md`, `<stem>.json` (config + every cell) and `<stem>.png` under the output folder, each written atomically."""
    config.out.mkdir(parents=True, exist_ok=True)
    text = markdown(config, cells, command)
    payload = {"config": {**asdict(config), "out": str(config.out)}, "machine": machine(), "command": command,
               "summary": summarize(cells), "cells": cells}
    for suffix, content in ((".md", text), (".json", json.dumps(payload, indent=2, ensure_ascii=False))):
        target = config.out / f"{config.stem}{suffix}"
        staging = target.with_suffix(suffix + ".tmp")
        staging.write_text(content, encoding="utf-8")
        os.replace(staging, target)
    if cells:
        staging = config.out / f".{config.stem}.tmp.png"
        plot(config, cells, staging)
        os.replace(staging, config.out / f"{config.stem}.png")
    return text
