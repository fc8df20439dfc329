"""Per-row bottleneck adapters for mixed-task batches: per targeted layer, every row's own down/up projections
stacked for the pass and applied with two batched matmuls, inside one backbone pass."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from ..rows import LayerHooks
from .options import ACTIVATIONS
from .weights import BottleneckWeights

Activation = Callable[[torch.Tensor], torch.Tensor]


class _Plan:
    """One pass: the distinct adapters, each row's position among them, and the rows of each non-linearity."""

    def __init__(self, adapters: list[BottleneckWeights | None], positions: list[int]):
        self.adapters = adapters
        self.positions = positions
        groups: dict[Activation, list[int]] = {}
        for row, position in enumerate(positions):
            adapter = adapters[position]
            if adapter is not None:
                groups.setdefault(ACTIVATIONS[adapter.non_linearity], []).append(row)
        # one non-linearity: applied to every row (rows of no adapter hold zero units, and act(0) = 0)
        self.activations: list[tuple[Activation, torch.Tensor | None]] = [
            (act, None if len(groups) == 1 else torch.tensor(rows)) for act, rows in groups.items()]

    def matrices(self, path: str, like: torch.Tensor) -> tuple[torch.Tensor, ...] | None:
        """Each row's down weight [rows, width, hidden], down bias [rows, width], up weight [rows, hidden, width] and
        up bias [rows, hidden] for this layer, in `like`'s dtype; zeros where the row's adapter has no such layer,
        narrower adapters padded with zeros to the pass's widest. None if no adapter of the pass has the layer."""
        having = [a for a in self.adapters if a is not None and path in a.paths]
        if not having:
            return None
        width, hidden = max(a.width for a in having), like.shape[-1]
        zeros = (like.new_zeros(width, hidden), like.new_zeros(width), like.new_zeros(hidden, width),
                 like.new_zeros(hidden))
        parts: list[tuple[torch.Tensor, ...]] = []
        for adapter in self.adapters:
            if adapter is None or path not in adapter.paths:
                parts.append(zeros)
                continue
            down, down_bias, up, up_bias = (adapter.tensors[f"{path}.{part}"].to(like.dtype)
                                            for part in ("down.weight", "down.bias", "up.weight", "up.bias"))
            pad = width - adapter.width  # zero units: zero down rows and bias stay 0 through act, zero up columns
            parts.append((F.pad(down, (0, 0, 0, pad)), F.pad(down_bias, (0, pad)), F.pad(up, (0, pad)), up_bias)
                         if pad else (down, down_bias, up, up_bias))
        return tuple(torch.stack([parts[i][k] for i in self.positions]) for k in range(4))

    def activate(self, low: torch.Tensor) -> torch.Tensor:
        """Each row's own non-linearity on its bottleneck units [rows, tokens, width]."""
        for act, rows in self.activations:
            if rows is None:
                return act(low)
            index = rows.to(low.device)
            low.index_copy_(0, index, act(low.index_select(0, index)))
        return low


class BatchedBottleneck(LayerHooks[BottleneckWeights]):
    """Forward hooks on the adapted dense layers of one backbone; active only inside `rows(...)`."""

    def plan(self, adapters: list[BottleneckWeights | None], positions: list[int]) -> _Plan:
        return _Plan(adapters, positions)

    def hook(self, path: str):
        def add_row_adapters(layer: nn.Linear, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
            plan = self._plan
            matrices = plan.matrices(path, output) if plan is not None else None
            if matrices is None:
                return None
            rows = output.shape[0]
            self.check_rows(rows, len(plan.positions))
            down, down_bias, up, up_bias = matrices
            y = output.view(rows, -1, output.shape[-1])
            low = plan.activate(torch.baddbmm(down_bias.unsqueeze(1), y, down.transpose(1, 2)))
            # y + up(act(down(y))), added into the layer's output in place
            y.add_(up_bias.unsqueeze(1)).baddbmm_(low, up.transpose(1, 2))
            return output

        return add_row_adapters
