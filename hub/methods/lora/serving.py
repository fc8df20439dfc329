"""Per-row LoRA for mixed-task batches: every row of ONE backbone pass gets its own task's adapter.

Forward hooks, not PEFT, at serving time: faster mixed passes and adapter loads (benchmarks/serving.py).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import nn

from ..rows import LayerHooks
from .quantized_file import matrix_at
from .weights import LoraWeights


class _Plan:
    """One forward pass: the batch's distinct adapters and, per row, the position of its own.

    Each distinct adapter is widened for the pass (an int8/int4 or narrower float adapter dequantized into the served
    dtype; BatchedLora keeps recent widened copies). Adapters of one layout are then stacked and each layer's matrices
    gathered by row index: two index_selects per layer on every device (a Python loop over the rows, which the CPU
    used to take, measured no faster there and was host-bound on a GPU). Adapters of different layouts (ranks,
    layers) are stacked per row instead."""

    def __init__(self, adapters: list[LoraWeights | None], positions: list[int], gather: bool = True,
                 widen: Callable[[LoraWeights], LoraWeights] = LoraWeights.widened):
        """`gather`: stack adapters of one layout and gather rows (the default); False: always the per-row stack.
        `widen`: how an adapter is widened (BatchedLora's keeps recent widened copies: `WidenedCache`)."""
        self.adapters = [widen(a) if a is not None else None for a in adapters]
        self.positions = positions  # row -> position in `adapters`
        self.stacked: torch.Tensor | None = None  # [adapters, values]: every widened buffer, when they share a layout
        first = self.adapters[0]
        if gather and first is not None and all(a is not None and a.layout is first.layout
                                                and a.buffer.dtype == first.buffer.dtype for a in self.adapters):
            self.stacked = torch.stack([a.buffer for a in self.adapters if a is not None])  # all() above: none left out
            self.index = torch.tensor(positions, device=first.buffer.device)

    def matrices(self, path: str, layer: nn.Linear) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Each row's own [rows, r, in] and [rows, out, r] for this layer (zeros where its adapter has no
        such layer); None if no adapter in the pass has it."""
        if self.stacked is not None:
            return self._gathered(path)
        slots = [a.layout.slots.get(path) if a is not None else None for a in self.adapters]
        if not any(slots):
            return None
        rank = max(slot.rank for slot in slots if slot)
        template = next(a.down(path) for a, slot in zip(self.adapters, slots) if a is not None and slot is not None)
        downs, ups = [], []
        for adapter, slot in zip(self.adapters, slots):
            if adapter is None or slot is None:  # zeros in the adapters' dtype (an int8 backbone has no float weight)
                downs.append(template.new_zeros(rank, layer.in_features))
                ups.append(template.new_zeros(layer.out_features, rank))
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
        down = matrix_at(stacked, slot.down_start, slot.rank, slot.in_features).index_select(0, self.index)
        up = matrix_at(stacked, slot.up_start, slot.out_features, slot.rank).index_select(0, self.index)
        return down, up


WIDENED_CACHE_BYTES = 64 * 2**20  # about 100 all-layer rank-8 MiniLM adapters widened to bfloat16, 50 to float32


class WidenedCache:
    """The widened copies of the narrow (int8, int4, float16-in-float32) adapters served most recently, up to
    `max_bytes` in all, least recently used dropped first: a hot adapter is dequantized once, not in every pass (a
    request set of 256 texts runs 4 passes; widening 16 int4 adapters in each was 3% of the serving time). Resident
    adapters stay as stored; only this bounded working set is wide. The caller serializes access (Backbone.lock)."""

    def __init__(self, max_bytes: int = WIDENED_CACHE_BYTES):
        self.max_bytes = max_bytes
        self.nbytes = 0
        # id(adapter) -> (adapter, its widened copy): the adapter is held so its id cannot be reused while cached
        self._entries: OrderedDict[int, tuple[LoraWeights, LoraWeights]] = OrderedDict()

    def __call__(self, adapter: LoraWeights) -> LoraWeights:
        if adapter.scales is None:
            return adapter  # nothing to widen
        entry = self._entries.get(id(adapter))
        if entry is not None:
            self._entries.move_to_end(id(adapter))
            return entry[1]
        wide = adapter.widened()
        if wide.nbytes <= self.max_bytes:
            self._entries[id(adapter)] = (adapter, wide)
            self.nbytes += wide.nbytes
            while self.nbytes > self.max_bytes:
                _, (_, dropped) = self._entries.popitem(last=False)
                self.nbytes -= dropped.nbytes
        return wide


class BatchedLora(LayerHooks[LoraWeights]):
    """Forward hooks on one backbone's LoRA-targeted linear layers; active only inside `rows(...)`."""

    def __init__(self, model: nn.Module):
        super().__init__(model)
        self.widened = WidenedCache()

    def plan(self, adapters: list[LoraWeights | None], positions: list[int]) -> _Plan:
        return _Plan(adapters, positions, widen=self.widened)

    def hook(self, path: str):
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
            self.check_rows(rows, len(plan.positions))
            # per-row bmm with A @ x^T, added into the output in place: the fastest form measured on CPU
            low = torch.bmm(down, x.reshape(rows, -1, x.shape[-1]).transpose(1, 2)).transpose(1, 2)
            output.view(rows, -1, output.shape[-1]).baddbmm_(low, up.transpose(1, 2))
            return output

        return add_row_updates
