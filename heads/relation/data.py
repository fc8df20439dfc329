"""Relation examples: `text`, `head` and `tail` character spans (end exclusive), `label`.

Rows may give a marked text (`<e1>..</e1>`, `<e2>..</e2>`, SemEval style) or a text with head and tail
as [start, end] spans or as mention strings (found in the text; the tail's first occurrence that does
not overlap the head).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hub.errors import DataError, InputError

from .codec import parse_marked

if TYPE_CHECKING:
    from hub.registry import TaskSpec

Example = dict[str, Any]


def relation_examples(rows: list[Any], task: TaskSpec, source: str) -> list[Example]:
    assert task.data is not None and task.labels is not None  # hub.data reads a task with data; relation has labels
    columns = task.data.columns
    keys = {name: columns.get(name, name) for name in ("text", "head", "tail", "label")}
    mapping = task.data.label_values or {}
    examples = []
    for index, row in enumerate(rows):
        where = f"{source}, example {index + 1}"
        try:
            text, raw = row[keys["text"]], str(row[keys["label"]])
            label = mapping.get(raw) or raw  # a raw value mapped to null never gets here: hub.data dropped its rows
        except (KeyError, IndexError, TypeError):
            raise DataError(f"{where}: no {keys['text']!r} / {keys['label']!r} column; set data.columns.") from None
        if label not in task.labels:
            raise DataError(
                f"{where}: relation {label!r} is not among the task's labels; add it or map it with data.label_values.")
        try:
            head, tail = _spans(row, keys, text) if isinstance(row, dict) and keys["head"] in row else _marked(text)
        except InputError as exc:
            raise DataError(f"{where}: {exc}") from None
        examples.append({"text": head[0], "head": list(head[1]), "tail": list(tail), "label": label})
    return examples


def _marked(text: str) -> tuple[tuple[str, tuple[int, int]], tuple[int, int]]:
    request = parse_marked(text)
    return (request.text, request.head), request.tail


def _spans(row: dict, keys: dict[str, str | int], text: str) -> tuple[tuple[str, tuple[int, int]], tuple[int, int]]:
    def locate(value: Any, avoid: tuple[int, int] | None) -> tuple[int, int]:
        if isinstance(value, (list, tuple)) and len(value) == 2:
            return int(value[0]), int(value[1])
        if not isinstance(value, str) or not value:
            raise InputError(f"an entity must be a [start, end] span or a mention string; got {value!r}")
        start = text.find(value)
        while start >= 0 and avoid and start < avoid[1] and start + len(value) > avoid[0]:
            start = text.find(value, start + 1)
        if start < 0:
            raise InputError(f"entity {value!r} is not in the text")
        return start, start + len(value)

    head = locate(row[keys["head"]], None)
    return (text, head), locate(row[keys["tail"]], head)
