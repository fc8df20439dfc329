"""Span-based NER (SpERT, Eberts & Ulges 2020): every span of up to `max_span_width` words is classified
as one entity type or none, so nested and overlapping entities are found too.

A span's vector is [first word, last word, mean of its words, width embedding] (word vectors are read
at each word's first sub-word, `label_positions`); the codec lists the spans to score per row
(`span_starts`, `span_ends`: word indices, -1 padding): at training the gold spans plus sampled
non-entity spans, when serving every span up to the maximum width.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from ..base import ExtraInput, Head, HeadConfig, HeadOptions
from ..losses import classification_loss
from ..tagging.head import LABEL_POSITIONS

NONE = 0  # output 0 is "not an entity"; output i + 1 is labels[i]
SPAN_STARTS = ExtraInput("span_starts", pad=-1)  # per listed span: its first word
SPAN_ENDS = ExtraInput("span_ends", pad=-1)  # and its last word (inclusive)


class SpanOptions(HeadOptions):
    max_span_width: int = Field(8, ge=1, le=64, description="longest span scored, in words")
    # fewer than SpERT's 100: over our few epochs 100 left recall low (benchmarks/results/ner_heads.md)
    negative_samples: int = Field(30, ge=0, description="non-entity spans sampled per training window")
    width_embedding: int = Field(25, ge=1)
    threshold: float = Field(0.5, gt=0.0, lt=1.0, description="an entity type must reach this probability")
    words: Literal["auto", "chars", "tokenizer"] = Field(
        "auto", description="how raw text is split into words (as for tagging)")
    dropout: float = Field(0.1, ge=0.0, lt=1.0)


class SpanConfig(SpanOptions, HeadConfig):
    pass


class SpanNERHead(Head):
    kind = "span_ner"
    needs_labels = True
    options_class = SpanOptions
    config_class = SpanConfig
    config: SpanConfig

    def __init__(self, config: SpanConfig):
        super().__init__(config)
        assert config.labels is not None  # a labelled kind: the hub builds it with its labels
        self.width = nn.Embedding(config.max_span_width + 1, config.width_embedding)
        self.dropout = nn.Dropout(config.dropout)
        self.out = nn.Linear(3 * config.hidden_size + config.width_embedding, len(config.labels) + 1)

    def configure_loss(self, class_weights: torch.Tensor | None = None, focal_gamma: float = 0.0) -> None:
        self.class_weights = None if class_weights is None else torch.cat([torch.ones(1), class_weights])
        self.focal_gamma = focal_gamma

    def extra_inputs(self) -> tuple[ExtraInput, ...]:
        return (LABEL_POSITIONS, SPAN_STARTS, SPAN_ENDS)

    def predict(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        hidden, positions = features["last_hidden_state"], features[LABEL_POSITIONS.name]
        words = hidden.gather(1, positions.clamp(min=0).unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))  # [n, W, H]
        starts, ends = features[SPAN_STARTS.name], features[SPAN_ENDS.name]  # [n, S]
        valid = starts >= 0
        first, last = starts.clamp(min=0), ends.clamp(min=0)
        pick = lambda index: words.gather(1, index.unsqueeze(-1).expand(-1, -1, words.shape[-1]))  # noqa: E731
        word_index = torch.arange(words.shape[1], device=words.device)
        inside = ((word_index >= first[..., None]) & (word_index <= last[..., None])).to(words.dtype)  # [n, S, W]
        mean = inside @ words / inside.sum(-1, keepdim=True).clamp(min=1.0)
        width = self.width((last - first + 1).clamp(max=self.config.max_span_width))
        vectors = torch.cat([pick(first), pick(last), mean, width], dim=-1)
        return {"logits": self.out(self.dropout(vectors)), "mask": valid}

    def targets(self, raw_labels: list[Any]) -> torch.Tensor:
        """Per row, the label of each listed span (None = not an entity) -> [n, S] ids, -100 padding."""
        assert self.config.labels is not None
        index = {label: i + 1 for i, label in enumerate(self.config.labels)}
        width = max((len(row) for row in raw_labels), default=0)
        out = torch.full((len(raw_labels), width), -100, dtype=torch.long)
        for r, row in enumerate(raw_labels):
            unknown = sorted({str(label) for label in row if label is not None and label not in index})
            if unknown:
                raise ValueError(f"entity types {unknown[:5]} are not among the task's labels {self.config.labels}")
            out[r, : len(row)] = torch.tensor([NONE if label is None else index[label] for label in row],
                                              dtype=torch.long)
        return out

    def loss(self, outputs: dict[str, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        logits = outputs["logits"]
        return classification_loss(logits, targets[:, : logits.shape[1]], self.class_weights, self.focal_gamma)

    def decode(self, outputs: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        """Per row: (span index, label, probability) of every span whose best type beats `none` and the threshold."""
        probs = outputs["logits"].float().softmax(-1).cpu()  # one copy off a GPU; the lists below read single values
        score, best = probs[..., 1:].max(-1)
        keep = outputs["mask"].cpu() & (score >= self.config.threshold) & (score > probs[..., NONE])
        labels = self.config.labels
        assert labels is not None
        return [
            {"spans": [(int(i), labels[int(best[r, i])], round(float(score[r, i]), 6))
                       for i in keep[r].nonzero().flatten()]}
            for r in range(probs.shape[0])
        ]
