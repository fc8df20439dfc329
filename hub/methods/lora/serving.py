"""Per-row LoRA for mixed-task batches: every row of ONE backbone pass gets its own task's adapter.

Forward hooks, not PEFT, at serving time: faster mixed passes and adapter loads (benchmarks/serving.py).
"""

from __future__ import annotations

import torch
from torch import nn

from ...absmax import dequantize_absmax
from ..rows import LayerHooks
from .quantized_file import matrix_at
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
        self.stacked_scales: torch.Tensor | None = None  # quantized adapters: their rank scales, stacked alike
        if gather is None:
            gather = first is not None and first.buffer.device.type != "cpu"
        # one layout: same shapes and the same storage (quantized layouts have scale offsets, float ones do not)
        if gather and first is not None and all(a is not None and a.layout is first.layout
                                                and a.buffer.dtype == first.buffer.dtype for a in adapters):
            present = [a for a in adapters if a is not None]  # all() above: nothing filtered out
            self.stacked = torch.stack([a.buffer for a in present])
            if first.scales is not None:
                self.stacked_scales = torch.stack([a.scales for a in present if a.scales is not None])
            self.index = torch.tensor(positions, device=first.buffer.device)
        else:  # per row from each adapter: a narrow one dequantized once for the whole pass, not per layer
            self.adapters = [a.widened() if a is not None else None for a in adapters]

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
        scales = self.stacked_scales
        if scales is None:
            return down, up
        # quantized: dequantized per rank channel after the gather, as LoraWeights.down/up do per adapter
        down_scales = scales[:, slot.down_scale_start:slot.down_scale_start + slot.rank].index_select(0, self.index)
        up_scales = scales[:, slot.up_scale_start:slot.up_scale_start + slot.rank].index_select(0, self.index)
        return (dequantize_absmax(down, down_scales, first.dtype, rows=True),
                dequantize_absmax(up, up_scales, first.dtype, rows=False))


class BatchedLora(LayerHooks[LoraWeights]):
    """Forward hooks on one backbone's LoRA-targeted linear layers; active only inside `rows(...)`."""

    def plan(self, adapters: list[LoraWeights | None], positions: list[int]) -> _Plan:
        return _Plan(adapters, positions)

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
