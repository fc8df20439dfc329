"""Rows a task drops before its kind reads them, declared in the registry, counted per reason; and tokens it cleans.

Two ways, both YAML:
- `data.label_values` mapping a raw label to null: `{"-": null}` drops the unlabelled rows of an NLI file;
- `data.drop`: field -> raw values, e.g. `{label: ["-"], premise: [""]}` (a field is an input or `label`, found
  through `data.columns` as the readers find it).

Rows of a one-label-per-row kind only: a tagging row has a label per token, so dropping it by its label would drop
whole sentences for one token; such a task is told so.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from ..errors import DataError
from ..registry import DataSpec, TaskSpec


def drop_reasons(data: DataSpec) -> dict[str, set[str]]:
    """Field -> the raw values whose rows are dropped (both ways merged)."""
    reasons: dict[str, set[str]] = {field: set(values) for field, values in data.drop.items()}
    nulls = {raw for raw, label in (data.label_values or {}).items() if label is None}
    if nulls:
        reasons.setdefault("label", set()).update(nulls)
    return reasons


def drop_rows(rows: list[Any], task: TaskSpec, source: str) -> tuple[list[Any], Counter[str]]:
    """The rows to keep, and how many were dropped for each reason ("label '-'", "premise ''")."""
    data = task.data
    assert data is not None  # hub.data reads only tasks with a data section
    reasons = drop_reasons(data)
    if not reasons:
        return rows, Counter()
    kept, dropped = [], Counter[str]()
    for index, row in enumerate(rows):
        reason = _reason(row, reasons, data, source, index)
        if reason is None:
            kept.append(row)
        else:
            dropped[reason] += 1
    return kept, dropped


def _reason(row: Any, reasons: dict[str, set[str]], data: DataSpec, source: str, index: int) -> str | None:
    for field, values in reasons.items():
        column = data.columns.get(field, field)
        try:
            value = row[column]
        except (KeyError, IndexError, TypeError):
            continue  # a missing column is the kind's to report, with its own message
        if isinstance(value, list):
            raise DataError(f"{source}, row {index + 1}: field {field!r} holds a list (one value per token), so a "
                            "row cannot be dropped by its value; remove it from data.drop and from the null "
                            "entries of data.label_values.")
        if str(value) in values:
            return f"{field} {str(value)!r}"
    return None


def note_lines(notes: Counter[str] | dict[str, int]) -> list[str]:
    """'N rows: how they were read' per note of a reader (heads/rows.py)."""
    return [f"{count:,} row{'s' if count != 1 else ''}: {note}" for note, count in notes.items()]


def describe(dropped: Counter[str] | dict[str, int]) -> str:
    """'12 rows dropped (label '-': 10, premise '': 2)', or '' when none were."""
    total = sum(dropped.values())
    if not total:
        return ""
    parts = ", ".join(f"{reason}: {count:,}" for reason, count in sorted(dropped.items(), key=lambda kv: -kv[1]))
    return f"{total:,} row{'s' if total != 1 else ''} dropped ({parts})"


def clean_tokens(rows: list[Any], data: DataSpec, source: str) -> list[Any]:
    """Each row's tokens as `data.token_pattern` keeps them: the first group of the pattern's first match (or the
    whole match), e.g. '^(.)' for a CoNLL column whose characters carry a position digit ('中1' -> '中')."""
    if data.token_pattern is None:
        return rows
    pattern = re.compile(data.token_pattern)
    key = "tokens" if data.format == "conll" else data.columns.get("tokens", "tokens")
    cleaned = []
    for index, row in enumerate(rows):
        tokens = row.get(key) if isinstance(row, dict) else None
        if not isinstance(tokens, list):
            raise DataError(f"{source}, row {index + 1}: data.token_pattern cleans a token column (tagging), and this "
                            f"row has no {key!r} list; remove token_pattern or set data.columns.tokens.")
        kept = []
        for token in tokens:
            found = pattern.search(str(token))
            value = (found.group(1) if pattern.groups else found.group(0)) if found else None
            if not value:
                raise DataError(f"{source}, row {index + 1}: token {token!r} leaves nothing under data.token_pattern "
                                f"{data.token_pattern!r}; fix the pattern (its first group is the token).")
            kept.append(value)
        cleaned.append({**row, key: kept})
    return cleaned
