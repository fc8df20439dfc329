"""Relation classification by position embeddings (`head.method: position`): learned head and tail marks added to
the row's input embeddings, never to other rows of the pass nor to the shared embedding matrix; it learns."""

from __future__ import annotations

import random

import pytest
import torch

import hub
from hub.registry import load_registry
from hub.training import train_task

from conftest import assert_same_result, random_request, tiny_registry, write_registry


@pytest.fixture(scope="module")
def position_hub(tmp_path_factory, tiny_backbone_dir):
    folder = tmp_path_factory.mktemp("position")
    document = tiny_registry(folder, tiny_backbone_dir)
    relations = next(t for t in document["tasks"] if t["name"] == "relations")
    relations["head"] = {"method": "position"}
    path = write_registry(folder, document)
    report = train_task(load_registry(path), "relations", progress=False)
    for other in ("sentiment", "paraphrase"):  # rows of other tasks share its passes
        train_task(load_registry(path), other, progress=False)
    return hub.Hub.load(path), report


def test_position_marks_only_the_entities_of_its_own_rows(position_hub):
    served, _ = position_hub
    runtime = served.runtime("relations")
    before = runtime.backbone.model.get_input_embeddings().weight.clone()
    request = {"text": "good beats dull", "head": [0, 4], "tail": [11, 15]}
    rows = runtime.codec.encode([runtime.codec.normalize(request)])[0]
    from heads.codec import collate_extras

    width = len(rows[0].input_ids) + 3  # padded wider than the row
    extras = collate_extras(runtime.head.extra_inputs(), [rows[0].extras], width)
    added = runtime.head.embedding_additions(extras, width)[0]
    first_head, last_head, first_tail, last_tail = rows[0].extras["entity_tokens"]
    marked = added.abs().sum(-1) > 0
    expected = torch.zeros(width, dtype=torch.bool)
    expected[first_head:last_head + 1] = expected[first_tail:last_tail + 1] = True
    assert torch.equal(marked, expected)
    assert torch.equal(runtime.backbone.model.get_input_embeddings().weight, before)


def test_position_rows_in_mixed_batches_answer_as_alone(position_hub):
    served, report = position_hub
    assert report["metrics"]["macro_f1"] > 0.5, report["metrics"]
    rng = random.Random(2)
    requests = [r for r in (random_request(rng) for _ in range(30)) if r[0] in ("relations", "sentiment", "paraphrase")]
    for request, together in zip(requests, served.run_many(requests)):
        assert_same_result(together, served.run(*request))
