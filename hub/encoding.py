"""Raw request input -> checked text fields -> token ids (with truncation reported, never silent)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from transformers import PreTrainedTokenizerBase

from .errors import InputError
from .registry import TaskSpec


@dataclass
class EncodedRow:
    input_ids: list[int]
    token_type_ids: list[int]
    truncated: bool


def _describe(task: TaskSpec) -> str:
    if len(task.inputs) == 1:
        return f"task {task.name!r} takes one text: pass a non-empty string"
    a, b = task.inputs
    return f"task {task.name!r} takes a pair ({a}, {b}): pass a tuple of two non-empty strings or a dict with keys {a!r}, {b!r}"


def normalize_input(task: TaskSpec, value: Any) -> tuple[str, ...]:
    """Check one request's input against the task's input fields; return its texts in field order."""
    if isinstance(value, str):
        fields: tuple = (value,)
    elif isinstance(value, tuple):
        fields = value
    elif isinstance(value, dict):
        unknown = sorted(set(value) - set(task.inputs))
        missing = [name for name in task.inputs if name not in value]
        if unknown or missing:
            raise InputError(f"{_describe(task)}; got keys {sorted(value)}.")
        fields = tuple(value[name] for name in task.inputs)
    else:
        got = "None" if value is None else type(value).__name__
        raise InputError(f"{_describe(task)}; got {got}.")
    if len(fields) != len(task.inputs):
        raise InputError(f"{_describe(task)}; got {len(fields)} text(s).")
    for field in fields:
        if not isinstance(field, str):
            got = "None" if field is None else type(field).__name__
            raise InputError(f"{_describe(task)}; got a {got} inside the input.")
        if not field.strip():
            raise InputError(f"{_describe(task)}; got an empty or whitespace-only text.")
    return fields


def encode(tokenizer: PreTrainedTokenizerBase, rows: Sequence[tuple[str, ...]], max_length: int) -> list[EncodedRow]:
    """Tokenize single texts or pairs; rows longer than `max_length` are truncated and flagged."""
    if not rows:
        return []
    firsts = [r[0] for r in rows]
    seconds = [r[1] for r in rows] if len(rows[0]) == 2 else None
    full = tokenizer(firsts, seconds, truncation=False, verbose=False)
    too_long = [i for i, ids in enumerate(full["input_ids"]) if len(ids) > max_length]
    if too_long:
        cut = tokenizer(
            [firsts[i] for i in too_long],
            [seconds[i] for i in too_long] if seconds else None,
            truncation="longest_first",
            max_length=max_length,
        )
        for j, i in enumerate(too_long):
            full["input_ids"][i] = cut["input_ids"][j]
            full["token_type_ids"][i] = cut["token_type_ids"][j]
    long_rows = set(too_long)
    return [
        EncodedRow(ids, types, i in long_rows)
        for i, (ids, types) in enumerate(zip(full["input_ids"], full["token_type_ids"]))
    ]
