"""Did a trained model learn anything? Beside its dev metric: what answering the dev set's most frequent label every
time scores, and how often the model gives its own most frequent answer. Adapters trained on small budgets come out
predicting one class (an NLI task at chance, a relation task at its majority class) and a bare metric does not say
so; `hub train` prints this, warns, and writes it to the card.

For tasks whose answer is one label per row (classification, relation), a tag per word (tagging: the baseline tags
every word with the dev set's most frequent tag, 'O' for NER), regression (a constant prediction), and whole answers
per row: a span task's set of spans (the baseline answers the dev set's most frequent set, usually none: F1 0) and
a QA task's answer text (the baseline answers its most frequent gold answer; a model that answers nothing for
nearly every question is flagged by its answer share).
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from typing import Any

from .metrics import compute_metric
from .registry import TaskSpec

TOP_SHARE = 0.95  # one answer for this share of the dev rows, where the dev set is mixed: it learned little
HELP = ("train longer (--epochs), on more examples (--max-train-examples), or with another learning rate "
        "(--learning-rate); the task's recipe in registry.yaml keeps what works")


def check_learning(task: TaskSpec, predictions: Sequence[Any], references: Sequence[Any],
                   metrics: dict[str, float]) -> dict[str, Any] | None:
    """The check's numbers and, when the model looks like it learned nothing, a `warning`; None for other kinds."""
    if not predictions:
        return None
    if task.labels is not None and all(isinstance(p, Hashable) and not isinstance(p, tuple) for p in predictions):
        return _one_per_row(task, predictions, references, metrics, "rows")
    if task.labels is None and all(isinstance(p, (int, float)) for p in predictions):
        return _values(task, predictions, references)
    if task.labels is not None and _word_tags(predictions) and _word_tags(references):
        return _tags(task, predictions, references, metrics)
    if _span_sets(predictions) and _span_sets(references):
        return _one_per_row(task, predictions, references, metrics, "rows", key=_span_key, value=_span_value,
                            shown=_span_shown)
    if all(isinstance(p, str) for p in predictions) and _gold_texts(references):
        return _one_per_row(task, predictions, references, metrics, "questions",
                            shown=lambda answer: repr(answer) if answer else "nothing (no answer)",
                            gold=lambda golds: golds[0])
    return None


def _same(value: Any) -> Any:
    return value


def _one_per_row(task: TaskSpec, predictions: Sequence[Any], references: Sequence[Any], metrics: dict[str, float],
                 unit: str, key: Callable[[Any], Hashable] = _same, value: Callable[[Any], Any] = _same,
                 shown: Callable[[Any], str] | None = None, gold: Callable[[Any], Any] = _same) -> dict[str, Any]:
    """One answer per row: a label, or a whole answer (a span set, an answer text). `key` makes an answer hashable,
    `value` turns a key back into an answer the metric takes, `gold` picks a reference's answer (QA: the first
    acceptable text), `shown` writes a whole answer for a reader (None: a label, shown as its repr)."""
    majority, majority_count = Counter(key(gold(r)) for r in references).most_common(1)[0]
    top, top_count = Counter(key(p) for p in predictions).most_common(1)[0]
    baseline = compute_metric(task.metric, [value(majority)] * len(references), references, task.labels)
    if shown is not None:
        majority, top = shown(majority), shown(top)
    return _verdict(task, metrics, baseline, majority, majority_count / len(references), top,
                    top_count / len(predictions), unit, answers=shown is not None)


def _verdict(task: TaskSpec, metrics: dict[str, float], baseline: dict[str, float], majority: Any,
             majority_share: float, top: Any, top_share: float, unit: str, answers: bool = False) -> dict[str, Any]:
    """The numbers and the warning. `answers`: majority and top are whole answers already written out for a reader
    ('nothing (no span)'), not labels."""
    primary = next(iter(metrics))
    found: dict[str, Any] = {
        "majority_label": majority, "majority_share": majority_share, "majority_baseline": {primary: baseline[primary]},
        "top_prediction": top, "top_prediction_share": top_share, "unit": unit}
    if answers:
        found["answers"] = True
    shown_majority, shown_top = shown_answers(found)
    reasons = []
    if metrics[primary] <= baseline[primary]:
        reasons.append(f"its {primary} {metrics[primary]:.4f} is no better than always answering {shown_majority} "
                       f"({baseline[primary]:.4f})")
    if top_share >= TOP_SHARE > majority_share:
        reasons.append(f"it answers {shown_top} for {top_share:.0%} of the dev {unit}, where {shown_majority} is "
                       f"{majority_share:.0%} of them")
    if reasons:
        found["warning"] = f"task {task.name!r} may have learned little: {'; '.join(reasons)}. Try: {HELP}."
    return found


def _word_tags(sequences: Sequence[Any]) -> bool:
    """Lists of tags, one per word (a span task's lists of spans are not)."""
    return (all(isinstance(s, list) and all(isinstance(t, str) for t in s) for s in sequences)
            and any(len(s) for s in sequences))


def _tags(task: TaskSpec, predictions: Sequence[list[str]], references: Sequence[list[str]],
          metrics: dict[str, float]) -> dict[str, Any]:
    """`_one_per_row` over words: the baseline tags every word with the dev set's most frequent tag."""
    majority, majority_count = Counter(t for tags in references for t in tags).most_common(1)[0]
    top, top_count = Counter(t for tags in predictions for t in tags).most_common(1)[0]
    words = sum(len(tags) for tags in references)
    baseline = compute_metric(task.metric, [[majority] * len(tags) for tags in references], references, task.labels)
    return _verdict(task, metrics, baseline, majority, majority_count / words, top,
                    top_count / sum(len(tags) for tags in predictions), "words")


def _span_sets(sequences: Sequence[Any]) -> bool:
    """Lists of [start, end, label] spans, one list per row (span NER's answers)."""
    return all(isinstance(row, list) and all(isinstance(span, (list, tuple)) and len(span) == 3
                                             and isinstance(span[2], str) for span in row) for row in sequences)


def _gold_texts(references: Sequence[Any]) -> bool:
    """Lists of acceptable answer texts, one list per question (QA's references)."""
    return all(isinstance(r, list) and r and all(isinstance(t, str) for t in r) for r in references)


def _span_key(spans: Sequence[Sequence[Any]]) -> tuple:
    return tuple(sorted(tuple(span) for span in spans))


def _span_value(key: tuple) -> list[list[Any]]:
    return [list(span) for span in key]


def _span_shown(key: tuple) -> str:
    return "nothing (no span)" if not key else repr(_span_value(key))


def _values(task: TaskSpec, predictions: Sequence[Any], references: Sequence[Any]) -> dict[str, Any]:
    spread = statistics.pstdev(float(p) for p in predictions)
    target_spread = statistics.pstdev(float(r) for r in references)
    found: dict[str, Any] = {"prediction_std": spread, "reference_std": target_spread}
    if target_spread > 0 and spread < 0.01 * target_spread:
        found["warning"] = (f"task {task.name!r} may have learned little: its predictions hardly vary (standard "
                            f"deviation {spread:.3g} against {target_spread:.3g} for the dev labels). Try: {HELP}.")
    return found


def shown_answers(check: dict[str, Any]) -> tuple[str, str]:
    """The check's majority answer and the model's most frequent one, written for a reader."""
    if check.get("answers"):  # whole answers, written out when checked
        return check["majority_label"], check["top_prediction"]
    return repr(check["majority_label"]), repr(check["top_prediction"])


def card_lines(check: dict[str, Any] | None) -> str:
    """The check as card lines under the dev metrics ('' when there was none)."""
    if not check:
        return ""
    if "majority_label" in check:
        (name, value), = check["majority_baseline"].items()
        unit = check.get("unit", "rows")  # checks recorded before tagging was checked are over rows
        majority, top = shown_answers(check)
        what = "answer" if "answers" in check else "label"
        lines = [f"- always answering the dev set's most frequent {what} {majority} "
                 f"({check['majority_share']:.0%} of its {unit}) would score {name} {value:.4f}",
                 f"- the model's most frequent answer: {top}, on {check['top_prediction_share']:.0%} of the dev {unit}"]
    else:
        lines = [f"- standard deviation of the predictions: {check['prediction_std']:.3g} (dev labels: "
                 f"{check['reference_std']:.3g})"]
    if "warning" in check:
        lines.append(f"\n**Warning:** {check['warning']}")
    return "\n" + "\n".join(lines) + "\n"
