"""Per-row (IA)3 for mixed-task batches: each row's layers scaled by its own adapter's vectors (ones for rows of other
adapters or none), inside one backbone pass."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..rows import LayerHooks, opaque
from .weights import IA3Weights


class _Plan:
    """One pass: per (layer, side), the [rows, width] scales, built when the layer runs."""

    def __init__(self, adapters: list[IA3Weights | None], positions: list[int]):
        self.adapters = adapters
        device = next(a.vectors.buffer.device for a in adapters if a is not None)  # rows() ruled out all-None
        self.index = torch.tensor(positions, device=device)  # made once per pass, where the vectors are

    def scales(self, path: str, at_input: bool, width: int, like: torch.Tensor) -> torch.Tensor | None:
        vectors = [a.vectors[path] if a is not None and path in a.vectors.places and (path in a.feedforward) == at_input
                   else None for a in self.adapters]
        if not any(v is not None for v in vectors):
            return None
        ones = like.new_ones(width)
        stacked = torch.stack([ones if v is None else v.to(like.dtype) for v in vectors])
        return stacked.index_select(0, self.index)


class BatchedIA3(LayerHooks[IA3Weights]):
    """Hooks on the (IA)3-targeted linear layers of one backbone, one per (layer, side): a pre-hook scaling the
    input of feed-forward layers, a hook scaling the output of the others."""

    def targets(self, adapter: IA3Weights) -> set[tuple[str, bool]]:
        return {(path, path in adapter.feedforward) for path in adapter.paths}

    def register(self, layer: nn.Linear, target: tuple[str, bool]) -> Any:
        path, at_input = target
        return (layer.register_forward_pre_hook(opaque(self._scale_input(path))) if at_input
                else layer.register_forward_hook(opaque(self._scale_output(path))))

    def plan(self, adapters: list[IA3Weights | None], positions: list[int]) -> _Plan:
        return _Plan(adapters, positions)

    def _scale_input(self, path: str):
        def scale(layer: nn.Linear, args: tuple) -> tuple | None:
            plan, x = self._plan, args[0]
            scales = plan.scales(path, True, x.shape[-1], x) if plan is not None else None
            if scales is None:
                return None
            return (x * scales.view(x.shape[0], *[1] * (x.dim() - 2), -1), *args[1:])

        return scale

    def _scale_output(self, path: str):
        def scale(layer: nn.Linear, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
            plan = self._plan
            scales = plan.scales(path, False, output.shape[-1], output) if plan is not None else None
            if scales is None:
                return None
            return output.mul_(scales.view(output.shape[0], *[1] * (output.dim() - 2), -1))

        return scale
