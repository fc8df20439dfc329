"""Relation classification between given entities, the three ways of the notes, on the same data, budget, seed and
adapter: entity markers (`@ head @`, `# tail #`), pooled entity tokens, and position embeddings of the relation
added in the embedding layer. Writes benchmarks/results/relation_methods.{md,json}.

    python benchmarks/relation_methods.py --tasks semeval2010 --max-train-examples 8000 --epochs 1
"""

from __future__ import annotations

from pathlib import Path

from variants import run_variants, variant_arguments, variant_command, write_table

VARIANTS: dict[str, dict] = {
    "entity markers": {"head": {"method": "markers"}},
    "pooled entity tokens": {"head": {"method": "pooled"}},
    "position embeddings (head / tail marks added to the input embeddings)": {"head": {"method": "position"}},
}


def main(argv: list[str] | None = None) -> str:
    args = variant_arguments(__doc__, ["semeval2010"], 1.0, "relation_methods").parse_args(argv)
    rows = run_variants(args, VARIANTS)
    header = (f"Relation classification methods: {args.max_train_examples} train sentences, {args.epochs} epoch(s), "
              "the registry's recipe otherwise, seed 42.\n"
              f"Command: `{variant_command('relation_methods.py', args)}`")
    text = write_table(Path(args.out), header, rows, vars(args), extra_columns=("accuracy",))
    print(text)
    return text


if __name__ == "__main__":
    main()
