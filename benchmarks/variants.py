"""Shared by the recipe benchmarks: train head/LoRA variants of a task on the same subset and seed with
the project's own trainer, and write the comparison as markdown + JSON."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import hub
from hub.registry import Registry, load_registry
from hub.training import train_task


def variant_arguments(description: str, tasks: list[str], epochs: float, out: str) -> argparse.ArgumentParser:
    """The options every variant benchmark takes."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=tasks)
    parser.add_argument("--variants", nargs="*", help="substring filter on variant names")
    parser.add_argument("--max-train-examples", type=int, default=4000)
    parser.add_argument("--max-eval-examples", type=int)
    parser.add_argument("--epochs", type=float, default=epochs)
    parser.add_argument("--registry", default=str(hub.default_registry_path()))
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / out))
    return parser


def variant_command(script: str, args: argparse.Namespace) -> str:
    """The command line that reruns a variant benchmark on the same tasks and budget."""
    return (f"python benchmarks/{script} --tasks {' '.join(args.tasks)} --max-train-examples {args.max_train_examples} "
            f"--epochs {args.epochs}")


def run_variants(args: argparse.Namespace, variants: dict[str, dict[str, Any]], **train: Any) -> list[dict[str, Any]]:
    """Every selected variant of every task named in `args`."""
    registry = load_registry(args.registry)
    chosen = {n: v for n, v in variants.items() if not args.variants or any(f in n for f in args.variants)}
    rows = []
    for task_name in args.tasks:
        rows += train_variants(registry, task_name, chosen, epochs=args.epochs, max_train_examples=args.max_train_examples,
                               max_eval_examples=args.max_eval_examples, **train)
    return rows


def train_variants(registry: Registry, task_name: str, variants: dict[str, dict[str, Any]], **train: Any) -> list[dict[str, Any]]:
    """One row per variant (`{"head": {...}, "lora": {...}}` overrides, or another `kind` with its `labels(task)`
    and `metric`): dev score, sizes, seconds."""
    task = registry.task(task_name)
    rows = []
    for name, variant in variants.items():
        lora = {**task.train.adapter.model_dump(), **variant.get("lora", {})}
        if variant.get("kind", task.kind) == task.kind:
            update = {"head": {**task.head, **variant.get("head", {})}}
        else:
            update = {"kind": variant["kind"], "head": variant.get("head", {}), "labels": variant["labels"](task), "metric": variant["metric"]}
        variant_task = task.model_copy(update=update)
        variant_registry = registry.model_copy(update={"tasks": [variant_task]})
        with tempfile.TemporaryDirectory() as out:
            report = train_task(variant_registry, task_name, output=Path(out) / task_name, progress=False, lora=lora, **train)
        rows.append({"task": task_name, "variant": name, "metric": variant_task.metric, "score": next(iter(report["metrics"].values())),
                     "metrics": report["metrics"], "trainable": report["trainable_parameters"], "bytes": report["adapter_bytes"],
                     "seconds": round(report["train_seconds"])})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def write_table(out: Path, header: str, rows: list[dict[str, Any]], args: dict[str, Any], extra_columns: tuple[str, ...] = ()) -> str:
    """benchmarks/results/<name>.{md,json}; returns the markdown."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"args": args, "rows": rows}, indent=2, ensure_ascii=False))
    columns = "| task | variant | dev metric | score | " + "".join(f"{c} | " for c in extra_columns) + "trainable params | bytes | train s |"
    lines = [header, "", columns, "|" + "---|" * (columns.count("|") - 1)]
    for r in rows:
        extra = "".join(f"{r['metrics'].get(c, float('nan')):.4f} | " for c in extra_columns)
        lines.append(f"| {r['task']} | {r['variant']} | {r['metric']} | {r['score']:.4f} | {extra}{r['trainable']:,} | {r['bytes']:,} | {r['seconds']} |")
    text = "\n".join(lines) + "\n"
    out.with_suffix(".md").write_text(text)
    return text
