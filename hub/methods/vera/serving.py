"""Per-row VeRA for mixed-task batches: per layer, the rows of each shared projection go through it once, each row
scaled by its own adapter's vectors, inside one backbone pass."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..rows import LayerHooks
from .weights import Projection, VeraWeights, projection_matrices


class BatchedVera(LayerHooks[VeraWeights]):
    """Hooks on the VeRA-targeted linear layers of one backbone, and its shared projections (one pair per
    `Projection`, whatever the number of adapters using it)."""

    def __init__(self, model: nn.Module):
        super().__init__(model)
        self.projections: dict[Projection, tuple[torch.Tensor, torch.Tensor]] = {}

    def needs_prepare(self, adapter: VeraWeights) -> bool:
        return super().needs_prepare(adapter) or adapter.projection not in self.projections

    def prepare(self, adapter: VeraWeights) -> None:
        """Draw the adapter's projections and hook its layers if no earlier adapter did (caller holds Backbone.lock)."""
        if adapter.projection not in self.projections:
            weight = next(self.model.parameters())
            down, up = projection_matrices(adapter.projection)
            self.projections[adapter.projection] = (down.to(weight.device, weight.dtype),
                                                    up.to(weight.device, weight.dtype))
        super().prepare(adapter)

    def plan(self, adapters: list[VeraWeights | None], positions: list[int]) -> list[VeraWeights | None]:
        """The pass's adapter per row."""
        return [adapters[i] for i in positions]

    def hook(self, path: str):
        def add_row_updates(layer: nn.Linear, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
            rows = self._plan
            if rows is None:
                return None
            x = args[0]
            count = x.shape[0]
            self.check_rows(count, len(rows))
            out = output.view(count, -1, output.shape[-1])
            for projection, members in _groups(rows, path).items():
                down, up = self.projections[projection]
                index = torch.tensor([i for i, _ in members], device=x.device)
                lambda_d = torch.stack([a.vectors[f"{path}.d"] for _, a in members]).to(x.dtype).unsqueeze(1)
                lambda_b = torch.stack([a.vectors[f"{path}.b"] for _, a in members]).to(x.dtype).unsqueeze(1)
                inputs = x.reshape(count, -1, x.shape[-1])
                if len(members) < count:
                    inputs = inputs.index_select(0, index)
                low = F.linear(inputs, down[:, : layer.in_features]) * lambda_d
                update = F.linear(low, up[: layer.out_features]) * lambda_b
                if len(members) < count:
                    out.index_add_(0, index, update)
                else:
                    out.add_(update)
            return output

        return add_row_updates


def _groups(rows: list[VeraWeights | None], path: str) -> dict[Projection, list[tuple[int, VeraWeights]]]:
    """The rows whose adapter targets `path`, by the projection it scales."""
    groups: dict[Projection, list[tuple[int, VeraWeights]]] = {}
    for i, adapter in enumerate(rows):
        if adapter is not None and path in adapter.paths:
            groups.setdefault(adapter.projection, []).append((i, adapter))
    return groups
