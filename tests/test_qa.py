"""Extractive QA: windows with a stride, the best span over all windows, character offsets, no-answer,
SQuAD-format reading, EM/F1 in English and Chinese, bad input."""

from __future__ import annotations

import json

import pytest
import torch

from heads import KINDS
from hub.data import load_split
from hub.errors import InputError
from hub.metrics import compute_metric
from hub.registry import load_registry, parse_registry

from conftest import FILLER


def examples(codec):
    """The training/evaluation side of a serving codec."""
    return KINDS[codec.task.kind].examples(codec)


@pytest.fixture
def reader_codec(tiny_hub):
    return tiny_hub.runtime("reader").codec


def _long_context(n=60):
    return " ".join(FILLER[i % len(FILLER)] for i in range(n))


def test_windows_cover_the_context_with_overlap(reader_codec):
    context = _long_context()
    rows = reader_codec.encode([reader_codec.normalize({"question": "what is good?", "context": context})])[0]
    assert len(rows) > 2 and all(len(r.input_ids) <= reader_codec.max_length for r in rows)
    spans = [[o for o in r.meta["offsets"] if o is not None] for r in rows]
    assert spans[0][0][0] == 0 and spans[-1][-1][1] == len(context)
    for before, after in zip(spans, spans[1:]):
        assert after[0][0] < before[-1][1]  # consecutive windows share tokens (the stride)


def test_best_span_over_all_windows_maps_to_characters(reader_codec):
    context = _long_context() + " great"
    request = reader_codec.normalize(("what is good?", context))
    rows = reader_codec.encode([request])[0]
    last = rows[-1]
    token = max(i for i, o in enumerate(last.meta["offsets"]) if o is not None)
    first = [next(i for i, o in enumerate(r.meta["offsets"]) if o is not None) for r in rows]
    decoded = [{"spans": [(f, f, 0.2)] if r is not last else [(token, token, 0.9)], "no_answer": 0.05} for f, r in zip(first, rows)]
    result = reader_codec.finish(request, rows, decoded)
    assert result["answer"] == "great" == context[result["start"]:result["end"]] and result["score"] == 0.9
    assert result["windows"] == len(rows)


def test_no_answer_only_when_the_task_allows_it(reader_codec, tiny_hub):
    request = reader_codec.normalize(("what is good?", "the movie"))
    rows = reader_codec.encode([request])[0]
    first = next(i for i, o in enumerate(rows[0].meta["offsets"]) if o is not None)
    decoded = [{"spans": [(first, first, 0.3)], "no_answer": 0.6}]
    assert reader_codec.finish(request, rows, decoded)["answer"] is not None
    task = tiny_hub.registry.task("reader")
    head = KINDS["qa"].head.from_options({"allow_no_answer": True}, hidden_size=32, labels=None)
    codec = KINDS[task.kind].codec(task, head, reader_codec.tokenizer, reader_codec.max_length, "en")
    assert codec.finish(request, rows, decoded) == {"answer": None, "start": None, "end": None, "score": 0.6, "windows": 1}


def test_training_labels_point_at_the_answer_or_cls(reader_codec):
    context = _long_context() + " lovely day"
    example = {"question": "what is good?", "context": context, "answers": {"text": ["lovely"], "answer_start": [context.index("lovely")]}}
    features = examples(reader_codec).features(example)
    rows = reader_codec.encode([reader_codec.normalize((example["question"], context))])[0]
    labelled = [(f["labels"], r) for f, r in zip(features, rows) if f["labels"] != [0, 0]]
    assert labelled and len(features) == len(rows)
    for (start, end), row in labelled:
        assert context[row.meta["offsets"][start][0]:row.meta["offsets"][end][1]] == "lovely"


def test_decode_respects_context_and_length_limits():
    head = KINDS["qa"].head.from_options({"max_answer_tokens": 2}, hidden_size=4, labels=None).eval()
    torch.manual_seed(0)
    features = {"last_hidden_state": torch.randn(1, 8, 4), "attention_mask": torch.ones(1, 8, dtype=torch.long),
                "context_mask": torch.tensor([[0, 0, 0, 1, 1, 1, 1, 0]])}
    spans = head.decode(head(features))[0]["spans"]
    assert spans and all(3 <= s <= e <= 6 and e - s < 2 for s, e, _ in spans)
    assert [p for *_, p in spans] == sorted((p for *_, p in spans), reverse=True)


@pytest.mark.parametrize("value", [{"question": "q"}, {"question": " ", "context": "c"}, ("q",), "just text", None,
                                   {"question": "good " * 40, "context": "the movie"}])
def test_bad_qa_input(tiny_hub, value):
    with pytest.raises(InputError):
        tiny_hub.run("reader", value)
    assert tiny_hub.run("reader", {"question": "what is good?", "context": "a fine movie"})["answer"] is not None


def test_squad_reader_splits_by_article_and_checks_answers(tmp_path):
    articles = [{"title": f"a{i}", "paragraphs": [{"context": f"text {i} here", "qas": [
        {"id": str(i), "question": "which?", "answers": [{"text": str(i), "answer_start": 5}]}]}]} for i in range(6)]
    (tmp_path / "s.json").write_text(json.dumps({"data": articles}))
    task = {"name": "t", "backbone": "b", "kind": "qa", "inputs": ["question", "context"], "metric": "squad",
            "data": {"format": "squad", "train": "s.json", "dev": "s.json", "dev_every": 3}}
    registry = parse_registry({"backbones": [{"name": "b", "source": "x", "language": "en"}], "tasks": [task]}, tmp_path / "r.yaml")
    train, dev = load_split(registry, registry.task("t"), "train"), load_split(registry, registry.task("t"), "dev")
    assert [a["text"][0] for a in dev["answers"]] == ["2", "5"] and len(train) == 4
    articles[0]["paragraphs"][0]["qas"][0]["answers"] = [{"text": "0", "answer_start": 0}, {"text": "zz", "answer_start": 1}]
    articles[1]["paragraphs"][0]["qas"][0]["question"] = " "  # article 2 of the train split
    (tmp_path / "s.json").write_text(json.dumps({"data": articles}))
    with pytest.warns(UserWarning, match=r"skipped 1 question\(s\) with an empty question or context \(#2\)"):
        assert len(load_split(registry, registry.task("t"), "train")) == 3
    articles[1]["paragraphs"][0]["qas"][0]["question"] = "which?"
    (tmp_path / "s.json").write_text(json.dumps({"data": articles}))
    answers = load_split(registry, registry.task("t"), "train")[0]["answers"]
    assert answers == {"text": ["0", "zz"], "answer_start": [5, -1]}  # moved to the text; absent -> -1


def test_exact_match_and_f1_in_english_and_chinese():
    scores = compute_metric("squad", ["The Denver Broncos", "Broncos", "踢爆了", ""], [["Denver Broncos"], ["Denver Broncos"], ["踢爆"], ["x"]])
    assert scores["exact_match"] == pytest.approx(1 / 4)
    assert scores["f1"] == pytest.approx((1 + 2 / 3 + 0.8 + 0) / 4)


def test_trained_reader_answers_from_the_context(tiny_hub):
    context = _long_context(30) + " a great movie"
    result = tiny_hub.run("reader", {"question": "what is good?", "context": context})
    assert result["answer"] == context[result["start"]:result["end"]] and result["windows"] > 1
    assert load_registry(tiny_hub.registry.path).task("reader").kind == "qa"


def test_a_question_that_leaves_no_room_for_context_is_refused_not_a_tokenizer_panic(tiny_hub):
    """The fast tokenizer panics (a BaseException) when question + stride fill the window; normalize refuses first."""
    long_question = " ".join(["what is good"] * 20)
    with pytest.raises(InputError, match="the question is .* tokens; .* at most"):
        tiny_hub.run("reader", {"question": long_question, "context": "the movie was good"})
    assert tiny_hub.run("reader", {"question": "what is good?", "context": "the movie was good"})["task"] == "reader"
