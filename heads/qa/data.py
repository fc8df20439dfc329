"""Extractive QA examples: `question`, `context`, `answers` ({text: [...], answer_start: [...]}, SQuAD style).

Real files have slips (CMRC2018's trial set points some answers at the wrong character): an
`answer_start` that does not point at its text moves to the nearest occurrence of the text; an answer
absent from the context gets -1 and only serves evaluation (its text is still a gold answer).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from hub.errors import DataError

if TYPE_CHECKING:
    from hub.registry import TaskSpec

Example = dict[str, Any]


def qa_examples(rows: list[Any], task: TaskSpec, source: str) -> list[Example]:
    examples, empty = [], []
    for index, row in enumerate(rows):
        where = f"{source}, question {index + 1}"
        try:
            question, context, answers = row["question"], row["context"], row["answers"]
            texts, starts = list(answers["text"]), [int(s) for s in answers["answer_start"]]
        except (KeyError, TypeError, ValueError):
            raise DataError(
                f"{where}: a QA example needs question, context and answers {{text, answer_start}}.") from None
        if not isinstance(question, str) or not isinstance(context, str):
            raise DataError(f"{where}: question and context must be strings.")
        if not question.strip() or not context.strip():
            empty.append(index + 1)  # nothing to ask or answer from: skipped, and said so below
            continue
        starts = [_locate(context, text, start) for text, start in zip(texts, starts)]
        examples.append({"question": question, "context": context, "answers": {"text": texts, "answer_start": starts}})
    if empty:
        numbers = ", #".join(map(str, empty[:5]))
        warnings.warn(f"{source}: skipped {len(empty)} question(s) with an empty question or context (#{numbers})",
                      stacklevel=2)
    return examples


def _locate(context: str, text: str, start: int) -> int:
    if context[start:start + len(text)] == text:
        return start
    found = [i for i in range(len(context)) if context.startswith(text, i)]
    return min(found, key=lambda i: abs(i - start)) if found else -1
