"""SpERT's failure modes, measured on a joint entity-relation task's dev set (the notes list three: boundaries off by
a token, relations predicted for pairs the sentence does not relate, missing annotations).

Every predicted relation that is wrong (a false positive) and every gold relation missed (a false negative) is put
in one class, the first that applies:
- boundary: an entity of the pair overlaps the right entity but its span differs (off by a word or more);
- entity type: the spans are right, an entity's type is not;
- direction: the reverse pair holds that relation;
- relation type: both entities are right, another relation type holds between them;
- no such pair: (false positive) the sentence relates neither way those entities; (false negative) an entity of the
  gold pair was not found at all.
Also: the share of predicted relations on sentences that have no gold relation at all.

    python benchmarks/spert_failures.py                  # the shipped conll04 adapter on CoNLL04 dev
    python benchmarks/spert_failures.py --keep-overlapping   # the same, every overlapping entity span kept (SpERT's)

Writes benchmarks/results/spert_failures[_overlapping].{md,json}, with the strict scores beside.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

import hub
from hub.atomic import atomic_file
from hub.data import load_split
from hub.metrics import compute_metric

RESULTS = Path(__file__).resolve().parent / "results"
Entity = tuple[int, int, str]
Relation = tuple[Entity, Entity, str]
CLASSES = ("boundary", "entity type", "direction", "relation type", "no such pair")


def _overlaps(a: Entity, b: Entity) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def classify(relation: Relation, others: list[Relation], entities: list[Entity]) -> str:
    """Why `relation` (wrong on one side) is not in `others` (the other side's relations, whose entities are
    `entities`)."""
    head, tail, kind = relation
    for other_head, other_tail, _ in others:
        if ((_overlaps(head, other_head) and _overlaps(tail, other_tail))
                and (head[:2] != other_head[:2] or tail[:2] != other_tail[:2])):
            return "boundary"
    same_spans = [(h, t, k) for h, t, k in others if h[:2] == head[:2] and t[:2] == tail[:2]]
    if any(h != head or t != tail for h, t, _ in same_spans):
        return "entity type"
    if any(h == tail and t == head and k == kind for h, t, k in others):
        return "direction"
    if same_spans:
        return "relation type"
    return "no such pair"


def failures(predictions: list[dict[str, list]], references: list[dict[str, list]]) -> dict[str, Any]:
    """The counts and shares of each class, for false positives and false negatives, and predicted relations on
    sentences without a gold relation."""
    false_positive, false_negative = Counter[str](), Counter[str]()
    on_unrelated = predicted = 0
    for prediction, reference in zip(predictions, references):
        predicted += len(prediction["relations"])
        if not reference["relations"]:
            on_unrelated += len(prediction["relations"])
        for relation in prediction["relations"]:
            if relation not in reference["relations"]:
                false_positive[classify(relation, reference["relations"], reference["entities"])] += 1
        for relation in reference["relations"]:
            if relation not in prediction["relations"]:
                found = classify(relation, prediction["relations"], prediction["entities"])
                if found == "no such pair" and all(any(_overlaps(e, p) for p in prediction["entities"])
                                                   for e in relation[:2]):
                    found = "relation missed"  # both entities found (or overlapped), no relation predicted
                false_negative[found] += 1

    def shares(counts: Counter[str]) -> dict[str, dict[str, float]]:
        total = sum(counts.values())
        return {name: {"count": count, "share": round(count / total, 4)} for name, count in counts.most_common()}

    return {"predicted_relations": predicted, "on_sentences_without_gold_relation": on_unrelated,
            "share_on_sentences_without_gold_relation": round(on_unrelated / predicted, 4) if predicted else 0.0,
            "false_positives": shares(false_positive), "false_negatives": shares(false_negative)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", type=Path, default=None)
    parser.add_argument("--task", default="conll04")
    parser.add_argument("--keep-overlapping", action="store_true",
                        help="serve with head.nested: every span classified as an entity is kept, overlapping or not")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    out = args.out or RESULTS / ("spert_failures_overlapping" if args.keep_overlapping else "spert_failures")
    served = hub.Hub.load(args.registry or hub.default_registry_path())
    runtime = served.runtime(args.task)
    runtime.head.config.nested = args.keep_overlapping
    examples = runtime.examples
    dev = list(load_split(served.registry, runtime.spec, "dev"))
    results = served.run(args.task, [examples.request(example) for example in dev])
    assert isinstance(results, list)
    predictions, references = [examples.prediction(r) for r in results], [examples.reference(e) for e in dev]
    command = (f"python benchmarks/spert_failures.py --task {args.task}"
               + (f" --registry {args.registry}" if args.registry else "")
               + (" --keep-overlapping" if args.keep_overlapping else ""))
    scores = compute_metric(runtime.spec.metric, predictions, references)
    report = {"command": command, "task": args.task, "sentences": len(dev), "keep_overlapping": args.keep_overlapping,
              "scores": {key: round(value, 4) for key, value in scores.items()}, **failures(predictions, references)}
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(out.with_suffix(".json")) as staging:
        staging.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")

    def table(side: str) -> str:
        rows = "\n".join(f"| {name} | {value['count']} | {value['share']:.1%} |"
                         for name, value in report[side].items())
        return f"| class | count | share |\n|---|---|---|\n{rows}"

    shown = ", ".join(f"{key} {report['scores'][key]:.4f}" for key in ("relation_f1", "relation_precision",
                                                                       "relation_recall", "entity_f1"))
    text = (f"# SpERT failure modes: {args.task} dev ({len(dev)} sentences)\n\n`{command}`\n\n{shown}.\n\n"
            f"Predicted relations: {report['predicted_relations']}; on sentences with no gold relation: "
            f"{report['on_sentences_without_gold_relation']} "
            f"({report['share_on_sentences_without_gold_relation']:.1%})."
            f"\n\n## Wrong predicted relations (false positives)\n\n{table('false_positives')}\n\n"
            f"## Missed gold relations (false negatives)\n\n{table('false_negatives')}\n")
    with atomic_file(out.with_suffix(".md")) as staging:
        staging.write_text(text, encoding="utf-8")
    print(text)
    return report


if __name__ == "__main__":
    main()
