"""The shipped adapters' table (README): dev metric, trainable parameters and bytes per task, next to the
backbone's size, read from each adapter's card (written by `hub train`, which measured them).

    python benchmarks/shipped_adapters.py        # prints markdown, writes benchmarks/results/shipped_adapters.md
"""

from __future__ import annotations

from pathlib import Path

import hub
from hub.backbone import resolve_source
from hub.card import card_metrics, card_report
from hub.registry import load_registry


def backbone_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.suffix in {".safetensors", ".bin"})


def main() -> None:
    registry = load_registry(hub.default_registry_path())
    lines = ["| task | backbone | dev metric | score | trainable params (share) | adapter + head bytes | train examples | reproduce |",
             "|---|---|---|---|---|---|---|---|"]
    for task in registry.tasks:
        folder = registry.adapter_dir(task)
        if not folder.is_dir():
            lines.append(f"| {task.name} | {task.backbone} | {task.metric} | not trained | | | | `hub train {task.name}` |")
            continue
        metrics, report = card_metrics(folder), card_report(folder)
        scores = ", ".join(f"{k} {v:.3f}" for k, v in list(metrics.items())[:3])  # per-type scores: see the card
        share = report["trainable_parameters"] / report["total_parameters"]
        lines.append(
            f"| {task.name} | {task.backbone} | {task.metric} | {scores} | {report['trainable_parameters']:,} ({share:.2%}) | "
            f"{report['adapter_bytes']:,} | {report['train_examples']:,} | `{report['command']}` |"
        )
    lines.append("")
    for spec in registry.backbones:
        location = Path(resolve_source(spec, registry))
        lines.append(f"Backbone `{spec.name}` ({spec.model_id}): {backbone_bytes(location):,} bytes of weights, shared by all its tasks.")
    text = "\n".join(lines) + "\n"
    out = Path(__file__).parent / "results" / "shipped_adapters.md"
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
