"""The heads the pre-training objectives train beside a domain adapter and its masked-LM head (heads/fill_mask: the
head a fill-mask task serves): SpanBERT's span boundary head, and BERT's next-sentence head."""

from __future__ import annotations

import torch
from torch import nn


class SpanBoundaryHead(nn.Module):
    """SpanBERT's span boundary objective: each masked token of a span predicted from the encoder's outputs just
    outside the span and an embedding of its place in the span, through two GELU + layer norm layers; the result
    is scored by the masked-LM head."""

    def __init__(self, hidden: int, max_span_tokens: int = 64, position_size: int = 200,
                 layer_norm_eps: float = 1e-12):
        super().__init__()
        self.max_span_tokens = max_span_tokens
        self.positions = nn.Embedding(max_span_tokens, position_size)
        self.layers = nn.Sequential(
            nn.Linear(2 * hidden + position_size, hidden), nn.GELU(), nn.LayerNorm(hidden, eps=layer_norm_eps),
            nn.Linear(hidden, hidden), nn.GELU(), nn.LayerNorm(hidden, eps=layer_norm_eps))

    def forward(self, hidden_states: torch.Tensor, rows: torch.Tensor, left: torch.Tensor, right: torch.Tensor,
                offsets: torch.Tensor) -> torch.Tensor:
        """One output [targets, hidden] per target token: its row, the positions just before and after its span
        (`left`, `right`) and its offset from the span's start."""
        if offsets.numel() and int(offsets.max()) >= self.max_span_tokens:
            raise ValueError(f"a span of more than {self.max_span_tokens} tokens; raise max_span_tokens or mask "
                             "shorter spans")
        features = torch.cat([hidden_states[rows, left], hidden_states[rows, right], self.positions(offsets)], dim=-1)
        return self.layers(features)


class NextSentenceHead(nn.Module):
    """A binary classifier on the pair's first token ([CLS]): does the second sentence follow the first?"""

    def __init__(self, hidden: int):
        super().__init__()
        self.classifier = nn.Linear(hidden, 2)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """[rows, tokens, hidden] -> [rows, 2] scores (1: is next)."""
        return self.classifier(hidden_states[:, 0])
