"""Mixed-task batches: rows of many tasks share ONE backbone forward pass (per-row adapters), then each
row goes through its own task's head."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from heads import Head
from .backbone import Backbone
from .encoding import EncodedRow, encode
from .registry import TaskSpec


@dataclass(eq=False)
class TaskRuntime:
    """Everything needed to serve one task: its entry, its backbone, its adapter's name there, its head, its row limit."""

    spec: TaskSpec
    backbone: Backbone
    adapter_name: str
    head: Head
    max_length: int


@dataclass
class _Row:
    position: int
    task: TaskRuntime
    encoded: EncodedRow


def run_batch(items: Sequence[tuple[TaskRuntime, tuple[str, ...]]], max_batch_size: int = 64) -> list[dict[str, Any]]:
    """Results for `(task, checked fields)` items, in order. Rows are length-sorted to keep padding small."""
    rows_by_backbone: dict[int, list[_Row]] = defaultdict(list)
    by_task: dict[int, list[int]] = defaultdict(list)
    for position, (task, _) in enumerate(items):
        by_task[id(task)].append(position)
    for positions in by_task.values():
        task = items[positions[0]][0]
        encoded = encode(task.backbone.tokenizer, [items[p][1] for p in positions], task.max_length)
        rows_by_backbone[id(task.backbone)].extend(_Row(p, task, e) for p, e in zip(positions, encoded))

    results: list[dict[str, Any] | None] = [None] * len(items)
    for rows in rows_by_backbone.values():
        rows.sort(key=lambda r: len(r.encoded.input_ids))
        for start in range(0, len(rows), max_batch_size):
            for row, result in zip(rows[start:start + max_batch_size], _forward(rows[start:start + max_batch_size])):
                results[row.position] = result
    return results  # type: ignore[return-value]


def _pad(rows: list[_Row], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(r.encoded.input_ids) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    types = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        n = len(row.encoded.input_ids)
        ids[i, :n] = torch.tensor(row.encoded.input_ids)
        types[i, :n] = torch.tensor(row.encoded.token_type_ids)
        mask[i, :n] = 1
    return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}


def _forward(rows: list[_Row]) -> list[dict[str, Any]]:
    """One backbone pass for rows of one backbone, whatever their tasks; then per-task heads."""
    backbone = rows[0].task.backbone
    batch = _pad(rows, backbone.tokenizer.pad_token_id or 0)
    with backbone.lock, torch.inference_mode():
        if backbone.peft_model is None:
            out = backbone.model(**batch)
        else:
            out = backbone.peft_model(**batch, adapter_names=[r.task.adapter_name for r in rows])
        features = {
            "last_hidden_state": out.last_hidden_state,
            "attention_mask": batch["attention_mask"],
            "pooler_output": out.pooler_output,
        }
        groups: dict[int, list[int]] = defaultdict(list)
        for i, row in enumerate(rows):
            groups[id(row.task)].append(i)
        results: list[dict[str, Any]] = [{} for _ in rows]
        for indices in groups.values():
            task = rows[indices[0]].task
            index = torch.tensor(indices)
            sub = {k: v.index_select(0, index) for k, v in features.items() if v is not None}
            for i, decoded in zip(indices, task.head.decode(task.head(sub))):
                result = {"task": task.spec.name, **decoded}
                if rows[i].encoded.truncated:
                    result["truncated"] = True
                results[i] = result
    return results
