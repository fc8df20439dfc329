"""Regression (STS-B style similarity scores): one number per text or pair, from the pooled head."""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F

from ..base import Head
from ..classification.head import PooledHead


class RegressionHead(PooledHead):
    kind = "regression"
    needs_labels = False

    def output_size(self) -> int:
        return 1

    def targets(self, raw_labels: list[Any]) -> torch.Tensor:
        try:
            return torch.tensor([float(v) for v in raw_labels], dtype=torch.float32)
        except (TypeError, ValueError):
            raise ValueError(f"regression targets must be numbers; got e.g. {raw_labels[:3]}") from None

    def loss(self, outputs: dict[str, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(outputs["logits"].squeeze(-1).float(), targets)

    @classmethod
    def decode_many(cls, heads: list[Head], owner: list[int], outputs: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        return [{"value": round(v, 6)} for v in outputs["logits"].squeeze(-1).float().tolist()]
