"""Span-based NER: span enumeration, negative sampling, nested entities, decoding, the span F1 metric."""

from __future__ import annotations

import pytest
import torch

from heads import KINDS
from hub.metrics import compute_metric


def examples(codec):
    """The training/evaluation side of a serving codec."""
    return KINDS[codec.task.kind].examples(codec)


@pytest.fixture
def codec(tiny_hub):
    return tiny_hub.runtime("spans").codec


def test_every_span_up_to_the_maximum_width_is_scored(codec):
    row = codec.encode([codec.normalize(("good", "movie", "was", "dull", "very"))])[0][0]
    spans = row.meta["spans"]
    assert spans == [(i, j) for i in range(5) for j in range(i, min(5, i + 3))]  # max_span_width 3
    assert row.extras["span_starts"] == [s for s, _ in spans] and row.extras["span_ends"] == [e for _, e in spans]


def test_training_lists_gold_spans_and_a_fixed_sample_of_negatives(codec):
    example = {"tokens": ["the", "good", "fine", "movie", "was", "very", "dull", "plot", "it", "is"],
               "tags": ["O", "B-GOOD", "I-GOOD", "O", "O", "O", "B-BAD", "O", "O", "O"]}
    rows = examples(codec).features(example)
    assert len(rows) == 1
    row = rows[0]
    spans = list(zip(row["span_starts"], row["span_ends"]))
    labels = dict(zip(spans, row["labels"]))
    assert labels[(1, 2)] == 1 and labels[(6, 6)] == 2  # GOOD, BAD (0 = not an entity)
    negatives = [s for s, label in labels.items() if label == 0]
    assert len(negatives) == 10 and (1, 2) not in negatives  # negative_samples 10, never a gold span
    assert examples(codec).features(example)[0]["span_starts"] == row["span_starts"]  # the same sample on a rerun


def test_nested_character_spans_are_kept(codec):
    example = {"text": "good fine movie", "spans": [{"start": 0, "end": 9, "label": "GOOD"}, {"start": 5, "end": 9, "label": "GOOD"}]}
    row = examples(codec).features(example)[0]
    labelled = {s for s, label in zip(zip(row["span_starts"], row["span_ends"]), row["labels"]) if label}
    assert labelled == {(0, 1), (1, 1)}
    assert examples(codec).reference(example) == [(0, 9, "GOOD"), (5, 9, "GOOD")]


def test_finish_reports_overlapping_entities_with_offsets(codec):
    text = "good fine movie"
    request = codec.normalize(text)
    rows = codec.encode([request])[0]
    index = {span: i for i, span in enumerate(rows[0].meta["spans"])}
    decoded = [{"spans": [(index[(0, 1)], "GOOD", 0.9), (index[(1, 1)], "GOOD", 0.8)]}]
    result = codec.finish(request, rows, decoded)
    assert [(e["text"], e["start"], e["end"]) for e in result["entities"]] == [("good fine", 0, 9), ("fine", 5, 9)]
    assert result["tags"] == ["B-GOOD", "I-GOOD", "O"]  # tags can hold only one of them: the longest


def test_decode_needs_the_type_to_beat_none_and_the_threshold():
    head = KINDS["span_ner"].head.from_options({"threshold": 0.6}, hidden_size=4, labels=["A", "B"]).eval()
    logits = torch.tensor([[[0.0, 3.0, 0.0], [2.0, 1.9, 0.0], [0.0, 0.5, 0.6], [0.0, 9.0, 0.0]]])
    decoded = head.decode({"logits": logits, "mask": torch.tensor([[True, True, True, False]])})[0]["spans"]
    assert [(i, label) for i, label, _ in decoded] == [(0, "A")]


def test_span_f1_counts_nested_entities():
    scores = compute_metric("span_f1", [[(0, 2, "A"), (1, 2, "A")], [(0, 1, "B")]], [[(0, 2, "A"), (1, 2, "B")], [(0, 1, "B")]])
    assert scores["precision"] == pytest.approx(2 / 3) and scores["recall"] == pytest.approx(2 / 3)
    assert scores["f1_A"] == pytest.approx(2 / 3) and scores["f1_B"] == pytest.approx(2 / 3)
