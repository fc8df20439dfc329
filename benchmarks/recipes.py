"""Recipe search: which pooling, head and LoRA targets close the gap to full fine-tuning on the
embedded backbones. Trains each variant with the project's own trainer on the same subset and seed,
and writes benchmarks/results/recipes.{md,json}.

    python benchmarks/recipes.py --tasks sst2 cola --max-train-examples 4000 --epochs 1
"""

from __future__ import annotations

from pathlib import Path

from variants import run_variants, variant_arguments, variant_command, write_table

ALL_LINEAR = ["query", "key", "value", "dense"]  # the pooler is always excluded by the trainer
VARIANTS: dict[str, dict] = {
    "naive: [CLS], linear head, LoRA q/v": {"head": {"pooling": "cls", "projection": False}, "lora": {"target_modules": ["query", "value"]}},
    "mean, linear head, LoRA q/v": {"head": {"pooling": "mean", "projection": False}, "lora": {"target_modules": ["query", "value"]}},
    "mean, dense+tanh head, LoRA q/v": {"head": {"pooling": "mean", "projection": True}, "lora": {"target_modules": ["query", "value"]}},
    "mean, linear head, LoRA all linear": {"head": {"pooling": "mean", "projection": False}, "lora": {"target_modules": ALL_LINEAR}},
    "mean, dense+tanh head, LoRA all linear": {"head": {"pooling": "mean", "projection": True}, "lora": {"target_modules": ALL_LINEAR}},
    "mean, siamese pair [u, v, |u-v|, u*v], LoRA all linear": {"head": {"pooling": "mean", "pair": "siamese"}, "lora": {"target_modules": ALL_LINEAR}},
    "mean, linear head, LoRA all linear r=4": {"head": {"pooling": "mean", "projection": False}, "lora": {"r": 4, "alpha": 8, "target_modules": ALL_LINEAR}},
}


def main() -> None:
    parser = variant_arguments(__doc__, ["sst2", "cola"], 1.0, "recipes")
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    args = parser.parse_args()
    rows = run_variants(args, VARIANTS, learning_rate=args.learning_rate)
    header = "\n".join([
        f"Recipe search: {args.max_train_examples} train examples, {args.epochs} epoch(s), lr {args.learning_rate}, seed 42.",
        f"Command: `{variant_command('recipes.py', args)} --learning-rate {args.learning_rate}"
        + (f" --variants {' '.join(repr(v) for v in args.variants)} --out {args.out}`" if args.variants else "`"),
    ])
    print(write_table(Path(args.out), header, rows, vars(args)))


if __name__ == "__main__":
    main()
