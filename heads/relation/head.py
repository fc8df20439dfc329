"""Relation classification between a head and a tail entity of one text (direction matters).

Two representations of the literature, chosen by `method`:
- `markers` (Baldini Soares et al. 2019; Zhou & Chen 2021): the codec wraps the head in `@ ... @` and
  the tail in `# ... #` — punctuation already in every BERT vocabulary, so the frozen backbone's
  embedding matrix never changes and stays shared — and the head reads the two opening markers;
- `pooled`: the plain text, the mean of each entity's tokens;
- `position`: `pooled`, with a learned embedding marking the head's and the tail's tokens added to the backbone's
  input embeddings of the row (position embeddings of the relation, in the embedding layer): the shared embedding
  matrix is unchanged and rows of other tasks in the same pass get nothing added (`embedding_additions`).
Each way `[head vector, tail vector]` goes into a linear layer.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from ..base import ExtraInput, Head, HeadConfig, HeadOptions
from ..classification.head import SingleLabel

ENTITY_TOKENS = ExtraInput("entity_tokens", pad=0)  # first and last token of the head entity, then of the tail


class RelationOptions(HeadOptions):
    method: Literal["markers", "pooled", "position"] = Field(
        "markers", description="entity marker tokens, pooled entity tokens without markers, or pooled with learned "
                               "head / tail embeddings added to the input embeddings")
    dropout: float = Field(0.1, ge=0.0, lt=1.0)


class RelationConfig(RelationOptions, HeadConfig):
    pass


class RelationHead(SingleLabel, Head):
    kind = "relation"
    needs_labels = True
    options_class = RelationOptions
    config_class = RelationConfig
    config: RelationConfig

    def __init__(self, config: RelationConfig):
        super().__init__(config)
        assert config.labels is not None  # a labelled kind: the hub builds it with its labels
        self.dropout = nn.Dropout(config.dropout)
        self.out = nn.Linear(2 * config.hidden_size, len(config.labels))
        if config.method == "position":  # 0: neither entity (always zero), 1: a head token, 2: a tail token
            self.marks = nn.Embedding(3, config.hidden_size, padding_idx=0)
            nn.init.normal_(self.marks.weight[1:], std=0.02)

    def extra_inputs(self) -> tuple[ExtraInput, ...]:
        return (ENTITY_TOKENS,)

    def embedding_additions(self, extras: dict[str, torch.Tensor], width: int) -> torch.Tensor | None:
        """`position`: [n, width, H], the head mark on the head's tokens and the tail mark on the tail's."""
        if self.config.method != "position":
            return None
        spans = extras[ENTITY_TOKENS.name]
        positions = torch.arange(width, device=spans.device)
        marks = torch.zeros(len(spans), width, dtype=torch.long, device=spans.device)
        for mark, (first, last) in ((1, (spans[:, 0], spans[:, 1])), (2, (spans[:, 2], spans[:, 3]))):
            marks[(positions >= first[:, None]) & (positions <= last[:, None])] = mark
        return self.marks(marks)

    def predict(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """`entity_tokens` [n, 4]: first and last token of the head, then of the tail (markers included)."""
        hidden, spans = features["last_hidden_state"], features[ENTITY_TOKENS.name]
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        if self.config.method == "markers":
            vectors = [hidden[rows, spans[:, 0]], hidden[rows, spans[:, 2]]]
        else:
            positions = torch.arange(hidden.shape[1], device=hidden.device)
            vectors = []
            for first, last in ((spans[:, 0], spans[:, 1]), (spans[:, 2], spans[:, 3])):
                inside = ((positions >= first[:, None]) & (positions <= last[:, None])).unsqueeze(-1).to(hidden.dtype)
                vectors.append((hidden * inside).sum(1) / inside.sum(1).clamp(min=1.0))
        return {"logits": self.out(self.dropout(torch.cat(vectors, dim=-1)))}
