"""Heads over one pooled vector per row (one text or a pair): the pooled base, shared with regression, and
classification."""

from __future__ import annotations

from typing import Any, Literal, cast

import torch
from pydantic import Field, model_validator
from torch import nn
from torch.nn import functional as F

from ..base import ExtraInput, Head, HeadConfig, HeadOptions, Pooling, pool
from ..losses import classification_loss

SEGMENTS = ExtraInput("segments", pad=-1, per_token=True)  # siamese pairs: 0 = first text, 1 = second, -1 = padding


class PooledOptions(HeadOptions):
    pooling: Pooling = Field(
        "mean", description="cls: raw [CLS] vector; pooler: the backbone's pooler; mean/max over tokens")
    projection: bool = Field(False, description="a dense+tanh layer trained with the head (BERT's pooler, retrained)")
    pair: Literal["cross", "siamese"] = Field(
        "cross", description=("a text pair as one input (cross-encoder) or each text on its own, "
                              "compared as [u, v, |u-v|, u*v]"))
    dropout: float = Field(0.1, ge=0.0, lt=1.0)


class PooledConfig(PooledOptions, HeadConfig):
    @model_validator(mode="after")
    def _siamese_pools_each_text(self) -> PooledConfig:
        if self.pair == "siamese" and self.pooling == "pooler":
            raise ValueError("pair: siamese pools each text on its own; use pooling cls, mean or max, not pooler")
        return self


class PooledHead(Head):
    """Pool -> (dense+tanh) -> dropout -> linear; subclasses choose the output size, loss and decoding."""

    options_class = PooledOptions
    config_class = PooledConfig
    config: PooledConfig

    def __init__(self, config: PooledConfig):
        super().__init__(config)
        width = config.hidden_size
        self.projection = nn.Sequential(nn.Linear(width, width), nn.Tanh()) if config.projection else nn.Identity()
        self.dropout = nn.Dropout(config.dropout)
        self.out = nn.Linear(width * (4 if config.pair == "siamese" else 1), self.output_size())

    def output_size(self) -> int:
        raise NotImplementedError

    def extra_inputs(self) -> tuple[ExtraInput, ...]:
        return (SEGMENTS,) if self.config.pair == "siamese" else ()

    def predict(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.config.pair == "siamese":
            u, v = (self.projection(pool(features, self.config.pooling, features[SEGMENTS.name] == k)) for k in (0, 1))
            pooled = torch.cat([u, v, (u - v).abs(), u * v], dim=-1)
        else:
            pooled = self.projection(pool(features, self.config.pooling))
        return {"logits": self.out(self.dropout(pooled))}

    def batch_key(self) -> tuple | None:
        """One key per class and shape for heads that pool the last layer the same way; heads with a
        projection, a siamese pair or a layer mix answer one at a time."""
        c = self.config
        if c.layers != "last" or c.pair == "siamese" or c.projection:
            return None
        return (type(self), c.pooling, c.hidden_size, self.output_size())

    @classmethod
    def forward_many(cls, heads: list[Head], owner: torch.Tensor,
                     features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Pool once, then every head's output layer over every row in ONE matmul (outputs are a few
        columns per head, so this costs less than gathering a matrix per row), and keep each row's own."""
        pooled_heads = cast("list[PooledHead]", heads)  # one batch key: heads of this class
        pooled = pool(features, pooled_heads[0].config.pooling)
        weight = torch.cat([h.out.weight for h in pooled_heads])  # [heads x outputs, width]
        bias = torch.cat([h.out.bias for h in pooled_heads])
        every = F.linear(pooled, weight, bias).view(len(pooled), len(heads), -1)
        return {"logits": every[torch.arange(len(pooled), device=pooled.device), owner]}


class SingleLabel:
    """Targets, loss (with the class-imbalance options) and decoding for one label per row."""

    config: HeadConfig
    class_weights: torch.Tensor | None
    focal_gamma: float

    def targets(self, raw_labels: list[Any]) -> torch.Tensor:
        index = {label: i for i, label in enumerate(_labels(self.config))}
        unknown = sorted({str(label) for label in raw_labels if label not in index})
        if unknown:
            raise ValueError(f"labels {unknown[:5]} are not among the task's labels {self.config.labels}")
        return torch.tensor([index[label] for label in raw_labels], dtype=torch.long)

    def configure_loss(self, class_weights: torch.Tensor | None = None, focal_gamma: float = 0.0) -> None:
        self.class_weights, self.focal_gamma = class_weights, focal_gamma

    def loss(self, outputs: dict[str, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        return classification_loss(outputs["logits"], targets, self.class_weights, self.focal_gamma)

    @classmethod
    def decode_many(cls, heads: list[Head], owner: list[int], outputs: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        probs = outputs["logits"].float().softmax(-1)
        scores, best = probs.max(-1)
        return [{"label": _labels(heads[o].config)[i], "score": round(s, 6)}
                for o, i, s in zip(owner, best.tolist(), scores.tolist())]


class ClassificationHead(SingleLabel, PooledHead):
    kind = "classification"
    needs_labels = True
    config: PooledConfig

    def output_size(self) -> int:
        return len(_labels(self.config))


def _labels(config: HeadConfig) -> list[str]:
    """The labels of a head whose kind needs them (the hub builds such a head with its labels)."""
    assert config.labels is not None
    return config.labels
