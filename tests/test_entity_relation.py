"""Joint entity and relation extraction (heads/entity_relation, SpERT): its data reader's refusals, the strict metric,
the training rows (gold and sampled negative spans and pairs, directed relation bits), serving with offsets that slice
the text, symmetric types, and the trained tiny task finding its relations in the right direction."""

from __future__ import annotations

import json

import pytest
import torch

import hub
from heads.entity_relation.data import spert_examples, spert_types
from heads.entity_relation.head import EntityRelationConfig, EntityRelationHead
from hub.errors import DataError, RegistryError
from hub.metrics import compute_metric, evaluate_metric
from hub.registry import load_registry

from conftest import needs_shared_data


@pytest.fixture(scope="module")
def served(trained_registry):
    return hub.Hub.load(trained_registry)


def _sentence(**changes):
    row = {"tokens": ["good", "movie", "beats", "sad", "plot"],
           "entities": [{"type": "GOOD", "start": 0, "end": 1}, {"type": "BAD", "start": 3, "end": 5}],
           "relations": [{"type": "Beats", "head": 0, "tail": 1}]}
    return {**row, **changes}


@pytest.mark.parametrize("row, message", [
    (_sentence(tokens=[]), "non-empty strings"),
    (_sentence(tokens=["good", " ", "x"]), "non-empty strings"),
    (_sentence(entities=[{"type": "GOOD", "start": 2, "end": 2}]), r"tokens \[2, 2\) are not a span"),
    (_sentence(entities=[{"type": "GOOD", "start": 4, "end": 9}]), r"not a span of the sentence's 5 tokens"),
    (_sentence(entities=[{"type": "UGLY", "start": 0, "end": 1}]), "type 'UGLY' is not one of the task's labels"),
    (_sentence(entities=[{"start": 0, "end": 1}]), "needs integer 'start', 'end' and a 'type'"),
    (_sentence(relations=[{"type": "Beats", "head": 0, "tail": 2}]), "must be two of the sentence's 2 entities"),
    (_sentence(relations=[{"type": "Beats", "head": 1, "tail": 1}]), "must be two of"),
    (_sentence(relations=[{"type": "Loves", "head": 0, "tail": 1}]), "'Loves' is not one of head.relations"),
    ("not a sentence", "must be an object with a 'tokens' list"),
])
def test_bad_spert_rows_are_refused_naming_the_sentence_and_the_fix(trained_registry, row, message):
    task = load_registry(trained_registry).task("joint")
    with pytest.raises(DataError, match=message) as caught:
        spert_examples([_sentence(), row], task, "train.json")
    assert "train.json, sentence 2" in str(caught.value)


def test_the_strict_metric_needs_spans_types_and_direction():
    gold = [{"entities": [(0, 1, "GOOD"), (3, 5, "BAD")], "relations": [((0, 1, "GOOD"), (3, 5, "BAD"), "Beats")]}]
    same = compute_metric("joint_f1", gold, gold)
    assert same["relation_f1"] == same["entity_f1"] == same["boundaries_relation_f1"] == 1.0
    mistyped = [{"entities": [(0, 1, "BAD"), (3, 5, "BAD")], "relations": [((0, 1, "BAD"), (3, 5, "BAD"), "Beats")]}]
    scores = compute_metric("joint_f1", mistyped, gold)
    assert scores["relation_f1"] == 0.0 and scores["boundaries_relation_f1"] == 1.0  # spans right, a type wrong
    assert scores["entity_f1"] == 0.5 and scores["entity_macro_f1"] == pytest.approx((2 / 3 + 0.0) / 2)
    reversed_ = [{"entities": gold[0]["entities"], "relations": [((3, 5, "BAD"), (0, 1, "GOOD"), "Beats")]}]
    assert compute_metric("joint_f1", reversed_, gold)["relation_f1"] == 0.0  # a relation is directed
    assert evaluate_metric("joint_f1", mistyped, gold) == pytest.approx(scores)  # the `evaluate` module agrees


def test_training_rows_list_gold_and_sampled_negatives_with_directed_relation_bits(served):
    runtime = served.runtime("joint")
    config = runtime.head.config
    example = spert_examples([_sentence()], runtime.spec, "x")[0]
    (row,) = runtime.examples.features(example)
    spans = list(zip(row["span_starts"], row["span_ends"]))
    assert spans[:2] == [(0, 0), (3, 4)]  # the gold entities first (first and last word)
    assert len(spans) == 2 + min(config.negative_entities, 12 - 2)  # 5 words, widths 1-3: 12 spans in all
    pairs = list(zip(row["pair_heads"], row["pair_tails"]))
    assert pairs == [(0, 1), (1, 0)]  # the gold relation, then the reverse (unrelated) pair as a negative
    labels = row["labels"]
    assert labels[:2] == [1, 2] and all(label == 0 for label in labels[2:len(spans)])  # GOOD, BAD, then none
    assert labels[len(spans):] == [1, 0]  # Beats holds head -> tail only
    assert runtime.examples.features(example) == [row]  # the same negatives on a rerun


def test_serving_gives_offsets_that_slice_the_text_and_relations_between_them(served):
    text = "the good movie was sad and it is bad"
    result = served.run("joint", text)
    assert result["entities"], result
    for entity in result["entities"]:
        assert text[entity["start"]:entity["end"]] == entity["text"] and entity["label"] in ("GOOD", "BAD")
    for relation in result["relations"]:
        head, tail = result["entities"][relation["head"]], result["entities"][relation["tail"]]
        assert relation["label"] == "Beats" and 0.4 <= relation["score"] <= 1.0
        assert head["label"] == "GOOD" and tail["label"] == "BAD" and head["start"] < tail["start"]  # as it learned
    tokens = served.run("joint", ("love", "the", "dull", "plot"))  # pre-split tokens: token indices
    assert all(e["end"] - e["start"] >= 1 for e in tokens["entities"])


def test_the_tiny_task_learned_entities_and_directed_relations(trained_registry):
    from hub.card import card_metrics

    metrics = card_metrics(load_registry(trained_registry).adapter_dir(load_registry(trained_registry).task("joint")))
    assert metrics["entity_f1"] > 0.6 and metrics["relation_f1"] > 0.4, metrics


def test_a_symmetric_type_is_given_both_ways():
    config = EntityRelationConfig.model_validate({"kind": "entity_relation", "hidden_size": 4, "labels": ["A"],
                                                  "relations": ["Near", "Owns"], "symmetric": ["Near"]})
    head = EntityRelationHead(config)
    outputs = {"logits": torch.tensor([[[0.0, 5.0], [0.0, 5.0]]]), "mask": torch.tensor([[True, True]]),
               "entity_mask": torch.tensor([[True, True]]), "entity_score": torch.tensor([[0.99, 0.99]]),
               "entity_label": torch.tensor([[1, 1]]),
               "relation_logits": torch.tensor([[[3.0, 3.0]]]), "pair_heads": torch.tensor([[0]]),
               "pair_tails": torch.tensor([[1]]), "pair_mask": torch.tensor([[True]])}
    relations = {(h, t, kind) for h, t, kind, _ in head.decode(outputs)[0]["relations"]}
    assert relations == {(0, 1, "Near"), (1, 0, "Near"), (0, 1, "Owns")}
    with pytest.raises(ValueError, match="symmetric relation types \\['Kin'\\]"):
        EntityRelationConfig.model_validate({"kind": "entity_relation", "hidden_size": 4, "labels": ["A"],
                                             "relations": ["Near"], "symmetric": ["Kin"]})


def test_a_text_longer_than_the_window_is_read_in_windows(served):
    words = " ".join(["the good movie was sad"] * 30)  # far more than the tiny backbone's window
    result = served.run("joint", words)
    assert all(words[e["start"]:e["end"]] == e["text"] for e in result["entities"])
    assert len(served.runtime("joint").codec.encode([served.runtime("joint").codec.normalize(words)])[0]) > 1


def _types(tmp_path, relations=None, entities=("GOOD", "BAD")):
    path = tmp_path / "types.json"
    path.write_text(json.dumps({"entities": {name: {"short": name} for name in entities},
                                "relations": relations if relations is not None else {"Beats": {"symmetric": True}}}))
    return path


def test_the_types_file_marks_symmetric_relations_and_must_match_the_task(trained_registry, tmp_path):
    task = load_registry(trained_registry).task("joint")
    assert spert_types(_types(tmp_path), task) == {"symmetric": ["Beats"]}
    assert spert_types(_types(tmp_path, {"Beats": {"symmetric": False}}), task) == {"symmetric": []}
    with pytest.raises(DataError, match=r"entity types \['BAD', 'GOOD', 'UGLY'\] are not the task's labels"):
        spert_types(_types(tmp_path, entities=("GOOD", "BAD", "UGLY")), task)
    with pytest.raises(DataError, match=r"relation types \['Loves'\] are not the task's head.relations"):
        spert_types(_types(tmp_path, {"Loves": {}}), task)
    with pytest.raises(DataError, match="no such file"):
        spert_types(tmp_path / "absent.json", task)
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(DataError, match="not SpERT's types file"):
        spert_types(tmp_path / "bad.json", task)
    disagreeing = task.model_copy(update={"head": {**task.head, "symmetric": []}})
    with pytest.raises(DataError, match=r"head.symmetric \[\] disagrees with data.types"):
        spert_types(_types(tmp_path), disagreeing)


def test_training_takes_symmetric_types_from_the_types_file(trained_registry, tmp_path):
    import yaml

    from hub.training import _build_model

    document = yaml.safe_load(trained_registry.read_text())
    joint = next(task for task in document["tasks"] if task["name"] == "joint")
    joint["data"]["types"] = str(_types(tmp_path))
    document["tasks"] = [joint]
    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump(document))
    registry = load_registry(path, strict_adapters=False)
    model, _ = _build_model(registry, registry.task("joint"), registry.task("joint").train)
    assert model.head.config.symmetric == ["Beats"]  # saved in head_config.json, so serving predicts both ways
    joint["kind"], joint["labels"], joint["head"] = "span_ner", ["GOOD", "BAD"], {}
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(RegistryError, match="data.types: kind 'span_ner' reads no types file"):
        load_registry(path, strict_adapters=False)


def test_training_windows_keep_gold_entities_whole(served):
    codec = served.runtime("joint").codec
    words = ["good"] * 60  # one sub-word each: more than the tiny backbone's window (24 tokens)
    pieces = codec.pieces([words])[0]
    plain = codec.windows(pieces)
    boundary = plain[0][1]
    entity = (boundary - 1, boundary + 2)  # straddles the plain first window's end; 3 words: max_span_width
    kept = codec.windows(pieces, keep_whole=[entity])
    assert kept[0] == (0, entity[0]) and kept[1][0] == entity[0] and kept[1][1] >= entity[1]
    assert [start for start, _ in kept[1:]] == [end for _, end in kept[:-1]] and kept[-1][1] == len(words)
    too_long = (0, len(words))  # longer than any window: cut where it overflows, as without it
    assert codec.windows(pieces, keep_whole=[too_long]) == plain
    example = {"tokens": words, "entities": [{"start": entity[0], "end": entity[1], "type": "GOOD"}], "relations": []}
    rows = served.runtime("joint").examples.features(example)
    assert any(row["labels"][0] == 1 for row in rows)  # the straddling entity is a gold span of some window


@needs_shared_data
def test_conll04_reads_in_spert_format(tmp_path):
    from hub.data import load_split

    registry = load_registry(hub.default_registry_path(), strict_adapters=False)
    task = registry.task("conll04")
    train, dev = (load_split(registry, task, split) for split in ("train", "dev"))
    assert (len(train), len(dev)) == (922, 231)
    assert sum(len(e["relations"]) for e in train) > 1000
    types = json.loads((registry.resolve("../shared/data/conll04/types.json")).read_text())
    assert set(task.labels or []) == set(types["entities"]) and set(task.head["relations"]) == set(types["relations"])


def test_max_pooling_over_word_ranges_equals_a_masked_max():
    from heads.entity_relation.head import _pool

    torch.manual_seed(0)
    for width in (1, 2, 3, 7, 16, 37):
        words = torch.randn(3, width, 8)
        lengths = torch.tensor([width, max(1, width - 2), max(1, width // 2)])
        valid = torch.arange(width)[None] < lengths[:, None]
        first = torch.stack([torch.randint(0, int(n), (50,)) for n in lengths])
        last = torch.stack([torch.randint(-1, int(n), (50,)) for n in lengths])  # some ranges empty (last < first)
        index = torch.arange(width)
        inside = (index >= first[..., None]) & (index <= last[..., None]) & valid[:, None, :]
        masked = words[:, None].masked_fill(~inside[..., None], float("-inf")).amax(2)
        expected = torch.where(inside.any(-1, keepdim=True), masked, torch.zeros_like(masked))
        assert torch.equal(_pool(words, valid, first, last, "max"), expected), width
