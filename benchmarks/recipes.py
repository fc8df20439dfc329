"""Recipe search: which pooling, head and LoRA targets close the gap to full fine-tuning on the
embedded backbones. Trains each variant with the project's own trainer on the same subset and seed,
and writes benchmarks/results/recipes.{md,json}.

    python benchmarks/recipes.py --tasks sst2 cola --max-train-examples 4000 --epochs 1
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import hub
from hub.registry import load_registry
from hub.training import train_task

ALL_LINEAR = ["query", "key", "value", "dense"]  # the pooler is always excluded by the trainer
VARIANTS: dict[str, dict] = {
    "naive: [CLS], linear head, LoRA q/v": {"head": {"pooling": "cls", "projection": False}, "lora": {"target_modules": ["query", "value"]}},
    "mean, linear head, LoRA q/v": {"head": {"pooling": "mean", "projection": False}, "lora": {"target_modules": ["query", "value"]}},
    "mean, dense+tanh head, LoRA q/v": {"head": {"pooling": "mean", "projection": True}, "lora": {"target_modules": ["query", "value"]}},
    "mean, linear head, LoRA all linear": {"head": {"pooling": "mean", "projection": False}, "lora": {"target_modules": ALL_LINEAR}},
    "mean, dense+tanh head, LoRA all linear": {"head": {"pooling": "mean", "projection": True}, "lora": {"target_modules": ALL_LINEAR}},
    "mean, linear head, LoRA all linear r=4": {"head": {"pooling": "mean", "projection": False}, "lora": {"r": 4, "alpha": 8, "target_modules": ALL_LINEAR}},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["sst2", "cola"])
    parser.add_argument("--variants", nargs="*", help="substring filter on variant names")
    parser.add_argument("--max-train-examples", type=int, default=4000)
    parser.add_argument("--max-eval-examples", type=int)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--registry", default=str(hub.default_registry_path()))
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "recipes"))
    args = parser.parse_args()

    registry = load_registry(args.registry)
    rows = []
    for task_name in args.tasks:
        task = registry.task(task_name)
        for name, variant in VARIANTS.items():
            if args.variants and not any(v in name for v in args.variants):
                continue
            lora = {**task.train.lora.model_dump(), **variant["lora"]}
            variant_task = task.model_copy(update={"head": {**task.head, **variant["head"]}})
            variant_registry = registry.model_copy(update={"tasks": [variant_task]})
            with tempfile.TemporaryDirectory() as out:
                report = train_task(
                    variant_registry, task_name, output=Path(out) / task_name, progress=False,
                    epochs=args.epochs, learning_rate=args.learning_rate, lora=lora,
                    max_train_examples=args.max_train_examples, max_eval_examples=args.max_eval_examples,
                )
            rows.append({"task": task_name, "variant": name, "metric": task.metric, "score": next(iter(report["metrics"].values())),
                         "trainable": report["trainable_parameters"], "bytes": report["adapter_bytes"], "seconds": round(report["train_seconds"])})
            print(json.dumps(rows[-1]), flush=True)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))
    lines = [f"Recipe search: {args.max_train_examples} train examples, {args.epochs} epoch(s), lr {args.learning_rate}, seed 42.",
             f"Command: `python benchmarks/recipes.py --tasks {' '.join(args.tasks)} --max-train-examples {args.max_train_examples} "
             f"--epochs {args.epochs} --learning-rate {args.learning_rate}"
             + (f" --variants {' '.join(repr(v) for v in args.variants)} --out {args.out}`" if args.variants else "`"), "",
             "| task | variant | dev metric | score | trainable params | bytes | train s |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['task']} | {r['variant']} | {r['metric']} | {r['score']:.4f} | {r['trainable']:,} | {r['bytes']:,} | {r['seconds']} |" for r in rows]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
