"""Mixed-task batches: rows of many tasks share ONE backbone forward pass (per-row adapters), then each
row goes through its own task's head, and each task's codec turns its rows back into results."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from heads import Codec, ExampleCodec, Head, Row, kind
from heads.codec import collate_extras

from .backbone import Backbone
from .methods import AdapterWeights
from .registry import TaskSpec


@dataclass(eq=False)
class TaskRuntime:
    """Everything needed to serve one task: its entry, backbone, adapter weights, head, codec.

    `adapter` is None when the backbone itself carries the task's weights (a model still in training
    memory: PEFT-wrapped, fully fine-tuned, or a probe on the plain backbone).
    """

    spec: TaskSpec
    backbone: Backbone
    adapter: AdapterWeights | None
    head: Head
    codec: Codec

    @property
    def resident_bytes(self) -> int:
        """Memory this task adds beside the shared backbone: its adapter weights and its head."""
        head = sum(t.numel() * t.element_size() for t in (*self.head.parameters(), *self.head.buffers()))
        return head + (self.adapter.nbytes if self.adapter else 0)

    @property
    def examples(self) -> ExampleCodec:
        """The task's training and evaluation side over its serving codec."""
        return kind(self.spec.kind).examples(self.codec)


PASS_ROW_TOKENS = 128  # a pass holds at most max_batch_size rows' worth of this many tokens each, padded


@dataclass(eq=False)
class RouterRow:
    """One backbone row of one request: which request (its position), its task, the codec's row."""

    request: int
    task: TaskRuntime
    row: Row


def encode(items: Sequence[tuple[TaskRuntime, Any]]) -> list[list[RouterRow]]:
    """The backbone rows of each `(task, normalized request)` item (tasks whose codecs encode alike: one tokenizer
    call)."""
    by_encoding: dict[Any, list[int]] = defaultdict(list)
    for position, (task, _) in enumerate(items):
        by_encoding[task.codec.shared_encoding or id(task)].append(position)
    rows_of_request: list[list[RouterRow]] = [[] for _ in items]
    for positions in by_encoding.values():
        codec = items[positions[0]][0].codec
        for position, rows in zip(positions, codec.encode([items[p][1] for p in positions])):
            rows_of_request[position] = [RouterRow(position, items[position][0], row) for row in rows]
    return rows_of_request


def forward(rows: Sequence[RouterRow], max_batch_size: int = 64) -> dict[int, dict[str, Any]]:
    """Each row's decoded head output, keyed by id(row): rows of one backbone length-sorted into passes."""
    by_backbone: dict[int, list[RouterRow]] = defaultdict(list)
    for r in rows:
        by_backbone[id(r.task.backbone)].append(r)
    decoded: dict[int, dict[str, Any]] = {}
    for group in by_backbone.values():
        group.sort(key=lambda r: len(r.row.input_ids))  # padding stays small
        for chunk in _passes(group, max_batch_size):
            decoded.update(zip(map(id, chunk), _forward(chunk)))
    return decoded


def _passes(rows: list[RouterRow], max_batch_size: int) -> list[list[RouterRow]]:
    """Length-sorted rows in passes of at most `max_batch_size` rows and as many padded tokens as that many
    rows of PASS_ROW_TOKENS: 256-token QA windows go 32 to a pass, and short rows never pad to their length."""
    budget = max_batch_size * PASS_ROW_TOKENS
    passes: list[list[RouterRow]] = [[]]
    for r in rows:
        current = passes[-1]
        if current and (len(current) == max_batch_size or (len(current) + 1) * len(r.row.input_ids) > budget):
            passes.append(current := [])
        current.append(r)
    return passes if passes[0] else []


def finish(items: Sequence[tuple[TaskRuntime, Any]], rows_of_request: Sequence[Sequence[RouterRow]],
           decoded: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    """The user-facing result of each item from its rows' decoded outputs."""
    return [
        {"task": task.spec.name, **task.codec.finish(request, [r.row for r in rows], [decoded[id(r)] for r in rows])}
        for (task, request), rows in zip(items, rows_of_request)
    ]


def run_batch(items: Sequence[tuple[TaskRuntime, Any]], max_batch_size: int = 64) -> list[dict[str, Any]]:
    """Results for `(task, normalized request)` items, in order: encode, shared backbone passes, finish."""
    rows_of_request = encode(items)
    return finish(items, rows_of_request, forward([r for rows in rows_of_request for r in rows], max_batch_size))


def _forward(rows: list[RouterRow]) -> list[dict[str, Any]]:
    """One backbone pass for rows of one backbone, whatever their tasks; then the heads (see `_heads`)."""
    backbone = rows[0].task.backbone
    all_layers = any(r.task.head.needs_all_layers for r in rows)
    with torch.inference_mode():
        features = backbone.encode([r.row for r in rows], [r.task.adapter for r in rows], all_layers,
                                   _embedding_additions(rows))
        groups: dict[Any, list[int]] = defaultdict(list)  # rows whose heads answer together (heads.Head.batch_key)
        keys: dict[int, Any] = {}
        for i, r in enumerate(rows):
            if id(r.task) not in keys:
                keys[id(r.task)] = r.task.head.batch_key() or id(r.task)
            groups[keys[id(r.task)]].append(i)
        results: list[dict[str, Any]] = [{} for _ in rows]
        for indices in groups.values():
            for i, decoded in zip(indices, _heads(rows, indices, features)):
                results[i] = decoded
    return results


def _embedding_additions(rows: list[RouterRow]) -> torch.Tensor | None:
    """[n, T, H]: what each row's head adds to its input embeddings (zeros for heads that add nothing); None when no
    head of the pass adds anything."""
    width = max(len(r.row.input_ids) for r in rows)
    by_task: dict[int, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        by_task[id(r.task)].append(i)
    added: torch.Tensor | None = None
    for indices in by_task.values():
        head = rows[indices[0]].task.head
        if type(head).embedding_additions is Head.embedding_additions:  # adds nothing: no extras collated for it
            continue
        extras = collate_extras(head.extra_inputs(), [rows[i].row.extras for i in indices], width)
        values = head.embedding_additions(extras, width)
        if values is not None:
            if added is None:
                added = values.new_zeros(len(rows), width, values.shape[-1])
            added[torch.tensor(indices, device=values.device)] = values
    return added


def _heads(rows: list[RouterRow], indices: list[int], features: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
    """Decoded head outputs for `rows[indices]`: one task's head, or several heads of one batch key at once."""
    tasks = list({id(rows[i].task): rows[i].task for i in indices}.values())
    device = features["attention_mask"].device
    index = torch.tensor(indices, device=device)
    sub = {k: v.index_select(0, index) for k, v in features.items() if v is not None}
    width = features["attention_mask"].shape[1]
    # one key: one kind
    extras = collate_extras(tasks[0].head.extra_inputs(), [rows[i].row.extras for i in indices], width)
    sub.update({k: v.to(device) for k, v in extras.items()})
    if len(tasks) == 1:
        return tasks[0].head.decode(tasks[0].head(sub))
    heads = [t.head for t in tasks]
    position = {id(t): p for p, t in enumerate(tasks)}
    owner = [position[id(rows[i].task)] for i in indices]
    kind = type(heads[0])
    return kind.decode_many(heads, owner, kind.forward_many(heads, torch.tensor(owner, device=device), sub))
