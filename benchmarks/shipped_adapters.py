"""The shipped adapters' table (README): dev metric, trainable parameters and bytes per task, next to the
backbone's size, read from each adapter's card (written by `hub train`, which measured them) and its folder.

    python benchmarks/shipped_adapters.py                    # writes benchmarks/results/shipped_adapters.{md,json}
    python benchmarks/shipped_adapters.py --before benchmarks/results/shipped_adapters_before.json
                                                             # + before/after columns against an earlier JSON
    python benchmarks/shipped_adapters.py --json-only --out benchmarks/results/shipped_adapters_before.json
                                                             # a snapshot to compare a retrained set with

The share is the whole folder (adapter, head, configs and card) over the backbone's weight bytes: what one more
task costs to store. Bytes in memory are the tensors the task holds once served (`TaskRuntime.resident_bytes`:
adapter and head as kept, beside the shared backbone; the Python objects around them are not counted here:
benchmarks/serving.py measures a resident task by RSS, objects included).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import hub
from hub.adapter_folder import AdapterFolder
from hub.backbone import resolve_source
from hub.card import card_metrics, card_report
from hub.registry import load_registry

RESULTS = Path(__file__).parent / "results"


def backbone_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.suffix in {".safetensors", ".bin"})


def collect() -> dict[str, Any]:
    """Per shipped task: its card's metrics and report, its folder's bytes; per backbone: its weight bytes."""
    registry = load_registry(hub.default_registry_path())
    served = hub.Hub(registry)
    backbones = {spec.name: backbone_bytes(Path(resolve_source(spec, registry))) for spec in registry.backbones}
    ids = {spec.name: spec.model_id for spec in registry.backbones}
    tasks = {}
    for task in registry.tasks:
        folder = registry.adapter_dir(task)
        if not folder.is_dir():
            tasks[task.name] = {"backbone": task.backbone, "metric": task.metric, "trained": False}
            continue
        metrics, report = card_metrics(folder), card_report(folder)
        recipe = (report.get("train") or {})
        tasks[task.name] = {
            "backbone": task.backbone, "metric": task.metric, "trained": True, "metrics": metrics,
            "score": next(iter(metrics.values())), "trainable_parameters": report["trainable_parameters"],
            "total_parameters": report["total_parameters"], "adapter_bytes": report["adapter_bytes"],
            "folder_bytes": AdapterFolder(folder).nbytes(), "train_examples": report["train_examples"],
            "command": report["command"], "adapter": recipe.get("adapter"),
            "share": AdapterFolder(folder).nbytes() / backbones[task.backbone],
            "resident_bytes": served.runtime(task.name).resident_bytes,
        }
    return {"backbones": backbones, "backbone_ids": ids, "tasks": tasks}


def markdown(found: dict[str, Any], before: dict[str, Any] | None) -> str:
    columns = ["task", "backbone", "dev metric", "score", "trainable params", "adapter + head bytes",
               "folder bytes (share of backbone)", "served: bytes in memory (/ folder)", "train examples", "reproduce"]
    if before:
        columns[4:4] = ["score before", "change (points)"]
        columns.insert(-3, "folder bytes before")
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for name, row in found["tasks"].items():
        if not row["trained"]:
            lines.append(f"| {name} | {row['backbone']} | {row['metric']} | not trained |" + " |" * (len(columns) - 4)
                         + f" `hub train {name}` |")
            continue
        scores = ", ".join(f"{k} {v:.3f}" for k, v in list(row["metrics"].items())[:3])  # per-type scores: the card
        cells = [name, row["backbone"], row["metric"], scores, f"{row['trainable_parameters']:,}",
                 f"{row['adapter_bytes']:,}", f"{row['folder_bytes']:,} ({row['share']:.3%})",
                 f"{row['resident_bytes']:,} ({row['resident_bytes'] / row['folder_bytes']:.2f})",
                 f"{row['train_examples']:,}", f"`{row['command']}`"]
        old = (before or {}).get("tasks", {}).get(name)
        if before:
            known = bool(old and old.get("trained"))
            cells[4:4] = [f"{old['score']:.3f}" if known else "-",
                          f"{100 * (row['score'] - old['score']):+.1f}" if known else "-"]
            cells.insert(-3, f"{old['folder_bytes']:,}" if known else "-")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for name, size in found["backbones"].items():
        lines.append(f"Backbone `{name}` ({found['backbone_ids'][name]}): {size:,} bytes of weights, shared by all its "
                     "tasks; 0.2% of it is "
                     f"{int(0.002 * size):,} bytes.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", type=Path, help="an earlier run's JSON: adds before/after columns")
    parser.add_argument("--out", type=Path, default=RESULTS / "shipped_adapters.json")
    parser.add_argument("--json-only", action="store_true", help="write the JSON snapshot only")
    args = parser.parse_args(argv)
    found = collect()
    args.out.write_text(json.dumps(found, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    if args.json_only:
        return
    before = json.loads(args.before.read_text(encoding="utf-8")) if args.before else None
    text = markdown(found, before)
    args.out.with_suffix(".md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
