"""Every registered task kind honours the plug-in contract (heads/kind.py): mixed batches equal one at a time, its
head saves and loads back, bad input gives the project's errors, its rows carry exactly the extra inputs its head
declares, its inputs match its declared schema; and a kind the core has never seen registers, trains and serves.

A new kind adds its case to CASES (a task of that kind in the trained tiny registry, and inputs for it).
"""

from __future__ import annotations

import json

import jsonschema
import pytest
import torch

from heads import KINDS, Head, KindError, register_kind
from heads.classification.codec import TextCodec, TextExamples
from heads.classification.data import text_examples
from heads.classification.head import ClassificationHead
from heads.codec import collate_extras
from heads.resident import StoredLinear
from hub.data import load_split
from hub.errors import DataError, InputError
from hub.metrics import METRICS

from conftest import assert_same_result, tiny_registry, write_registry

CASES = {  # kind -> (task of the trained tiny registry, inputs of that task)
    "classification": ("sentiment", ["good movie", "the plot was very dull", "a"]),
    "regression": ("similarity", [("good movie", "great book"), ("dull", "the plot was very dull and sad")]),
    "tagging": ("entities", ["the movie was good", ("bad", "plot"), "it is"]),
    "span_ner": ("spans", ["good fine movie was bad", ("love", "it")]),
    "qa": ("reader", [{"question": "what is good?", "context": "the movie was great and the book was good"}]),
    "relation": ("relations", ["the <e1>movie</e1> beats the <e2>book</e2>",
                               {"text": "good plot beats bad plot", "head": [0, 9], "tail": [16, 24]}]),
    "entity_relation": ("joint", ["the good movie was sad and it is bad", ("love", "the", "dull", "plot")]),
    "fill_mask": ("fill", ["the a movie [MASK] was", {"text": "[MASK] very [MASK] plot", "top_k": 2}]),
}
BAD_INPUTS = [None, 42, 4.5, True, b"bytes", "", "   ", [], {}, {"not a field": "x"}, "\ud800"]  # bad for every kind


def test_every_registered_kind_has_a_conformance_case():
    assert set(KINDS) == set(CASES), "add the new kind's task and inputs to CASES"


@pytest.fixture(params=sorted(KINDS))
def case(request, tiny_hub):
    task, inputs = CASES[request.param]
    runtime = tiny_hub.runtime(task)
    assert runtime.spec.kind == request.param
    return request.param, runtime, inputs


def test_the_record_is_what_the_hub_uses(case):
    name, runtime, _ = case
    record = KINDS[name]
    assert isinstance(runtime.head, record.head) and isinstance(runtime.codec, record.codec)
    assert isinstance(runtime.examples, record.examples) and record.default_metric in METRICS
    assert record.options is record.head.options_class


def test_mixed_batch_equals_one_at_a_time(case, tiny_hub):
    name, runtime, inputs = case
    others = [(CASES[k][0], CASES[k][1][0]) for k in sorted(CASES) if k != name]
    requests = [item for value in inputs for item in [(runtime.spec.name, value), *others]]
    together = tiny_hub.run_many(requests)
    for (task, value), result in zip(requests, together):
        assert_same_result(result, tiny_hub.run_many([(task, value)])[0])


def test_head_saves_and_loads_back(case, tmp_path):
    _, runtime, inputs = case
    runtime.head.save(tmp_path)
    loaded = Head.load(tmp_path)
    # what serving does beside a backbone (fill-mask ties its decoder and leaves out the special tokens)
    loaded.bind(runtime.backbone.model, runtime.backbone.tokenizer.all_special_ids)
    assert type(loaded) is type(runtime.head) and loaded.config == runtime.head.config
    state, reloaded = runtime.head.state_dict(), loaded.state_dict()
    assert state.keys() == reloaded.keys() and all(torch.equal(state[k], reloaded[k]) for k in state)
    rows = runtime.codec.encode([runtime.codec.normalize(inputs[0])])[0]
    with torch.inference_mode():
        features = runtime.backbone.encode(rows, [runtime.adapter] * len(rows), runtime.head.needs_all_layers)
        width = features["attention_mask"].shape[1]
        features.update(collate_extras(runtime.head.extra_inputs(), [r.extras for r in rows], width))
        assert loaded.decode(loaded(features)) == runtime.head.decode(runtime.head(features))


@pytest.mark.parametrize("storage", ["float16", "int8"])
def test_head_stored_smaller_loads_back_within_its_rounding(case, tmp_path, storage):
    """float16 and int8 (a float32 scale per row) files: every tensor comes back within the rounding of its row."""
    _, runtime, _ = case
    runtime.head.save(tmp_path, storage)
    loaded = Head.load(tmp_path)
    state, reloaded = runtime.head.state_dict(), loaded.state_dict()
    assert state.keys() == reloaded.keys()
    for name, value in state.items():
        rows = value.reshape(value.shape[0] if value.dim() > 1 else 1, -1).abs().amax(dim=1, keepdim=True)
        step = rows / 127 / 2 if storage == "int8" else rows * 2.0 ** -11  # half an int8 step; float16's precision
        error = (reloaded[name] - value).reshape(rows.shape[0], -1).abs()
        assert reloaded[name].dtype == torch.float32 and (error <= step + 1e-8).all(), name


@pytest.mark.parametrize("storage", ["float16", "int8"])
def test_a_served_head_keeps_its_stored_bytes_and_answers_as_loaded(case, tmp_path, storage):
    """Serving loads heads `resident`: Linear weights stay float16 / int8 in memory and are widened in the pass, to
    the values (state, outputs, decoded answers) of the same file loaded in float32, in fewer bytes."""
    _, runtime, inputs = case
    runtime.head.save(tmp_path, storage)
    loaded, served = Head.load(tmp_path), Head.load(tmp_path, resident=True)
    loaded.bind(runtime.backbone.model)
    served.bind(runtime.backbone.model)
    state, served_state = loaded.state_dict(), served.state_dict()
    assert state.keys() == served_state.keys() and all(torch.equal(state[k], served_state[k]) for k in state)
    linears = [name for name, module in loaded.named_modules() if isinstance(module, torch.nn.Linear)]
    assert linears and all(isinstance(served.get_submodule(name), StoredLinear) for name in linears)
    kept = [b for b in served.buffers() if b.dtype == (torch.float16 if storage == "float16" else torch.int8)]
    scales = [b for name, b in served.named_buffers() if name.endswith("scale")]
    held = lambda head: sum(t.numel() * t.element_size() for t in [*head.parameters(), *head.buffers()])  # noqa: E731
    saved = sum((4 - t.element_size()) * t.numel() for t in kept) - sum(4 * t.numel() for t in scales)
    assert held(loaded) - held(served) == saved > 0  # no float32 copy of a kept tensor stays behind
    rows = runtime.codec.encode([runtime.codec.normalize(value) for value in inputs])[0]
    with torch.inference_mode():
        features = runtime.backbone.encode(rows, [runtime.adapter] * len(rows), runtime.head.needs_all_layers)
        width = features["attention_mask"].shape[1]
        features.update(collate_extras(runtime.head.extra_inputs(), [r.extras for r in rows], width))
        expected, outputs = loaded(features), served(features)
        assert all(torch.equal(expected[k], outputs[k]) for k in expected)
        assert served.decode(outputs) == loaded.decode(expected)
    (tmp_path / "again").mkdir()
    served.save(tmp_path / "again", storage)  # a served head saves as the loaded one does
    again = Head.load(tmp_path / "again").state_dict()
    assert all(torch.allclose(again[k], state[k]) for k in state)


@pytest.mark.parametrize("value", BAD_INPUTS, ids=repr)
def test_bad_inputs_give_input_errors(case, tiny_hub, value):
    _, runtime, _ = case
    with pytest.raises(InputError):
        tiny_hub.run_many([(runtime.spec.name, value)])


def test_rows_carry_exactly_the_extra_inputs_the_head_declares(case, tiny_hub):
    _, runtime, inputs = case
    declared = {spec.name for spec in runtime.head.extra_inputs()}
    for value in inputs:
        for row in runtime.codec.encode([runtime.codec.normalize(value)])[0]:
            assert set(row.extras) == declared
    example = load_split(tiny_hub.registry, runtime.spec, "train")[0]
    if runtime.spec.kind == "fill_mask":  # trained on raw text by `hub pretrain`, which masks it anew each batch
        with pytest.raises(DataError, match="hub pretrain"):
            runtime.examples.features(example)
        return
    for features in runtime.examples.features(example):
        assert declared <= set(features) and {"input_ids", "token_type_ids", "labels"} <= set(features)


def test_inputs_match_the_schema_the_codec_declares(case):
    _, runtime, inputs = case
    schema = type(runtime.codec).input_schema(runtime.spec.inputs)
    for value in inputs:
        jsonschema.validate(json.loads(json.dumps(value)), schema)  # as a JSON client sends it: tuples are arrays


def test_a_kind_missing_a_part_or_misnamed_is_refused():
    with pytest.raises(KindError, match="lacks its serving codec"):
        register_kind(name="classification", head=ClassificationHead, examples=TextExamples, read_examples=text_examples,
                      default_metric="accuracy")
    with pytest.raises(KindError, match="says kind 'classification'"):
        register_kind(name="other", head=ClassificationHead, codec=TextCodec, examples=TextExamples,
                      read_examples=text_examples, default_metric="accuracy")
    with pytest.raises(KindError, match="default_metric 'nope'"):
        register_kind(name="classification", head=ClassificationHead, codec=TextCodec, examples=TextExamples,
                      read_examples=text_examples, default_metric="nope")
    with pytest.raises(KindError, match="registered twice"):
        register_kind(name="classification", head=ClassificationHead, codec=TextCodec, examples=TextExamples,
                      read_examples=text_examples, default_metric="accuracy")


class TopicHead(ClassificationHead):
    kind = "topic_of_test"


@pytest.fixture
def toy_kind():
    """A kind none of the hub's code names, registered the way a kind folder's __init__ does."""
    record = register_kind(name="topic_of_test", head=TopicHead, codec=TextCodec, examples=TextExamples,
                           read_examples=text_examples, default_metric="macro_f1")
    yield record
    del KINDS[record.name]


def test_a_new_kind_registers_trains_and_serves_without_core_changes(toy_kind, tmp_path, tiny_backbone_dir):
    import hub
    from hub.registry import load_registry
    from hub.training import train_task

    document = tiny_registry(tmp_path, tiny_backbone_dir, tasks=[])
    document["tasks"] = [{"name": "topics", "backbone": "tiny", "kind": "topic_of_test", "labels": ["negative", "positive"],
                          "train": {"epochs": 1, "batch_size": 16, "adapter": {"method": "lora", "r": 2}},
                          "data": {"format": "jsonl", "train": "data/sent_train.jsonl", "dev": "data/sent_dev.jsonl"}}]
    registry = load_registry(write_registry(tmp_path, document))
    assert registry.task("topics").metric == "macro_f1"  # the kind's default metric
    report = train_task(registry, "topics", progress=False)
    assert "macro_f1" in report["metrics"]
    served = hub.Hub.load(tmp_path / "registry.yaml")
    assert served.run("topics", "good movie")["label"] in ("negative", "positive")
    assert served.tasks()[0]["kind"] == "topic_of_test"
