"""Mixed-task batches: rows of many tasks share ONE backbone forward pass (per-row adapters), then each
row goes through its own task's head, and each task's codec turns its rows back into results."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from heads import Head
from .backbone import Backbone
from .batched_lora import LoraWeights
from .codecs import Codec, Row, backbone_batch, head_features, model_inputs
from .registry import TaskSpec


@dataclass(eq=False)
class TaskRuntime:
    """Everything needed to serve one task: its entry, backbone, LoRA matrices, head, codec.

    `adapter` is None when the backbone itself carries the task's weights (a model still in training
    memory: PEFT-wrapped, fully fine-tuned, or a probe on the plain backbone).
    """

    spec: TaskSpec
    backbone: Backbone
    adapter: LoraWeights | None
    head: Head
    codec: Codec

    @property
    def resident_bytes(self) -> int:
        """Memory this task adds beside the shared backbone: its LoRA matrices and its head."""
        head = sum(t.numel() * t.element_size() for t in (*self.head.parameters(), *self.head.buffers()))
        return head + (self.adapter.nbytes if self.adapter else 0)


@dataclass(eq=False)
class _Row:
    request: int
    task: TaskRuntime
    row: Row


def run_batch(items: Sequence[tuple[TaskRuntime, Any]], max_batch_size: int = 64) -> list[dict[str, Any]]:
    """Results for `(task, normalized request)` items, in order. Rows are length-sorted to keep padding small."""
    by_encoding: dict[Any, list[int]] = defaultdict(list)  # tasks whose codecs encode alike share one tokenizer call
    for position, (task, _) in enumerate(items):
        by_encoding[task.codec.shared_encoding or id(task)].append(position)
    rows_by_backbone: dict[int, list[_Row]] = defaultdict(list)
    rows_of_request: list[list[_Row]] = [[] for _ in items]
    for positions in by_encoding.values():
        codec = items[positions[0]][0].codec
        for position, rows in zip(positions, codec.encode([items[p][1] for p in positions])):
            task = items[position][0]
            rows_of_request[position] = [_Row(position, task, row) for row in rows]
            rows_by_backbone[id(task.backbone)].extend(rows_of_request[position])

    decoded: dict[int, dict[str, Any]] = {}
    for rows in rows_by_backbone.values():
        rows.sort(key=lambda r: len(r.row.input_ids))
        for start in range(0, len(rows), max_batch_size):
            chunk = rows[start:start + max_batch_size]
            decoded.update(zip(map(id, chunk), _forward(chunk)))
    return [
        {"task": task.spec.name, **task.codec.finish(request, [r.row for r in rows_of_request[i]], [decoded[id(r)] for r in rows_of_request[i]])}
        for i, (task, request) in enumerate(items)
    ]


def _forward(rows: list[_Row]) -> list[dict[str, Any]]:
    """One backbone pass for rows of one backbone, whatever their tasks; then the heads (see `_heads`)."""
    backbone = rows[0].task.backbone
    device = backbone.device
    batch = {k: v.to(device) for k, v in backbone_batch([vars(r.row) for r in rows], backbone.tokenizer.pad_token_id or 0).items()}
    all_layers = any(r.task.head.needs_all_layers for r in rows)
    with backbone.lock, torch.inference_mode(), backbone.lora.rows([r.task.adapter for r in rows]):
        out = backbone.model(**model_inputs(batch), output_hidden_states=all_layers)
        features = head_features(out, batch["attention_mask"], all_layers)
        groups: dict[Any, list[int]] = defaultdict(list)  # rows whose heads answer together (heads.Head.batch_key)
        keys: dict[int, Any] = {}
        for i, r in enumerate(rows):
            if id(r.task) not in keys:
                keys[id(r.task)] = r.task.head.batch_key() or id(r.task)
            groups[keys[id(r.task)]].append(i)
        results: list[dict[str, Any]] = [{} for _ in rows]
        for indices in groups.values():
            for i, decoded in zip(indices, _heads(rows, indices, features, batch["input_ids"].shape[1], device)):
                results[i] = decoded
    return results


def _heads(rows: list[_Row], indices: list[int], features: dict[str, torch.Tensor], width: int, device: torch.device) -> list[dict[str, Any]]:
    """Decoded head outputs for `rows[indices]`: one task's head, or several heads of one batch key at once."""
    tasks = list({id(rows[i].task): rows[i].task for i in indices}.values())
    index = torch.tensor(indices, device=device)
    sub = {k: v.index_select(0, index) for k, v in features.items() if v is not None}
    extras = tasks[0].codec.collate_extras([rows[i].row.extras for i in indices], width)  # one key: one codec kind
    sub.update({k: v.to(device) for k, v in extras.items()})
    if len(tasks) == 1:
        return tasks[0].head.decode(tasks[0].head(sub))
    heads = [t.head for t in tasks]
    position = {id(t): p for p, t in enumerate(tasks)}
    owner = [position[id(rows[i].task)] for i in indices]
    kind = type(heads[0])
    return kind.decode_many(heads, owner, kind.forward_many(heads, torch.tensor(owner, device=device), sub))
