"""Codec for joint entity and relation extraction: span-based NER's words, windows and spans, plus the pairs each
training row scores.

Training rows list the gold entity spans and up to `negative_entities` non-entity spans, and the gold relations plus
up to `negative_relations` ordered pairs of gold entities without one, both drawn with a fixed per-sentence seed (a
rerun samples the same ones). Serving rows list every span up to `max_span_width`; the head pairs up the spans it
classifies as entities. A text longer than the window is read in consecutive windows of whole words; entities and
relations are found within a window. Training windows do not end inside a gold entity (`windows(keep_whole=)`)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from ..codec import Row
from ..span_ner.codec import SpanCodec
from ..tagging.codec import TaggingExamples, TaggingRequest
from .head import PAIR_HEADS, PAIR_TAILS, EntityRelationHead

Entity = tuple[int, int, str]  # first word, end word (exclusive), type


class EntityRelationCodec(SpanCodec):
    head: EntityRelationHead  # type: ignore[assignment]

    def with_pairs(self, row: Row, pairs: list[tuple[int, int]]) -> Row:
        row.extras[PAIR_HEADS.name] = [h for h, _ in pairs]
        row.extras[PAIR_TAILS.name] = [t for _, t in pairs]
        return row

    def encode(self, requests: Sequence[TaggingRequest]) -> list[list[Row]]:
        return [[self.with_pairs(row, []) for row in rows] for rows in super().encode(requests)]

    def finish(self, request: TaggingRequest, rows: list[Row], decoded: list[dict[str, Any]]) -> dict[str, Any]:
        """Entities (text, offsets, type, score) and relations (head and tail: indices into the entities)."""
        entities: dict[Entity, float] = {}
        relations: dict[tuple[Entity, Entity, str], float] = {}
        for row, result in zip(rows, decoded):
            kinds = {span: kind for span, kind, _ in result["entities"]}
            for span, kind, score in result["entities"]:
                key = _entity(row, span, kind)
                entities[key] = max(entities.get(key, 0.0), score)
            for head, tail, kind, score in result["relations"]:
                pair = (_entity(row, head, kinds[head]), _entity(row, tail, kinds[tail]), kind)
                relations[pair] = max(relations.get(pair, 0.0), score)
        order = sorted(entities)
        index = {key: i for i, key in enumerate(order)}
        return {"entities": [{**self.place(request, start, end), "label": kind, "score": entities[(start, end, kind)]}
                             for start, end, kind in order],
                "relations": [{"head": index[head], "tail": index[tail], "label": kind, "score": score}
                              for (head, tail, kind), score in sorted(relations.items(), key=lambda item: (
                                  index[item[0][0]], index[item[0][1]], item[0][2]))]}


def _entity(row: Row, span: int, kind: str) -> Entity:
    """A row's listed span as the request's words (first, end exclusive) with its type."""
    first, last = row.meta["spans"][span]
    return row.meta["owners"][first], row.meta["owners"][last] + 1, kind


class EntityRelationExamples(TaggingExamples):
    """SpERT examples: `tokens`, `entities` (first word, end exclusive, type) and `relations` (head and tail
    entity indices, type)."""

    codec: EntityRelationCodec
    head: EntityRelationHead

    def features(self, example: dict[str, Any]) -> list[dict[str, Any]]:
        words = example["tokens"]
        gold = [(e["start"], e["end"], e["type"]) for e in example["entities"]]
        pieces = self.codec.pieces([words])[0]
        rng = random.Random(" ".join(words))
        config = self.head.config
        rows = []
        for start, end in self.codec.windows(pieces, keep_whole=[(s, e) for s, e, _ in gold]):
            row = self.codec.window_row(pieces, start, end)
            span_of, labelled, spans = self.codec.training_spans(row, gold, config.negative_entities, rng)
            position = {span: i for i, span in enumerate(spans)}
            related: dict[tuple[int, int], set[str]] = {}
            for relation in example["relations"]:
                head, tail = relation["head"], relation["tail"]
                if head in span_of and tail in span_of:
                    related.setdefault((position[span_of[head]], position[span_of[tail]]), set()).add(relation["type"])
            entities = sorted({position[span] for span in span_of.values()})
            unrelated = [(a, b) for a in entities for b in entities if a != b and (a, b) not in related]
            pairs = sorted(related) + rng.sample(unrelated, min(len(unrelated), config.negative_relations))
            self.codec.with_spans(row, spans)
            self.codec.with_pairs(row, pairs)
            labels = self.head.targets([([labelled.get(span) for span in spans],
                                         [sorted(related.get(pair, ())) for pair in pairs])])[0].tolist()
            rows.append({"input_ids": row.input_ids, "token_type_ids": row.token_type_ids, **row.extras,
                         "labels": labels})
        return rows

    def request(self, example: dict[str, Any]) -> list[str]:
        return list(example["tokens"])

    def prediction(self, result: dict[str, Any]) -> dict[str, list]:
        entities = [(e["start"], e["end"], e["label"]) for e in result["entities"]]
        relations = [(entities[r["head"]], entities[r["tail"]], r["label"]) for r in result["relations"]]
        return {"entities": sorted(entities), "relations": sorted(relations)}

    def reference(self, example: dict[str, Any]) -> dict[str, list]:
        entities = [(e["start"], e["end"], e["type"]) for e in example["entities"]]
        relations = {(entities[r["head"]], entities[r["tail"]], r["type"]) for r in example["relations"]}
        return {"entities": sorted(set(entities)), "relations": sorted(relations)}
