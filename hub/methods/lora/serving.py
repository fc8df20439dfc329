"""Per-row LoRA for mixed-task batches: every row of ONE backbone pass gets its own task's adapter.

Forward hooks, not PEFT, at serving time: faster mixed passes and adapter loads (benchmarks/serving.py).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ..base import linear_layer
from .weights import LoraWeights


class _Plan:
    """One forward pass: the batch's distinct adapters and, per row, the position of its own."""

    def __init__(self, adapters: list[LoraWeights | None], positions: list[int], gather: bool | None = None):
        """`gather`: stack + index_select (see below); None chooses by device."""
        self.adapters = adapters
        self.positions = positions  # row -> position in `adapters`
        # off the CPU: stack once, gather per layer; per-adapter Python views were host-bound (benchmarks/serving.py)
        first = adapters[0]
        self.stacked: torch.Tensor | None = None
        if gather is None:
            gather = first is not None and first.buffer.device.type != "cpu"
        if gather and first is not None and all(a is not None and a.layout is first.layout for a in adapters):
            self.stacked = torch.stack([a.buffer for a in adapters if a is not None])  # all() above: nothing to filter
            self.index = torch.tensor(positions, device=first.buffer.device)

    def matrices(self, path: str, layer: nn.Linear) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Each row's own [rows, r, in] and [rows, out, r] for this layer (zeros where its adapter has no
        such layer); None if no adapter in the pass has it. On the CPU, stacked straight from the rows'
        adapters: one copy per row, never a copy of every distinct adapter first."""
        if self.stacked is not None:
            return self._gathered(path)
        slots = [a.layout.slots.get(path) if a is not None else None for a in self.adapters]
        if not any(slots):
            return None
        rank = max(slot.rank for slot in slots if slot)
        downs, ups = [], []
        for adapter, slot in zip(self.adapters, slots):
            if adapter is None or slot is None:
                downs.append(layer.weight.new_zeros(rank, layer.in_features))
                ups.append(layer.weight.new_zeros(layer.out_features, rank))
                continue
            # mixed ranks: zero rows/columns add nothing
            down, up, pad = adapter.down(path), adapter.up(path), rank - slot.rank
            downs.append(nn.functional.pad(down, (0, 0, 0, pad)) if pad else down)
            ups.append(nn.functional.pad(up, (0, pad)) if pad else up)
        return torch.stack([downs[i] for i in self.positions]), torch.stack([ups[i] for i in self.positions])

    def _gathered(self, path: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        """`matrices` when every adapter of the pass has the same layout and sits in `self.stacked`."""
        first, stacked = self.adapters[0], self.stacked
        assert first is not None and stacked is not None  # set together in __init__
        slot = first.layout.slots.get(path)
        if slot is None:
            return None
        count, width = stacked.shape
        offset = stacked.storage_offset()
        down = stacked.as_strided((count, slot.rank, slot.in_features), (width, slot.in_features, 1),
                                  offset + slot.down_start)
        up = stacked.as_strided((count, slot.out_features, slot.rank), (width, slot.rank, 1), offset + slot.up_start)
        return down.index_select(0, self.index), up.index_select(0, self.index)


class BatchedLora:
    """Forward hooks on one backbone's LoRA-targeted linear layers; active only inside `rows(...)`.

    The caller serializes passes (Backbone.lock): the plan of the running pass is an attribute.
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self._hooks: dict[str, Any] = {}
        self._layers: dict[str, nn.Linear | None] = {}  # path -> layer, looked up once
        self.hooked_paths: frozenset[str] = frozenset()  # replaced, never mutated: safe to read without the lock
        self._plan: _Plan | None = None

    def target_layer(self, path: str) -> nn.Linear | None:
        """The linear layer at `path` (inside a PEFT wrapper if the model has one), or None."""
        if path not in self._layers:
            self._layers[path] = linear_layer(self.model, path)
        return self._layers[path]

    def needs_prepare(self, adapter: LoraWeights) -> bool:
        """Whether `adapter` targets a layer no earlier adapter did (a lock-free read)."""
        return bool(adapter.paths - self.hooked_paths)

    def prepare(self, adapter: LoraWeights) -> None:
        """Hook the layers `adapter` needs that no earlier adapter did (the caller holds Backbone.lock)."""
        for path in adapter.paths - self.hooked_paths:
            layer = self.target_layer(path)
            if layer is None:
                raise ValueError(f"{adapter.name}: {path!r} is not a linear layer of this backbone")
            self._hooks[path] = layer.register_forward_hook(self._hook(path))
        self.hooked_paths = frozenset(self._hooks)

    def _hook(self, path: str):
        def add_row_updates(layer: nn.Linear, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
            plan = self._plan
            if plan is None:
                return None
            matrices = plan.matrices(path, layer)
            if matrices is None:
                return None
            down, up = matrices
            x = args[0]
            rows = x.shape[0]
            if rows != len(plan.positions):
                raise RuntimeError(f"BatchedLora: a pass over {rows} rows inside rows() for {len(plan.positions)}")
            # per-row bmm with A @ x^T, added into the output in place: the fastest form measured on CPU
            low = torch.bmm(down, x.reshape(rows, -1, x.shape[-1]).transpose(1, 2)).transpose(1, 2)
            output.view(rows, -1, output.shape[-1]).baddbmm_(low, up.transpose(1, 2))
            return output

        return add_row_updates

    @contextmanager
    def rows(self, adapters: Sequence[LoraWeights | None]) -> Iterator[None]:
        """Within this block, a pass over len(adapters) rows gives row i the update of adapters[i]."""
        distinct: dict[int, int] = {}
        order: list[LoraWeights | None] = []
        positions = []
        for adapter in adapters:
            key = id(adapter)
            if key not in distinct:
                distinct[key] = len(order)
                order.append(adapter)
            positions.append(distinct[key])
        if all(a is None for a in order):
            yield
            return
        if torch.is_grad_enabled():
            raise RuntimeError(
                "BatchedLora.rows serves inference only (updates are added in place); use torch.inference_mode()")
        self._plan = _Plan(order, positions)
        try:
            yield
        finally:
            self._plan = None
