"""Extractive QA examples: `question`, `context`, `answers` ({text: [...], answer_start: [...]}, SQuAD style)."""

from __future__ import annotations

from typing import Any

from ..errors import DataError
from ..registry import TaskSpec

Example = dict[str, Any]


def qa_examples(rows: list[Any], task: TaskSpec, source: str) -> list[Example]:
    examples = []
    for index, row in enumerate(rows):
        where = f"{source}, question {index + 1}"
        try:
            question, context, answers = row["question"], row["context"], row["answers"]
            texts, starts = list(answers["text"]), [int(s) for s in answers["answer_start"]]
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{where}: a QA example needs question, context and answers {{text, answer_start}}.") from None
        for text, start in zip(texts, starts):
            if context[start:start + len(text)] != text:
                raise DataError(f"{where}: answer {text!r} is not at character {start} of the context.")
        examples.append({"question": question, "context": context, "answers": {"text": texts, "answer_start": starts}})
    return examples
