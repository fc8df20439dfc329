"""Sequence labelling (NER, POS, word segmentation): a tag per word, by softmax or a constrained CRF.

The head sees token-level hidden states and `label_positions` [n, W]: for each word, the index of the
token its tag is read from (the first sub-word; every sub-word with `label_all_subwords`), -1 for
padding. Text <-> words <-> sub-words is the tagging codec's job (codec.py).
"""

from __future__ import annotations

import re
from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from ..base import ExtraInput, Head, HeadConfig, HeadOptions
from ..losses import classification_loss
from .crf import CRF
from .schemes import SCHEME_PREFIXES, Scheme, check_labels, detect_scheme, transition_constraints

LABEL_POSITIONS = ExtraInput("label_positions", pad=-1)  # per word: the token its tag is read from
_TAG = re.compile(r"^(O|[BIMES])(-.+)?$")


class TaggingOptions(HeadOptions):
    scheme: Literal["auto", "bio", "bioes", "bmes", "plain"] = Field(
        "auto",
        description="tag scheme; auto: from the label names (B-/I- -> bio, E-/S- -> bioes, M -> bmes, else plain)")
    crf: bool = Field(False, description="a CRF layer with the scheme's transition constraints, Viterbi decoding")
    label_all_subwords: bool = Field(
        False, description="train on every sub-word (continuations keep the span), not only the first")
    words: Literal["auto", "chars", "tokenizer"] = Field(
        "auto", description=("how raw text is split into words: chars (Chinese), the tokenizer's words, "
                             "auto: by the backbone's language"))
    output: Literal["auto", "entities", "words"] = Field(
        "auto", description="results as `entities` (NER) or `words` (segmentation, POS); auto: words when no tag is O")
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    output_rank: int | None = Field(
        None, ge=1, description="project to this many units before the tags (hidden x rank + rank x tags weights "
                                "instead of hidden x tags): a smaller head for tag sets of hundreds (POS x BMES)")


class TaggingConfig(TaggingOptions, HeadConfig):
    @model_validator(mode="after")
    def _scheme_fits_labels(self) -> TaggingConfig:
        if self.labels:
            check_labels(self.resolved_scheme, self.labels)
        return self

    @property
    def resolved_scheme(self) -> Scheme:
        return detect_scheme(self.labels or []) if self.scheme == "auto" else self.scheme


class TaggingHead(Head):
    kind = "tagging"
    needs_labels = True
    options_class = TaggingOptions
    config_class = TaggingConfig
    config: TaggingConfig

    def __init__(self, config: TaggingConfig):
        super().__init__(config)
        assert config.labels is not None  # a labelled kind: the hub builds it with its labels
        self.scheme = config.resolved_scheme
        self.dropout = nn.Dropout(config.dropout)
        rank, tags = config.output_rank, len(config.labels)
        self.out: nn.Module = (nn.Linear(config.hidden_size, tags) if rank is None else
                               nn.Sequential(nn.Linear(config.hidden_size, rank, bias=False), nn.Linear(rank, tags)))
        self.crf = CRF(*transition_constraints(config.labels, self.scheme)) if config.crf else None

    @classmethod
    def expand_labels(cls, labels: list[str] | None, options: dict[str, Any]) -> list[str] | None:
        """Entity types (`[PER, ORG]`) with an explicit scheme become its tags (`O, B-PER, I-PER, ...`)."""
        scheme = options.get("scheme", "auto")
        if not labels or scheme not in SCHEME_PREFIXES or any(_TAG.match(label) for label in labels):
            return labels
        return ["O"] + [f"{prefix}-{kind}" for kind in labels for prefix in SCHEME_PREFIXES[scheme]]

    def extra_inputs(self) -> tuple[ExtraInput, ...]:
        return (LABEL_POSITIONS,)

    def derived_tensors(self) -> dict[str, torch.Tensor]:
        derived = super().derived_tensors()
        if self.crf is not None:  # built per pass rather than kept (crf.py)
            derived["crf.transition_penalty"] = self.crf.transition_penalty()
        return derived

    def upgrade_weights(self, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Files written before the CRF stored only its allowed transitions hold the full [from, to] matrix."""
        stored = weights.get("crf.transitions")
        if self.crf is None or stored is None or stored.shape != self.crf.transitions_allowed.shape:
            return weights  # today's layout, or a mismatch the shape check names
        return {**weights, "crf.transitions": self.crf.allowed_entries(stored)}

    def predict(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        positions = features[LABEL_POSITIONS.name]
        mask = positions >= 0
        hidden = features["last_hidden_state"]
        picked = hidden.gather(1, positions.clamp(min=0).unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
        return {"logits": self.out(self.dropout(picked)), "mask": mask}

    def targets(self, raw_labels: list[Any]) -> torch.Tensor:
        """Per-row lists of tag names (one per label position) -> [n, W] ids, -100 as padding."""
        assert self.config.labels is not None
        index = {tag: i for i, tag in enumerate(self.config.labels)}
        width = max((len(tags) for tags in raw_labels), default=0)
        out = torch.full((len(raw_labels), width), -100, dtype=torch.long)
        for row, tags in enumerate(raw_labels):
            unknown = sorted({t for t in tags if t not in index})
            if unknown:
                raise ValueError(f"tags {unknown[:5]} are not among the task's labels {self.config.labels}")
            out[row, : len(tags)] = torch.tensor([index[t] for t in tags], dtype=torch.long)
        return out

    def configure_loss(self, class_weights: torch.Tensor | None = None, focal_gamma: float = 0.0) -> None:
        if self.crf is not None:
            super().configure_loss(class_weights, focal_gamma)  # a CRF scores whole paths: no per-tag weights
        self.class_weights, self.focal_gamma = class_weights, focal_gamma

    def loss(self, outputs: dict[str, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        logits = outputs["logits"]
        targets = targets[:, : logits.shape[1]]
        if self.crf is not None:
            return self.crf.nll(logits, targets, outputs["mask"] & (targets >= 0))
        return classification_loss(logits, targets, self.class_weights, self.focal_gamma)

    def decode(self, outputs: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        """Per row: the tag and its probability at each label position (CRF: Viterbi path + marginals)."""
        logits, mask = outputs["logits"], outputs["mask"]
        labels = self.config.labels
        assert labels is not None
        if self.crf is None:
            probs = logits.float().softmax(-1).cpu()  # one copy off a GPU, not a sync per row and value
            paths = [row[m].tolist() for row, m in zip(probs.argmax(-1), mask.cpu())]
        else:
            probs = self.crf.marginals(logits, mask).cpu()
            paths = self.crf.viterbi(logits, mask)
        results = []
        for row, path in enumerate(paths):
            scores = (probs[row, torch.arange(len(path)), torch.tensor(path, dtype=torch.long)] if path
                      else torch.zeros(0))
            results.append({"tags": [labels[i] for i in path], "scores": [round(s, 6) for s in scores.tolist()]})
        return results
