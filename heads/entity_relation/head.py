"""Joint entity and relation extraction (SpERT, Eberts & Ulges 2020).

Entities: every span of up to `max_span_width` words is represented as its words' max-pooled vectors (or mean), a
learned width embedding and the sentence's [CLS] vector, and classified as an entity type or none. Relations: for
an ordered pair of spans (head, tail), both span representations and the max-pooled words BETWEEN them (localized
context; zeros when adjacent), scored per relation type by a sigmoid (multi-label: a pair may hold none). Training
lists the spans and pairs to score (gold plus sampled negatives, the codec's); serving scores every span, keeps
those classified as entities (of overlapping ones the most likely, unless `nested`), and scores every ordered pair
of them.

Word vectors are read at each word's first sub-word (`label_positions`), as span-based NER reads them.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import nn
from torch.nn import functional as F

from ..base import ExtraInput, Head, HeadConfig, HeadOptions
from ..codec import pad_lists
from ..span_ner.head import SPAN_ENDS, SPAN_STARTS
from ..tagging.head import LABEL_POSITIONS

NONE = 0  # entity output 0 is "not an entity"; output i + 1 is labels[i]
PAIR_HEADS = ExtraInput("pair_heads", pad=-1)  # training: per listed pair, its head span (an index into the spans)
PAIR_TAILS = ExtraInput("pair_tails", pad=-1)  # and its tail span


class EntityRelationOptions(HeadOptions):
    relations: list[str] = Field(min_length=1, description="the relation types (directed)")
    symmetric: list[str] = Field([], description="relation types that hold both ways: predicted in both directions")
    max_span_width: int = Field(10, ge=1, le=64, description="longest entity span scored, in words")
    negative_entities: int = Field(100, ge=0, description="non-entity spans sampled per training window (SpERT's)")
    negative_relations: int = Field(100, ge=0, description="unrelated entity pairs sampled per window (SpERT's)")
    width_embedding: int = Field(25, ge=1)
    span_pooling: Literal["max", "mean"] = "max"
    context: Literal["local", "sentence", "none"] = Field(
        "local", description="a relation's context: the words between its spans, the whole sentence, or none")
    relation_threshold: float = Field(0.4, gt=0.0, lt=1.0, description="a relation type must reach this probability")
    max_entities: int = Field(30, ge=2, description="serving: the most likely entities per window paired up")
    nested: bool = Field(False, description="serving keeps overlapping entity spans (nested data); by default, of "
                                            "overlapping spans only the most likely is an entity")
    words: Literal["auto", "chars", "tokenizer"] = Field(
        "auto", description="how raw text is split into words (as for tagging)")
    dropout: float = Field(0.1, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _symmetric_are_relations(self) -> EntityRelationOptions:
        unknown = sorted(set(self.symmetric) - set(self.relations))
        if unknown:
            raise ValueError(f"symmetric relation types {unknown} are not in relations {self.relations}")
        if len(set(self.relations)) != len(self.relations):
            raise ValueError("relations has duplicates; list each relation type once")
        return self


class EntityRelationConfig(EntityRelationOptions, HeadConfig):
    pass


class EntityRelationHead(Head):
    kind = "entity_relation"
    needs_labels = True
    options_class = EntityRelationOptions
    config_class = EntityRelationConfig
    config: EntityRelationConfig

    def __init__(self, config: EntityRelationConfig):
        super().__init__(config)
        assert config.labels is not None  # a labelled kind: the hub builds it with its labels
        hidden, width = config.hidden_size, config.width_embedding
        self.width = nn.Embedding(config.max_span_width + 1, width)
        self.dropout = nn.Dropout(config.dropout)
        self.entity = nn.Linear(2 * hidden + width, len(config.labels) + 1)
        self.relation = nn.Linear(3 * hidden + 2 * width, len(config.relations))

    def extra_inputs(self) -> tuple[ExtraInput, ...]:
        return LABEL_POSITIONS, SPAN_STARTS, SPAN_ENDS, PAIR_HEADS, PAIR_TAILS

    def predict(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        hidden, positions = features["last_hidden_state"], features[LABEL_POSITIONS.name]
        words = hidden.gather(1, positions.clamp(min=0).unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))  # [n, W, H]
        word_valid = positions >= 0
        starts, ends = features[SPAN_STARTS.name], features[SPAN_ENDS.name]  # [n, S] word indices, -1 padding
        span_valid = starts >= 0
        first, last = starts.clamp(min=0), ends.clamp(min=0)
        spans = torch.cat([_pool(words, word_valid, first, last, self.config.span_pooling),
                           self.width((last - first + 1).clamp(max=self.config.max_span_width))], dim=-1)
        sentence = hidden[:, 0]
        entity_logits = self.entity(self.dropout(torch.cat([spans, sentence[:, None].expand(-1, spans.shape[1], -1)],
                                                           dim=-1)))
        if self.training:  # the pairs are the labelled ones: which spans serving would take is not needed
            heads, tails = features[PAIR_HEADS.name], features[PAIR_TAILS.name]
            served: dict[str, torch.Tensor] = {}
        else:
            score, label = entity_logits.float().softmax(-1).max(-1)
            entities = self._entities(score, label, span_valid, first, last)
            heads, tails = self._entity_pairs(entities)
            served = {"entity_mask": entities, "entity_score": score, "entity_label": label}
        pair_valid = heads >= 0
        h, t = heads.clamp(min=0), tails.clamp(min=0)
        pick = lambda tensor, at: tensor.gather(1, at.unsqueeze(-1).expand(-1, -1, tensor.shape[-1]))  # noqa: E731
        context = self._context(words, word_valid, sentence, pick(first[..., None], h)[..., 0],
                                pick(last[..., None], h)[..., 0], pick(first[..., None], t)[..., 0],
                                pick(last[..., None], t)[..., 0])
        pairs = torch.cat([pick(spans, h), context, pick(spans, t)], dim=-1)
        return {"logits": entity_logits, "mask": span_valid, "relation_logits": self.relation(self.dropout(pairs)),
                "pair_heads": heads, "pair_tails": tails, "pair_mask": pair_valid, **served}

    def _context(self, words: torch.Tensor, word_valid: torch.Tensor, sentence: torch.Tensor, head_first: torch.Tensor,
                 head_last: torch.Tensor, tail_first: torch.Tensor, tail_last: torch.Tensor) -> torch.Tensor:
        """[n, P, H]: per pair, the words strictly between its two spans max-pooled (localized context), the
        sentence's [CLS] vector, or zeros, as `context` says."""
        pairs = head_first.shape[1]
        if self.config.context == "none":
            return words.new_zeros(words.shape[0], pairs, words.shape[-1])
        if self.config.context == "sentence":
            return sentence[:, None].expand(-1, pairs, -1)
        left_end, right_start = torch.minimum(head_last, tail_last), torch.maximum(head_first, tail_first)
        return _pool(words, word_valid, left_end + 1, right_start - 1, "max")

    def _entities(self, score: torch.Tensor, label: torch.Tensor, span_valid: torch.Tensor, first: torch.Tensor,
                  last: torch.Tensor) -> torch.Tensor:
        """[n, S]: the spans taken as entities (from each span's most likely label and its probability): classified as
        a type, at most `max_entities` per row (the most likely), and unless `nested`, none overlapping a more likely
        one."""
        candidates = (label != NONE) & span_valid
        kept = torch.zeros_like(candidates)
        for row in range(len(candidates)):
            taken: list[tuple[int, int]] = []
            for span in candidates[row].nonzero().flatten()[score[row][candidates[row]].argsort(descending=True)]:
                bounds = (int(first[row, span]), int(last[row, span]))
                if not self.config.nested and any(a <= bounds[1] and bounds[0] <= b for a, b in taken):
                    continue
                kept[row, span] = True
                taken.append(bounds)
                if len(taken) == self.config.max_entities:
                    break
        return kept

    @staticmethod
    def _entity_pairs(entities: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Serving: every ordered pair of a row's entities, as [n, P] span indices, -1 padding."""
        rows = [[(a, b) for a in chosen for b in chosen if a != b]
                for chosen in (row.nonzero().flatten().tolist() for row in entities)]
        return (pad_lists([[a for a, _ in row] for row in rows], -1).to(entities.device),
                pad_lists([[b for _, b in row] for row in rows], -1).to(entities.device))

    def targets(self, raw_labels: list[Any]) -> torch.Tensor:
        """Per row [entity label of each listed span (None: not an entity), then per listed pair the set of its
        relation types] -> [n, L] ids: span labels, then each pair's types as a bit mask; -100 padding."""
        assert self.config.labels is not None
        entity = {label: i + 1 for i, label in enumerate(self.config.labels)}
        relation = {label: i for i, label in enumerate(self.config.relations)}
        rows = [[entity[label] if label is not None else NONE for label in spans]
                + [sum(1 << relation[kind] for kind in kinds) for kinds in pairs] for spans, pairs in raw_labels]
        return pad_lists(rows, -100)

    def loss(self, outputs: dict[str, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        """Entity cross-entropy over the listed spans plus relation binary cross-entropy over the listed pairs' types,
        each averaged, summed with equal weights (SpERT's)."""
        spans, pairs = outputs["mask"], outputs["pair_mask"]
        span_counts, pair_counts = spans.sum(1), pairs.sum(1)
        entity_targets = torch.full(spans.shape, -100, dtype=torch.long, device=targets.device)
        bits = torch.zeros(pairs.shape, dtype=torch.long, device=targets.device)
        for row, (s, p) in enumerate(zip(span_counts.tolist(), pair_counts.tolist())):
            entity_targets[row, :s] = targets[row, :s]
            bits[row, :p] = targets[row, s:s + p]
        loss = F.cross_entropy(outputs["logits"].float().flatten(0, 1), entity_targets.flatten(), ignore_index=-100)
        if pairs.any():
            types = torch.arange(len(self.config.relations), device=targets.device)
            wanted = ((bits[..., None] >> types) & 1).float()
            loss = loss + F.binary_cross_entropy_with_logits(outputs["relation_logits"].float()[pairs], wanted[pairs])
        return loss

    def decode(self, outputs: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        """Per row: entities (span index, type, probability) and relations (head span, tail span, type, probability);
        a symmetric type found one way is also given the other way."""
        assert self.config.labels is not None
        score, label = outputs["entity_score"], outputs["entity_label"]
        relation_scores = outputs["relation_logits"].float().sigmoid()
        symmetric = set(self.config.symmetric)
        results = []
        for row in range(len(score)):
            entities = [(span, self.config.labels[int(label[row, span]) - 1], round(float(score[row, span]), 6))
                        for span in outputs["entity_mask"][row].nonzero().flatten().tolist()]
            relations: dict[tuple[int, int, str], float] = {}
            for pair in outputs["pair_mask"][row].nonzero().flatten().tolist():
                head, tail = int(outputs["pair_heads"][row, pair]), int(outputs["pair_tails"][row, pair])
                for kind, value in zip(self.config.relations, relation_scores[row, pair].tolist()):
                    if value >= self.config.relation_threshold:
                        for key in [(head, tail, kind)] + ([(tail, head, kind)] if kind in symmetric else []):
                            relations[key] = max(relations.get(key, 0.0), round(value, 6))
            results.append({"entities": entities,
                            "relations": [(*key, value) for key, value in sorted(relations.items())]})
        return results


def _pool(words: torch.Tensor, word_valid: torch.Tensor, first: torch.Tensor, last: torch.Tensor,
          how: str) -> torch.Tensor:
    """[n, R, H]: the words first..last (inclusive, [n, R] indices) of each range max-pooled (or averaged); zeros for
    a range without words. Max pooling reads a sparse table of maxima over power-of-two runs (two lookups per range):
    masking a [n, R, W, H] copy of the words per range took tens of seconds for the hundreds of spans and pairs a
    long text's windows hold."""
    if how == "mean":
        index = torch.arange(words.shape[1], device=words.device)
        inside = ((index >= first[..., None]) & (index <= last[..., None]) & word_valid[:, None, :]).to(words.dtype)
        return inside @ words / inside.sum(-1, keepdim=True).clamp(min=1.0)
    levels = [words]  # level k: the max of the 2**k words from each position
    while 2 ** len(levels) <= words.shape[1]:
        step = 2 ** (len(levels) - 1)
        shorter = torch.maximum(levels[-1][:, :-step], levels[-1][:, step:])
        levels.append(torch.cat([shorter, shorter.new_zeros(shorter.shape[0], step, shorter.shape[2])], dim=1))
    table = torch.stack(levels, dim=1)  # [n, levels, W, H]
    length = last - first + 1
    level = torch.floor(torch.log2(length.clamp(min=1).float())).long()
    rows = torch.arange(words.shape[0], device=words.device)[:, None]
    start = first.clamp(0, words.shape[1] - 1)
    end = (last - 2 ** level + 1).clamp(0, words.shape[1] - 1)
    pooled = torch.maximum(table[rows, level, start], table[rows, level, end])
    return torch.where((length > 0)[..., None], pooled, torch.zeros_like(pooled))
