"""Each task's official metric (GLUE/CLUE), on scikit-learn and scipy."""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from .cjk import is_cjk


@dataclass(frozen=True)
class Metric:
    """`compute(predictions, references, labels)` -> scores; `primary` names the headline score."""

    primary: str
    compute: Callable[[Sequence, Sequence, Sequence[str] | None], dict[str, float]]


def _accuracy(pred, ref, labels) -> dict[str, float]:
    return {"accuracy": float(accuracy_score(ref, pred))}


def _binary_f1(pred, ref, labels) -> dict[str, float]:
    """F1 of the positive class, which is the second label (GLUE's MRPC/QQP convention)."""
    positive = labels[1] if labels else 1
    return {"f1": float(f1_score(ref, pred, pos_label=positive, average="binary")), **_accuracy(pred, ref, labels)}


def _macro_f1(pred, ref, labels) -> dict[str, float]:
    return {"macro_f1": float(f1_score(ref, pred, labels=labels, average="macro", zero_division=0)),
            **_accuracy(pred, ref, labels)}


def _matthews(pred, ref, labels) -> dict[str, float]:
    return {"matthews_correlation": float(matthews_corrcoef(ref, pred)), **_accuracy(pred, ref, labels)}


def _correlation(pred, ref, labels) -> dict[str, float]:
    pred, ref = np.asarray(pred, dtype=float), np.asarray(ref, dtype=float)
    if np.std(pred) == 0 or np.std(ref) == 0:
        return {"pearson": 0.0, "spearmanr": 0.0}
    return {"pearson": float(pearsonr(pred, ref)[0]), "spearmanr": float(spearmanr(pred, ref)[0])}


def _seqeval_tags(tags: Sequence[str]) -> list[str]:
    """BMES and untyped (word segmentation) tags in the BIOES form seqeval reads: M -> I, 'B' -> 'B-W'."""
    out = []
    for tag in tags:
        prefix, _, kind = tag.partition("-")
        out.append(tag if tag == "O" else f"{'I' if prefix == 'M' else prefix}-{kind or 'W'}")
    return out


def _entity_f1(pred, ref, labels) -> dict[str, float]:
    """Entity-level micro F1 (seqeval, conlleval rules), with precision, recall and F1 per entity type."""
    from seqeval.metrics import classification_report, precision_score, recall_score
    from seqeval.metrics import f1_score as entity_f1

    pred, ref = [_seqeval_tags(p) for p in pred], [_seqeval_tags(r) for r in ref]
    scores = {"f1": float(entity_f1(ref, pred)), "precision": float(precision_score(ref, pred)),
              "recall": float(recall_score(ref, pred))}
    report = classification_report(ref, pred, output_dict=True, zero_division=0)
    scores.update({f"f1_{kind}": float(row["f1-score"]) for kind, row in report.items() if "avg" not in kind})
    return scores


def _token_accuracy(pred, ref, labels) -> dict[str, float]:
    flat_pred = [tag for tags in pred for tag in tags]
    flat_ref = [tag for tags in ref for tag in tags]
    return {"token_accuracy": float(accuracy_score(flat_ref, flat_pred))}


def answer_tokens(text: str) -> list[str]:
    """SQuAD's answer normalisation (lower case, no punctuation, no English articles), with every CJK
    character a token of its own (CMRC2018's mixed segmentation), so one metric serves both languages."""
    tokens: list[str] = []
    word: list[str] = []
    for ch in text.lower():
        if ch.isspace() or unicodedata.category(ch).startswith(("P", "S")) or is_cjk(ch):
            if word:
                tokens.append("".join(word))
                word = []
            if is_cjk(ch):
                tokens.append(ch)
        else:
            word.append(ch)
    if word:
        tokens.append("".join(word))
    return [t for t in tokens if t not in ("a", "an", "the")]


def _prf(correct: int, predicted: int, gold: int) -> tuple[float, float, float]:
    """(F1, precision, recall) from counts; 0 where a count is 0."""
    precision, recall = correct / predicted if predicted else 0.0, correct / gold if gold else 0.0
    return (2 * precision * recall / (precision + recall) if correct else 0.0), precision, recall


def _token_f1(prediction: list[str], gold: list[str]) -> float:
    if not prediction or not gold:
        return float(prediction == gold)
    return _prf(sum((Counter(prediction) & Counter(gold)).values()), len(prediction), len(gold))[0]


def _squad(pred, ref, labels) -> dict[str, float]:
    """Exact match and token F1, each the best over the gold answers, averaged over questions."""
    em = f1 = 0.0
    for prediction, golds in zip(pred, ref):
        tokens = answer_tokens(prediction)
        em += max(float(tokens == answer_tokens(g)) for g in golds)
        f1 += max(_token_f1(tokens, answer_tokens(g)) for g in golds)
    return {"f1": f1 / len(pred), "exact_match": em / len(pred)}


def _semeval_macro_f1(pred, ref, labels) -> dict[str, float]:
    """SemEval-2010 Task 8's official score: macro F1 over the relation types except Other, where a
    prediction is correct only with the right direction ("Cause-Effect(e1,e2)" != "Cause-Effect(e2,e1)")."""
    kind = lambda label: label.split("(")[0]  # noqa: E731
    kinds = sorted({kind(label) for label in (labels or ref)} - {"Other"})
    f1s = {}
    for k in kinds:
        correct = sum(p == r and kind(p) == k for p, r in zip(pred, ref))
        f1s[k] = _prf(correct, sum(kind(p) == k for p in pred), sum(kind(r) == k for r in ref))[0]
    return {"macro_f1": sum(f1s.values()) / len(f1s), **_accuracy(pred, ref, labels),
            **{f"f1_{k}": v for k, v in f1s.items()}}


def _span_f1(pred, ref, labels) -> dict[str, float]:
    """Exact-match entity F1 over (start, end, type) sets, micro and per type; nested entities count each."""
    found = {(i, *span) for i, spans in enumerate(pred) for span in spans}
    gold = {(i, *span) for i, spans in enumerate(ref) for span in spans}

    def f1(p: set, g: set) -> tuple[float, float, float]:
        return _prf(len(p & g), len(p), len(g))

    score, precision, recall = f1(found, gold)
    kinds = sorted({s[-1] for s in found | gold})
    return {"f1": score, "precision": precision, "recall": recall,
            **{f"f1_{k}": f1({s for s in found if s[-1] == k}, {s for s in gold if s[-1] == k})[0] for k in kinds}}


def _micro_macro(found: set, gold: set, kind: Callable[[Any], str], prefix: str) -> dict[str, float]:
    """Micro F1 (with precision and recall) over all items and macro F1 over the kinds present in either set."""
    f1, precision, recall = _prf(len(found & gold), len(found), len(gold))
    kinds = sorted({kind(item) for item in found | gold})
    per_kind = {k: _prf(len({i for i in found & gold if kind(i) == k}), sum(kind(i) == k for i in found),
                        sum(kind(i) == k for i in gold))[0] for k in kinds}
    return {f"{prefix}_f1": f1, f"{prefix}_precision": precision, f"{prefix}_recall": recall,
            f"{prefix}_macro_f1": sum(per_kind.values()) / len(per_kind) if per_kind else 0.0,
            **{f"{prefix}_f1_{k}": v for k, v in per_kind.items()}}


def _joint_f1(pred, ref, labels) -> dict[str, float]:
    """SpERT's strict evaluation. Per sentence: entities (start, end, type) and relations ((head entity), (tail
    entity), type). An entity is right with its span and type; a relation with its type and both entities' spans
    and types; `boundaries_` relation scores ignore the entities' types (spans only)."""
    def entities(rows):
        return {(i, *entity) for i, row in enumerate(rows) for entity in row["entities"]}

    def relations(rows, typed: bool = True):
        return {(i, *(h if typed else h[:2]), *(t if typed else t[:2]), r)
                for i, row in enumerate(rows) for h, t, r in row["relations"]}

    last = lambda item: item[-1]  # noqa: E731
    found, gold = relations(pred, False), relations(ref, False)
    return {**_micro_macro(relations(pred), relations(ref), last, "relation"),
            **_micro_macro(entities(pred), entities(ref), last, "entity"),
            "boundaries_relation_f1": _prf(len(found & gold), len(found), len(gold))[0]}


def joint_as_records(rows: Sequence[dict[str, Any]]) -> list[dict[str, list[dict[str, Any]]]]:
    """Joint predictions or references as plain records (what the `evaluate` module's features hold)."""
    entity = lambda e: {"start": e[0], "end": e[1], "label": e[2]}  # noqa: E731
    return [{"entities": [entity(e) for e in row["entities"]],
             "relations": [{"head": entity(h), "tail": entity(t), "label": r} for h, t, r in row["relations"]]}
            for row in rows]


def joint_from_records(rows: Sequence[dict[str, Any]]) -> list[dict[str, list]]:
    """`joint_as_records` undone: entities as (start, end, type), relations as (head, tail, type)."""
    entity = lambda e: (e["start"], e["end"], e["label"])  # noqa: E731
    return [{"entities": [entity(e) for e in row["entities"]],
             "relations": [(entity(r["head"]), entity(r["tail"]), r["label"]) for r in row["relations"]]}
            for row in rows]


METRICS: dict[str, Metric] = {
    "joint_f1": Metric("relation_f1", _joint_f1),
    "span_f1": Metric("f1", _span_f1),
    "semeval_macro_f1": Metric("macro_f1", _semeval_macro_f1),
    "squad": Metric("f1", _squad),
    "entity_f1": Metric("f1", _entity_f1),
    "token_accuracy": Metric("token_accuracy", _token_accuracy),
    "accuracy": Metric("accuracy", _accuracy),
    "f1": Metric("f1", _binary_f1),
    "macro_f1": Metric("macro_f1", _macro_f1),
    "matthews_correlation": Metric("matthews_correlation", _matthews),
    "pearson_spearman": Metric("pearson", _correlation),
}


def compute_metric(name: str, predictions: Sequence, references: Sequence,
                   labels: Sequence[str] | None = None) -> dict[str, float]:
    """All scores of metric `name`; the primary one first."""
    if len(predictions) != len(references) or not predictions:
        raise ValueError(f"need as many predictions as references (got {len(predictions)} and {len(references)}), "
                         "and at least one")
    metric = METRICS[name]
    scores = metric.compute(list(predictions), list(references), list(labels) if labels else None)
    return {metric.primary: scores[metric.primary], **scores}


def evaluate_module_path() -> str:
    """The folder of the hub's `evaluate` module (hub/evaluate_modules/hub_metric):
    `evaluate.load(path, metric_name)`."""
    return str(Path(__file__).parent / "evaluate_modules" / "hub_metric")


@cache
def _evaluate_module(name: str):
    import evaluate  # imported on first use: it takes seconds

    return evaluate.load(evaluate_module_path(), name)


def evaluate_metric(name: str, predictions: Sequence, references: Sequence,
                    labels: Sequence[str] | None = None) -> dict[str, float]:
    """`compute_metric` through the `evaluate` library (the benchmark's path), from the local module."""
    if name == "span_f1":
        predictions, references = ([[{"start": s, "end": e, "label": t} for s, e, t in row] for row in rows]
                                   for rows in (predictions, references))
    if name == "joint_f1":
        predictions, references = joint_as_records(predictions), joint_as_records(references)
    return _evaluate_module(name).compute(predictions=list(predictions), references=list(references),
                                          labels=list(labels) if labels else None)
