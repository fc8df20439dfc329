"""NER heads side by side on the same data, subset, seed and LoRA: softmax vs CRF, first sub-word vs
every sub-word, tagging vs span-based (exact-match entity F1 either way: seqeval for tags, span F1 for
spans; they agree on data without nested entities). Writes benchmarks/results/ner_heads.{md,json}.

    python benchmarks/ner_heads.py --tasks conll2003 --max-train-examples 4000 --epochs 2
"""

from __future__ import annotations

from pathlib import Path

from variants import run_variants, variant_arguments, variant_command, write_table

VARIANTS: dict[str, dict] = {
    "tagging, softmax": {"head": {"crf": False}},
    "tagging, CRF": {"head": {"crf": True}},
    "tagging, softmax, all sub-words": {"head": {"crf": False, "label_all_subwords": True}},
    "tagging, CRF, all sub-words": {"head": {"crf": True, "label_all_subwords": True}},
}
for negatives in (10, 30, 100):  # non-entity spans sampled per sentence: SpERT's 100 under-trains on short budgets
    VARIANTS[f"span-based (SpERT), width <= 8, {negatives} negatives"] = {
        "kind": "span_ner", "head": {"max_span_width": 8, "negative_samples": negatives}, "metric": "span_f1",
        "labels": lambda task: sorted({tag.split("-", 1)[1] for tag in task.labels if "-" in tag}),
    }


def main() -> None:
    args = variant_arguments(__doc__, ["conll2003"], 2.0, "ner_heads").parse_args()
    rows = run_variants(args, VARIANTS)
    header = (f"NER heads: {args.max_train_examples} train sentences, {args.epochs} epoch(s), the registry's recipe otherwise, seed 42; "
              f"entity F1 (seqeval) on the full dev set.\nCommand: `{variant_command('ner_heads.py', args)}`")
    print(write_table(Path(args.out), header, rows, vars(args), extra_columns=("precision", "recall")))


if __name__ == "__main__":
    main()
