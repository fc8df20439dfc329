"""Classification and regression examples: the task's input fields + `label`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hub.errors import DataError

if TYPE_CHECKING:
    from hub.registry import DataSpec, TaskSpec

Example = dict[str, Any]


def text_examples(rows: list[Any], task: TaskSpec, source: str) -> list[Example]:
    data = task.data
    assert data is not None  # hub.data reads only tasks with a data section
    return [_to_example(row, task, data, source, i) for i, row in enumerate(rows)]


def _to_example(row: Any, task: TaskSpec, data: DataSpec, source: str, index: int) -> Example:
    example: Example = {}
    for field in [*task.inputs, "label"]:
        column = data.columns.get(field, field)
        try:
            value = row[column]
        except (KeyError, IndexError, TypeError):
            known = (sorted(str(k) for k in row if isinstance(k, str)) if isinstance(row, dict)
                     else f"{len(row)} columns")
            raise DataError(
                f"{source}, row {index + 1}: no column {column!r} for field {field!r} (row has {known}); "
                f"set data.columns.{field} in the registry."
            ) from None
        example[field] = value
    example["label"] = _label(example["label"], task, data, source, index)
    return example


def _label(raw: Any, task: TaskSpec, data: DataSpec, source: str, index: int) -> Any:
    if task.labels is None:  # regression
        try:
            return float(raw)
        except (TypeError, ValueError):
            raise DataError(
                f"{source}, row {index + 1}: label {raw!r} is not a number; regression needs numbers.") from None
    label = data.label_values.get(str(raw), raw) if data.label_values else str(raw)
    if label not in task.labels:
        raise DataError(
            f"{source}, row {index + 1}: label {raw!r} is not one of the task's labels {task.labels}; "
            "map raw values with data.label_values."
        )
    return label


