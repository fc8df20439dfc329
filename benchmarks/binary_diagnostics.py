"""Is a binary pair/sentence classifier better than always answering the majority class? Dev accuracy,
the majority share, ROC AUC, how often it answers the positive label, an exact McNemar test against the
majority-class answer, and (for pairs) the AUC of the frozen backbone's mean-pooled cosine similarity.
Writes benchmarks/results/<task>_diagnostics.md.

    python benchmarks/binary_diagnostics.py --task afqmc
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import torch
from scipy.stats import binomtest
from sklearn.metrics import roc_auc_score

import hub
from hub.backbone import load_backbone
from hub.data import load_split
from hub.registry import load_registry


def frozen_cosine(registry, task, rows) -> list[float]:
    """Cosine of the frozen backbone's mean-pooled vectors of the two texts (no adapter, no head)."""
    backbone = load_backbone(registry.backbone(task.backbone), registry, shared=False)
    first, second = task.inputs

    def embed(texts: list[str]) -> torch.Tensor:
        out = []
        with torch.inference_mode():
            for start in range(0, len(texts), 128):
                batch = backbone.tokenizer(texts[start:start + 128], padding=True, truncation=True, max_length=128, return_tensors="pt")
                hidden = backbone.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).float()
                out.append((hidden * mask).sum(1) / mask.sum(1))
        return torch.cat(out)

    return torch.nn.functional.cosine_similarity(embed(rows[first]), embed(rows[second])).tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="afqmc")
    parser.add_argument("--registry", default=str(hub.default_registry_path()))
    args = parser.parse_args()

    registry = load_registry(args.registry)
    task = registry.task(args.task)
    negative, positive = task.labels
    rows = load_split(registry, task, "dev")
    served = hub.Hub(registry)
    results = served.run_many([(task.name, tuple(row[name] for name in task.inputs)) for row in rows])
    gold = [label == positive for label in rows["label"]]
    said = [r["label"] == positive for r in results]
    p_positive = [r["score"] if r["label"] == positive else 1 - r["score"] for r in results]
    majority = Counter(gold).most_common(1)[0][0]
    wins = sum(s != majority and s == g for s, g in zip(said, gold))
    losses = sum(s != majority and s != g for s, g in zip(said, gold))
    lines = [f"Task `{task.name}`, dev split ({len(rows):,} rows), the shipped adapter through the router.",
             f"Command: `python benchmarks/binary_diagnostics.py --task {task.name}`", "",
             "| measure | value |", "|---|---|",
             f"| accuracy | {sum(s == g for s, g in zip(said, gold)) / len(gold):.4f} |",
             f"| majority class share ({positive if majority else negative!r}) | {sum(g == majority for g in gold) / len(gold):.4f} |",
             f"| ROC AUC of P({positive}) | {roc_auc_score(gold, p_positive):.4f} |",
             f"| answers {positive!r} | {sum(said) / len(said):.2%} |",
             f"| vs always {positive if majority else negative!r}: rows it gets right / wrong where they differ | {wins} / {losses} |",
             f"| exact McNemar p (two-sided) | {binomtest(wins, wins + losses, 0.5).pvalue:.3g} |"]
    if len(task.inputs) == 2:
        lines.append(f"| ROC AUC of the frozen backbone's cosine (no adapter) | {roc_auc_score(gold, frozen_cosine(registry, task, rows)):.4f} |")
    text = "\n".join(lines) + "\n"
    out = Path(__file__).parent / "results" / f"{task.name}_diagnostics.md"
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
