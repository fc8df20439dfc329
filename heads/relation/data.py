"""Relation examples: `text`, `head` and `tail` character spans (end exclusive), `label`.

Rows may give a marked text (`<e1>..</e1>`, `<e2>..</e2>`, SemEval style), or a text with head and tail columns,
named (JSON lines, files with a header) or numbered (`header: false`), each either a [start, end] span or a
mention string. A mention is found in the text: the head at its first occurrence, the tail at its first occurrence
that does not overlap the head, unless `head_start` / `tail_start` columns give the mention's character offset.
Rows whose mention is not in the text are left out and counted; rows whose mention occurs more than once are kept
and counted (the occurrence used is the one above), so `hub train` reports both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hub.errors import DataError, InputError

from ..rows import NOTED, skipped
from .codec import parse_marked

if TYPE_CHECKING:
    from hub.registry import TaskSpec

Example = dict[str, Any]
Span = tuple[int, int]
MISSING = object()


def relation_examples(rows: list[Any], task: TaskSpec, source: str) -> list[Example]:
    assert task.data is not None and task.labels is not None  # hub.data reads a task with data; relation has labels
    columns = task.data.columns
    keys = {name: columns.get(name, name) for name in ("text", "head", "tail", "label", "head_start", "tail_start")}
    mapping = task.data.label_values or {}
    examples = []
    for index, row in enumerate(rows):
        where = f"{source}, example {index + 1}"
        text, raw = _field(row, keys["text"]), _field(row, keys["label"])
        if text is MISSING or raw is MISSING:
            raise DataError(f"{where}: no {keys['text']!r} / {keys['label']!r} column; set data.columns (names, or "
                            "0-based numbers with header: false).")
        label = mapping.get(str(raw)) or str(raw)  # a raw value mapped to null never gets here: hub.data dropped it
        if label not in task.labels:
            raise DataError(
                f"{where}: relation {label!r} is not among the task's labels; add it or map it with data.label_values.")
        if not isinstance(text, str):
            raise DataError(f"{where}: the text column {keys['text']!r} holds {type(text).__name__}, not a text.")
        head_value, tail_value = _field(row, keys["head"]), _field(row, keys["tail"])
        try:
            if head_value is MISSING and tail_value is MISSING:
                request = parse_marked(text)
                examples.append({"text": request.text, "head": list(request.head), "tail": list(request.tail),
                                 "label": label})
                continue
            if head_value is MISSING or tail_value is MISSING:
                raise InputError(f"a {'tail' if head_value is MISSING else 'head'} column without its pair; give "
                                 "both data.columns.head and data.columns.tail")
            example, notes = _located(text, head_value, tail_value, _field(row, keys["head_start"]),
                                     _field(row, keys["tail_start"]))
        except InputError as exc:
            raise DataError(f"{where}: {exc}") from None
        except _NotFound as exc:
            examples.append(skipped(str(exc)))
            continue
        examples.append({**example, "label": label, **({NOTED: notes} if notes else {})})
    return examples


class _NotFound(Exception):
    """A mention that is not in its row's text: the row is left out and counted."""


def _field(row: Any, key: str | int) -> Any:
    """The row's value at a column name (dict rows) or number (list rows, and dict rows of headed files), or
    MISSING."""
    try:
        return row[key]
    except (KeyError, IndexError, TypeError):
        return MISSING


def _located(text: str, head: Any, tail: Any, head_start: Any, tail_start: Any) -> tuple[Example, list[str]]:
    """The example's spans from span or mention columns, and a note for each mention that occurs more than once."""
    notes = []
    head_span, repeated = _locate("head", text, head, _offset(head_start), None)
    if repeated and head_start is MISSING:
        notes.append("head occurs more than once (the first used)")
    tail_span, repeated = _locate("tail", text, tail, _offset(tail_start), head_span)
    if repeated and tail_start is MISSING:
        notes.append("tail occurs more than once (the first not overlapping the head used)")
    return {"text": text, "head": list(head_span), "tail": list(tail_span)}, notes


def _offset(value: Any) -> int | None:
    if value is MISSING or value in ("", None):
        return None
    try:
        offset = int(value)
    except (TypeError, ValueError):
        offset = -1
    if offset < 0:
        raise InputError(f"an offset column holds {value!r}, not a character offset (0 or more)")
    return offset


def _locate(name: str, text: str, value: Any, start: int | None, avoid: Span | None) -> tuple[Span, bool]:
    """(the entity's span, whether its mention occurs more than once in the text)."""
    if isinstance(value, (list, tuple)) and len(value) == 2:
        start, end = int(value[0]), int(value[1])
        if not 0 <= start < end <= len(text):
            raise InputError(f"the {name} span [{start}, {end}] is empty or outside the text (length {len(text)})")
        return (start, end), False
    if not isinstance(value, str) or not value:
        raise InputError(f"the {name} must be a [start, end] span or a mention string; got {value!r}")
    if start is not None:
        if text[start:start + len(value)] != value:
            raise _NotFound(f"{name} not at its offset")
        return (start, start + len(value)), False
    found = [i for i in _occurrences(text, value)
             if not (avoid and i < avoid[1] and i + len(value) > avoid[0])]
    if not found:
        raise _NotFound(f"{name} not in the text")
    return (found[0], found[0] + len(value)), len(_occurrences(text, value)) > 1


def _occurrences(text: str, value: str) -> list[int]:
    found, start = [], text.find(value)
    while start >= 0:
        found.append(start)
        start = text.find(value, start + 1)
    return found
