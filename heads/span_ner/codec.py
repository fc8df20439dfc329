"""Codec for span-based NER: the tagging codec's words and windows, plus the spans each row scores.

Training rows list the gold spans and up to `negative_samples` non-entity spans drawn with a fixed,
per-sentence seed (a rerun samples the same ones); serving rows list every span up to `max_span_width`.
Results have the tagging format (entities with character offsets), and nested entities may overlap.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from ..codec import Row
from ..tagging.codec import TaggingCodec, TaggingExamples, TaggingRequest
from ..tagging.schemes import Scheme, detect_scheme, tags_for_spans, without_overlaps
from ..tagging.schemes import spans as tag_spans
from .head import SPAN_ENDS, SPAN_STARTS, SpanNERHead


class SpanCodec(TaggingCodec):
    head: SpanNERHead

    @property
    def scheme(self) -> Scheme:
        return "bio"  # only for the `tags` of a result (non-overlapping entities)

    @property
    def all_subwords(self) -> bool:
        return False

    def enumerate_spans(self, words: int) -> list[tuple[int, int]]:
        """Every (first, last) word pair of a row, inclusive, up to the maximum width."""
        width = self.head.config.max_span_width
        return [(i, j) for i in range(words) for j in range(i, min(words, i + width))]

    def with_spans(self, row: Row, spans: list[tuple[int, int]]) -> Row:
        row.extras[SPAN_STARTS.name] = [s for s, _ in spans]
        row.extras[SPAN_ENDS.name] = [e for _, e in spans]
        row.meta["spans"] = spans
        return row

    def training_spans(self, row: Row, gold: Sequence[tuple[int, int, str]], negatives: int,
                       rng: random.Random) -> tuple[dict[int, tuple[int, int]], dict[tuple[int, int], str],
                                                    list[tuple[int, int]]]:
        """A training window's spans: each gold entity (first word, end exclusive, type) that fits the window whole
        and the maximum width, by its index in `gold`, as (first, last) window words; those spans' types; and the
        spans to score, the gold ones sorted, then up to `negatives` other spans drawn with `rng`."""
        local = {word: i for i, word in enumerate(row.meta["owners"])}
        span_of: dict[int, tuple[int, int]] = {}
        labelled: dict[tuple[int, int], str] = {}
        for number, (first, stop, kind) in enumerate(gold):
            if first in local and stop - 1 in local and stop - first <= self.head.config.max_span_width:
                span_of[number] = (local[first], local[stop - 1])
                labelled[span_of[number]] = kind
        others = [span for span in self.enumerate_spans(len(local)) if span not in labelled]
        return span_of, labelled, sorted(labelled) + rng.sample(others, min(len(others), negatives))

    def encode(self, requests: Sequence[TaggingRequest]) -> list[list[Row]]:
        return [[self.with_spans(row, self.enumerate_spans(len(row.meta["owners"]))) for row in rows]
                for rows in super().encode(requests)]

    def finish(self, request: TaggingRequest, rows: list[Row], decoded: list[dict[str, Any]]) -> dict[str, Any]:
        found = []  # (first word, end word exclusive, type, score)
        for row, result in zip(rows, decoded):
            owners = row.meta["owners"]
            for index, label, score in result["spans"]:
                first, last = row.meta["spans"][index]
                found.append((owners[first], owners[last] + 1, label, score))
        entities = [{**self.place(request, start, end), "label": label, "score": score}
                    for start, end, label, score in sorted(found)]
        tags = tags_for_spans(len(request.words), without_overlaps([(s, e, k) for s, e, k, _ in found]), "bio")
        return {"tokens": request.words, "tags": tags, "entities": entities}


class SpanExamples(TaggingExamples):
    """Tagging's examples; nested and overlapping entities are all kept as gold spans."""

    codec: SpanCodec
    head: SpanNERHead

    def gold_spans(self, example: dict[str, Any]) -> tuple[list[str], list[tuple[int, int, str]]]:
        """Words and gold entities (first word, end exclusive, type); nested ones kept."""
        if "tokens" in example:
            scheme = detect_scheme(sorted(set(example["tags"])))  # an all-O sentence reads as 'plain': no entities
            return example["tokens"], tag_spans(example["tags"], scheme) if scheme != "plain" else []
        return self.word_spans(example)

    def features(self, example: dict[str, Any]) -> list[dict[str, Any]]:
        words, gold = self.gold_spans(example)
        pieces = self.codec.pieces([words])[0]
        rng = random.Random(" ".join(words))
        rows = []
        for start, end in self.codec.windows(pieces, keep_whole=[(s, e) for s, e, _ in gold]):
            row = self.codec.window_row(pieces, start, end)
            _, labelled, spans = self.codec.training_spans(row, gold, self.head.config.negative_samples, rng)
            self.codec.with_spans(row, spans)
            rows.append({"input_ids": row.input_ids, "token_type_ids": row.token_type_ids, **row.extras,
                         "labels": self.head.targets([[labelled.get(span) for span in spans]])[0].tolist()})
        return rows

    def prediction(self, result: dict[str, Any]) -> list[tuple[int, int, str]]:
        return sorted((e["start"], e["end"], e["label"]) for e in result["entities"])

    def reference(self, example: dict[str, Any]) -> list[tuple[int, int, str]]:
        if "tokens" in example:
            return sorted(self.gold_spans(example)[1])
        return sorted((s["start"], s["end"], s["label"]) for s in example["spans"])
