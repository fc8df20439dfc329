"""The benchmark's results: a markdown table, a JSON summary with every cell, and a bar plot."""

from __future__ import annotations

import json
import os
import platform
import statistics
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from ..atomic import atomic_file
from .config import METHOD_NAMES, BenchConfig

Summary = dict[str, dict[str, dict[str, Any]]]  # task -> method -> scores, mean and sizes


def machine() -> str:
    """The machine the numbers come from, for the table's header."""
    if torch.cuda.is_available():
        device = torch.cuda.get_device_name(0)
    else:
        device = (f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                  f"{torch.get_num_threads()} torch threads)")
    return f"{device}; torch {torch.__version__}"


def _points(scores: Sequence[float]) -> str:
    """Mean (± std over seeds) in points (x100)."""
    mean = 100 * statistics.fmean(scores)
    return f"{mean:.1f}" if len(scores) < 2 else f"{mean:.1f} ± {100 * statistics.stdev(scores):.1f}"


def _share(share: float) -> str:
    return f"{share:.2%}" if share >= 1e-4 else f"{share:.4%}"


def summarize(cells: list[dict[str, Any]]) -> Summary:
    """task -> method -> {scores, mean, trainable_parameters, task_bytes, share}."""
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for cell in cells:
        entry = table.setdefault(cell["task"], {}).setdefault(cell["method"],
                                                               {"scores": [], "metric": cell["metric"]})
        entry["scores"].append(cell["score"])
        entry.update(trainable_parameters=cell["trainable_parameters"], task_bytes=cell["task_bytes"],
                     share=cell["trainable_parameters"] / cell["total_parameters"],
                     train_examples=cell["train_examples"], eval_examples=cell["eval_examples"],
                     epochs=cell["epochs"], learning_rate=cell["learning_rate"])
    for methods in table.values():
        for entry in methods.values():
            entry["mean"] = statistics.fmean(entry["scores"])
    return table


def _methods(config: BenchConfig, table: Summary) -> list[str]:
    """The configured methods that have at least one finished cell, in the configured order."""
    return [m for m in config.methods if any(m in row for row in table.values())]


def _metric(row: dict[str, dict[str, Any]]) -> str:
    return next(iter(row.values()))["metric"]


def markdown(config: BenchConfig, table: Summary, command: str) -> str:
    """The results table: scores per method, the LoRA - full gap, and what each method stores per task."""
    methods = _methods(config, table)
    seeds = ", ".join(map(str, config.seeds))
    epochs = "the task recipe's epochs" if config.epochs is None else f"{config.epochs:g} epoch(s)"
    dev = ("all" if config.max_eval_examples is None
           else f"at most {config.max_eval_examples} (a fixed sample where larger)")
    lines = [
        f"# {config.suite.upper()} benchmark: {', '.join(METHOD_NAMES[m] for m in methods)}",
        "",
        f"Command: `{command}`" if command else "Command: (library call)",
        f"Machine: {machine()}. Seeds: {seeds} (mean ± std over seeds where more than one).",
        f"Budget, shared by {', '.join(METHOD_NAMES[m] for m in methods if m != 'registered')}: "
        f"at most {config.max_train_examples or 'all'} training examples per task, "
        f"{epochs}, the task's batch size; dev: "
        f"{dev} examples. "
        f"Learning rates: LoRA {config.learning_rate or 'the task recipe'}, "
        f"full fine-tuning {config.full_learning_rate}"
        f"{f' (head {config.full_head_learning_rate})' if config.full_head_learning_rate else ''}, "
        f"probe {config.probe_learning_rate}. "
        "Scores are the task's official dev metric x100, computed with `evaluate` "
        "(hub/evaluate_modules/hub_metric).",
        "",
    ]
    if "registered" in methods:
        budgets = ", ".join(f"{task} {row['registered']['train_examples']:,} x {row['registered']['epochs']:g}"
                            for task, row in table.items() if "registered" in row)
        lines[-1:] = [f"The registered adapter is the one the registry serves, trained on its own budget "
                      f"(training examples x epochs: {budgets}) and measured on the same dev rows; "
                      "it is outside the shared budget.", ""]
    with_gap = {"lora", "full"} <= set(methods)
    header = ("| task | metric | " + " | ".join(METHOD_NAMES[m] for m in methods)
              + (" | LoRA − full |" if with_gap else " |"))
    lines += [header, "|" + "---|" * (header.count("|") - 1)]
    for task, row in table.items():
        scores = [_points(row[m]["scores"]) if m in row else "–" for m in methods]
        gap = ([f"{100 * (row['lora']['mean'] - row['full']['mean']):+.1f}" if "lora" in row and "full" in row else ""]
               if with_gap else [])
        lines.append(f"| {task} | {_metric(row)} | " + " | ".join(scores + gap) + " |")
    if table and all(m in row for row in table.values() for m in methods):
        average = {m: statistics.fmean(row[m]["mean"] for row in table.values()) for m in methods}
        gap = [f"{100 * (average['lora'] - average['full']):+.1f}"] if with_gap else []
        lines.append("| **average** | | "
                     + " | ".join([f"**{100 * average[m]:.1f}**" for m in methods] + gap) + " |")
    lines += ["", "What each method stores per task "
              "(its trainable weights in float32; a registered adapter: its folder):", ""]
    size_header = "| task | " + " | ".join(f"{METHOD_NAMES[m]}: params (share) | bytes" for m in methods) + " |"
    lines += [size_header, "|" + "---|" * (size_header.count("|") - 1)]
    for task, row in table.items():
        parts = [f"{row[m]['trainable_parameters']:,} ({_share(row[m]['share'])}) | {row[m]['task_bytes']:,}"
                 if m in row else "– | –" for m in methods]
        lines.append(f"| {task} | " + " | ".join(parts) + " |")
    return "\n".join(lines) + "\n"


def plot(config: BenchConfig, table: Summary, path: Path) -> None:
    """Grouped bars (PNG): one group per task, one bar per method, error bars = std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(table)
    methods = _methods(config, table)
    width = 0.8 / max(1, len(methods))
    figure, axes = plt.subplots(figsize=(1.4 * len(tasks) + 2, 4))
    for i, m in enumerate(methods):
        means = [100 * table[t][m]["mean"] if m in table[t] else 0.0 for t in tasks]
        stds = [100 * statistics.stdev(table[t][m]["scores"]) if m in table[t] and len(table[t][m]["scores"]) > 1
                else 0.0 for t in tasks]
        axes.bar([x + (i - (len(methods) - 1) / 2) * width for x in range(len(tasks))], means, width, yerr=stds,
                 capsize=3, label=METHOD_NAMES[m])
    axes.set_xticks(range(len(tasks)), [f"{t}\n({_metric(table[t])})" for t in tasks], fontsize=8)
    axes.set_ylabel("dev score (x100)")
    axes.set_title(f"{config.suite.upper()}: same backbone, same budget")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120, format="png")
    plt.close(figure)


def write_results(config: BenchConfig, cells: list[dict[str, Any]], command: str) -> str:
    """`<stem>.md`, `<stem>.json` (config + every cell) and `<stem>.png` under the output folder,
    each written atomically."""
    table = summarize(cells)
    text = markdown(config, table, command)
    payload = {"config": {**asdict(config), "out": str(config.out)}, "machine": machine(), "command": command,
               "summary": table, "cells": cells}
    for suffix, content in ((".md", text), (".json", json.dumps(payload, indent=2, ensure_ascii=False))):
        with atomic_file(config.out / f"{config.stem}{suffix}") as staging:
            staging.write_text(content, encoding="utf-8")
    if cells:
        with atomic_file(config.out / f"{config.stem}.png") as staging:
            plot(config, table, staging)
    return text
