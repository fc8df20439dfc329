"""What task-adaptive pre-training buys a task with few labels (Gururangan et al. 2020, "Don't Stop Pretraining").

For each task: a domain adapter is pre-trained per objective (MLM, whole-word, span masking) on the task's own
training texts without their labels (at most --corpus-texts of them), with the task recipe's adapter method and
options; then the task adapter is trained on --budgets labelled examples, from scratch and starting from each domain
adapter (`train.init_from`: its weights, then fine-tuning), for each seed, and scored on the same dev rows.

    python benchmarks/tapt.py                                   # sst2 tnews sentiment_zh, 200/1,000/5,000, seeds 42 43
    python benchmarks/tapt.py --tasks sst2 --budgets 200 --seeds 42

Every finished cell (a pre-training, or a fine-tuning) is appended to `<out>.cells.jsonl` at once, so a killed run
resumes (domain adapters are kept under --work); the table (`<out>.md`, `<out>.json`) and the plot (`<out>.png`: dev
metric against labelled examples, a line per start) are rebuilt after every cell.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import NullFormatter  # noqa: E402

from hub.atomic import atomic_file  # noqa: E402
from hub.bench.cells import append_cell, fingerprinted_spec  # noqa: E402
from hub.bench.report import machine  # noqa: E402
from hub.pretraining.corpus import task_texts  # noqa: E402
from hub.pretraining.masking import OBJECTIVES  # noqa: E402
from hub.pretraining.train import PretrainRecipe, pretrain  # noqa: E402
from hub.registry import Registry, load_registry  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
EPOCHS = {200: 10, 1000: 5, 5000: 2}  # about 130, 315 and 625 steps of 16: small budgets need more passes
SCRATCH = "scratch"


def epochs_for(budget: int) -> float:
    return EPOCHS.get(budget, max(2.0, round(2000 / budget, 1)))


def _fingerprint(registry: Registry, task: str, extra: dict[str, Any]) -> str:
    parts = [fingerprinted_spec(registry.task(task)), extra]
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def pretrain_cell(registry: Registry, task: str, objective: str, args: argparse.Namespace, folder: Path) -> dict:
    """The task's domain adapter for `objective`, pre-trained on its training texts into `folder`."""
    texts = task_texts(registry, task)[: args.corpus_texts]
    recipe = PretrainRecipe(objective=objective, adapter=registry.task(task).train.adapter.model_dump(),  # type: ignore[arg-type]
                            epochs=args.pretrain_epochs, seed=42)
    card = pretrain(registry, registry.task(task).backbone, texts, folder, recipe, progress=True)
    return {"kind": "pretrain", "task": task, "objective": objective, "corpus_texts": len(texts),
            "steps": card["steps"], "held_out": card["held_out"]}


def finetune_cell(registry: Registry, task: str, start: str, budget: int, seed: int, args: argparse.Namespace,
                  domain: Path | None) -> dict:
    """The task adapter trained on `budget` labelled examples from scratch or from `domain`, scored on dev."""
    from hub.training import train_task

    with tempfile.TemporaryDirectory() as scratch:
        report = train_task(registry, task, output=Path(scratch) / "adapter", progress=False, seed=seed,
                            max_train_examples=budget, epochs=epochs_for(budget), max_eval_examples=args.max_eval_examples,
                            init_from=str(domain) if domain else None, storage={})
    metric = registry.task(task).metric
    return {"kind": "finetune", "task": task, "start": start, "budget": budget, "seed": seed, "metric": metric,
            "score": report["metrics"][metric], "metrics": report["metrics"], "train_examples": report["train_examples"],
            "eval_examples": report["eval_examples"], "train_seconds": report["train_seconds"]}


def table(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fine-tuning rows (task, budget, start): the mean over seeds, each seed's score, and the gain over scratch."""
    grouped: dict[tuple[str, int, str], dict[int, float]] = {}
    for cell in cells:
        if cell["kind"] == "finetune":
            grouped.setdefault((cell["task"], cell["budget"], cell["start"]), {})[cell["seed"]] = cell["score"]
    rows = []
    for (task, budget, start), by_seed in sorted(grouped.items()):
        mean = statistics.fmean(by_seed.values())
        base = grouped.get((task, budget, SCRATCH))
        rows.append({"task": task, "budget": budget, "start": start, "mean": mean, "scores": list(by_seed.values()),
                     "seeds": list(by_seed),
                     "gain": None if start == SCRATCH or not base else mean - statistics.fmean(base.values())})
    return rows


def summary(rows: list[dict[str, Any]]) -> list[str]:
    """One line per (task, labelled examples): each start's mean over the seeds every start of the line has run, the
    pre-trained ones with their change from scratch in points; the README quotes it."""
    starts = [SCRATCH, *[o for o in OBJECTIVES if any(r["start"] == o for r in rows)]]
    by_key = {(r["task"], r["budget"], r["start"]): dict(zip(r["seeds"], r["scores"])) for r in rows}
    lines = ["| task | labelled | seeds | " + " | ".join(starts) + " |", "|---" * (len(starts) + 3) + "|"]
    for task, budget in sorted({(r["task"], r["budget"]) for r in rows}):
        runs = [by_key[task, budget, start] for start in starts if (task, budget, start) in by_key]
        seeds = sorted(set.intersection(*(set(run) for run in runs)))  # like with like while a seed is half run
        scratch = by_key.get((task, budget, SCRATCH))
        cells = []
        for start in starts:
            run = by_key.get((task, budget, start))
            if run is None or not seeds:
                cells.append("")
                continue
            mean = statistics.fmean(run[seed] for seed in seeds)
            gain = (f" ({100 * (mean - statistics.fmean(scratch[seed] for seed in seeds)):+.1f})"
                    if scratch is not None and start != SCRATCH else "")
            cells.append(f"{mean:.3f}{gain}")
        lines.append(f"| {task} | {budget:,} | {', '.join(map(str, seeds))} | " + " | ".join(cells) + " |")
    return lines


def markdown(cells: list[dict[str, Any]], command: str) -> str:
    rows = table(cells)
    pre = [c for c in cells if c["kind"] == "pretrain"]
    lines = [f"# Task-adaptive pre-training\n\n`{command}` ({machine()})\n",
             "## Summary: dev metric, mean over the seeds every start has run (change from scratch, points)\n",
             *summary(rows), "",
             "## Domain adapters (the task's training texts, labels left out)\n",
             "| task | objective | texts | steps | held-out masked-token accuracy | perplexity |", "|---|---|---|---|---|---|"]
    lines += [f"| {c['task']} | {c['objective']} | {c['corpus_texts']:,} | {c['steps']:,} | "
              f"{c['held_out']['accuracy']['before']:.3f} -> {c['held_out']['accuracy']['after']:.3f} | "
              f"{c['held_out']['perplexity']['before']:.0f} -> {c['held_out']['perplexity']['after']:.1f} |" for c in pre]
    lines += ["\n## Dev metric by labelled examples (mean over seeds; each seed in brackets)\n",
              "| task | labelled | start | dev | seeds | vs scratch |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['task']} | {r['budget']:,} | {r['start']} | {r['mean']:.4f} | "
              f"{', '.join(format(s, '.4f') for s in r['scores'])} | "
              f"{'' if r['gain'] is None else format(r['gain'], '+.4f')} |" for r in rows]
    return "\n".join(lines) + "\n\n![TAPT](tapt.png)\n"


def plot(cells: list[dict[str, Any]], path: Path) -> None:
    rows = table(cells)
    tasks = sorted({r["task"] for r in rows})
    if not tasks:
        return
    figure, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for start in [SCRATCH, *OBJECTIVES]:
            points = sorted((r["budget"], r["mean"], min(r["scores"]), max(r["scores"])) for r in rows
                            if r["task"] == task and r["start"] == start)
            if points:  # the mean over seeds, the bars spanning the seeds' scores
                budgets, means, lows, highs = zip(*points)
                ax.errorbar(budgets, means, yerr=[[m - lo for m, lo in zip(means, lows)],
                                                  [hi - m for m, hi in zip(means, highs)]],
                            marker="o", capsize=3, label=start, linestyle="--" if start == SCRATCH else "-")
        ax.set_xscale("log")
        budgets_run = sorted({r["budget"] for r in rows if r["task"] == task})
        ax.set_xticks(budgets_run, [f"{b:,}" for b in budgets_run])
        ax.xaxis.set_minor_formatter(NullFormatter())  # log axes label minor ticks too: they overlapped
        ax.set_xlabel("labelled examples")
        ax.set_ylabel(next(c["metric"] for c in cells if c.get("task") == task and c["kind"] == "finetune"))
        ax.set_title(task)
        ax.legend(fontsize=8)
    figure.tight_layout()
    with atomic_file(path) as staging:
        figure.savefig(staging, dpi=110, format="png")
    plt.close(figure)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", type=Path, default=ROOT / "registry.yaml")
    parser.add_argument("--tasks", nargs="+", default=["sst2", "tnews", "sentiment_zh"])
    parser.add_argument("--budgets", nargs="+", type=int, default=[200, 1000, 5000])
    parser.add_argument("--objectives", nargs="+", default=list(OBJECTIVES), choices=OBJECTIVES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 43])
    parser.add_argument("--corpus-texts", type=int, default=20000)
    parser.add_argument("--pretrain-epochs", type=float, default=1.0)
    parser.add_argument("--max-eval-examples", type=int, default=2000)
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "bert-adapter-hub" / "tapt")
    parser.add_argument("--out", type=Path, default=RESULTS / "tapt")
    args = parser.parse_args(argv)
    registry = load_registry(args.registry, strict_adapters=False)
    command = "python benchmarks/tapt.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    log = args.out.with_suffix(".cells.jsonl")
    done: dict[str, dict[str, Any]] = {}
    if log.exists():
        for line in log.read_text(encoding="utf-8").splitlines():
            try:
                cell = json.loads(line)
            except ValueError:  # a half-written last line of a killed run
                continue
            done[cell["key"]] = cell

    def record(cell: dict[str, Any], key: str, fingerprint: str) -> None:
        cell |= {"key": key, "fingerprint": fingerprint}
        append_cell(log, cell)
        done[key] = cell
        cells = [c for c in done.values() if c["task"] in args.tasks]
        with atomic_file(args.out.with_suffix(".md")) as staging:
            staging.write_text(markdown(cells, command.strip()), encoding="utf-8")
        with atomic_file(args.out.with_suffix(".json")) as staging:
            staging.write_text(json.dumps({"command": command.strip(), "machine": machine(), "rows": table(cells),
                                           "cells": cells}, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        plot(cells, args.out.with_suffix(".png"))

    for seed in args.seeds:
        for task in args.tasks:
            for budget in args.budgets:
                for start in [SCRATCH, *args.objectives]:
                    domain = None
                    if start != SCRATCH:
                        domain = args.work / f"{task}-{start}"
                        settings = {"objective": start, "corpus_texts": args.corpus_texts,
                                    "epochs": args.pretrain_epochs}
                        fingerprint = _fingerprint(registry, task, settings)
                        key = f"pretrain/{task}/{start}"
                        if done.get(key, {}).get("fingerprint") != fingerprint or not domain.is_dir():
                            record(pretrain_cell(registry, task, start, args, domain), key, fingerprint)
                    settings = {"budget": budget, "epochs": epochs_for(budget), "eval": args.max_eval_examples,
                                "start": start, "domain": done.get(f"pretrain/{task}/{start}", {}).get("fingerprint")}
                    fingerprint = _fingerprint(registry, task, settings)
                    key = f"finetune/{task}/{start}/{budget}/{seed}"
                    if done.get(key, {}).get("fingerprint") != fingerprint:
                        print(f"[tapt] {key}", flush=True)
                        record(finetune_cell(registry, task, start, budget, seed, args, domain), key, fingerprint)
    text = markdown([c for c in done.values() if c["task"] in args.tasks], command.strip())
    print(text)
    return text


if __name__ == "__main__":
    main()
