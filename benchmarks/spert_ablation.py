"""SpERT's ablations on the joint entity and relation kind, each variant trained on the same data, budget, seed and
adapter: negative samples (entities and relations) at a few counts, the relation context (the words between the two
entities, the whole sentence, none), and max vs mean span pooling. SpERT's strict scores on the full dev set.
Writes benchmarks/results/spert_ablation.{md,json}.

    python benchmarks/spert_ablation.py --tasks conll04 --max-train-examples 922 --epochs 5
"""

from __future__ import annotations

from pathlib import Path

from variants import run_variants, variant_arguments, variant_command, write_table

VARIANTS: dict[str, dict] = {"SpERT: 100 / 100 negatives, local context, max pooling": {"head": {}}}
for count in (10, 30):
    VARIANTS[f"{count} / {count} negatives"] = {"head": {"negative_entities": count, "negative_relations": count}}
VARIANTS["context: whole sentence ([CLS])"] = {"head": {"context": "sentence"}}
VARIANTS["context: none"] = {"head": {"context": "none"}}
VARIANTS["span pooling: mean"] = {"head": {"span_pooling": "mean"}}


def main(argv: list[str] | None = None) -> str:
    args = variant_arguments(__doc__, ["conll04"], 5.0, "spert_ablation").parse_args(argv)
    rows = run_variants(args, VARIANTS)
    header = (f"SpERT ablations: {args.max_train_examples} train sentences, {args.epochs} epoch(s), the registry's recipe "
              "otherwise, seed 42; relation micro F1 (strict: both entities' spans and types and the direction) first.\n"
              f"Command: `{variant_command('spert_ablation.py', args)}`")
    text = write_table(Path(args.out), header, rows, vars(args),
                       extra_columns=("relation_macro_f1", "boundaries_relation_f1", "entity_f1"))
    print(text)
    return text


if __name__ == "__main__":
    main()
