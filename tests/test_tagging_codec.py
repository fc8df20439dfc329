"""The tagging codec: words and character offsets (English and Chinese), sub-word alignment, windows."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from heads import KINDS
from hub.backbone import resolve_source
from hub.errors import InputError
from hub.registry import load_registry

from conftest import REPO

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def examples(codec):
    """The training/evaluation side of a serving codec."""
    return KINDS[codec.task.kind].examples(codec)


@pytest.fixture(scope="module")
def tokenizers():
    registry = load_registry(REPO / "registry.yaml")
    return {name: AutoTokenizer.from_pretrained(resolve_source(registry.backbone(name), registry)) for name in ("en", "zh")}


def _codec(tokenizer, language, max_length=128, **options):
    registry = load_registry(REPO / "registry.yaml")
    task = registry.task("conll2003").model_copy(update={"labels": LABELS, "head": options})
    head = KINDS["tagging"].head.from_options(options, hidden_size=8, labels=LABELS)
    return KINDS[task.kind].codec(task, head, tokenizer, max_length, language)


def _serve(codec, value, tag_of):
    """Encode, fake the head's decoding with `tag_of(word)`, and finish: what the router does."""
    request = codec.normalize(value)
    rows = codec.encode([request])[0]
    decoded = [{"tags": [tag_of(request.words[w]) for w in row.meta["owners"]], "scores": [0.9] * len(row.meta["owners"])} for row in rows]
    return request, rows, codec.finish(request, rows, decoded)


def test_english_offsets_point_at_the_words(tokenizers):
    codec = _codec(tokenizers["en"], "en")
    text = "Yesterday  Angela Merkel visited Saint-Étienne, France."
    people, places = {"Angela", "Merkel"}, {"Saint", "-", "Étienne", "France"}
    previous = {}

    def tag_of(word):
        kind = "PER" if word in people else "LOC" if word in places else None
        tag = "O" if kind is None else ("I-" if previous.get("kind") == kind else "B-") + kind
        previous["kind"] = kind
        return tag

    request, rows, result = _serve(codec, text, tag_of)
    for word, (start, end) in zip(request.words, request.offsets):
        assert text[start:end] == word
    assert [(e["text"], e["label"], text[e["start"]:e["end"]]) for e in result["entities"]] == [
        ("Angela Merkel", "PER", "Angela Merkel"), ("Saint-Étienne", "LOC", "Saint-Étienne"), ("France", "LOC", "France")]
    assert len(rows) == 1 and "truncated" not in result


def test_chinese_text_is_tagged_per_character_with_offsets(tokenizers):
    codec = _codec(tokenizers["zh"], "zh")
    text = "张三 去了北京，2019年。"
    _, _, result = _serve(codec, text, lambda ch: {"张": "B-PER", "三": "I-PER", "北": "B-LOC", "京": "I-LOC"}.get(ch, "O"))
    assert result["tokens"] == [ch for ch in text if not ch.isspace()]
    assert [(e["text"], e["start"], e["end"]) for e in result["entities"]] == [("张三", 0, 2), ("北京", 5, 7)]


def test_label_positions_are_first_subwords_or_all(tokenizers):
    tokenizer = tokenizers["en"]
    words = ["Schwarzenegger", "visited", "Ouagadougou"]
    first = _codec(tokenizer, "en").encode([_codec(tokenizer, "en").normalize(words)])[0][0]
    pieces = [tokenizer(w, add_special_tokens=False)["input_ids"] for w in words]
    assert len(pieces[0]) > 1 and len(pieces[2]) > 1  # real sub-word splits
    expected, at = [], 1
    for p in pieces:
        expected.append(at)
        at += len(p)
    assert first.extras["label_positions"] == expected
    assert [first.input_ids[i] for i in expected] == [p[0] for p in pieces]
    every = _codec(tokenizer, "en", label_all_subwords=True)
    row = every.encode([every.normalize(words)])[0][0]
    assert row.extras["label_positions"] == list(range(1, 1 + sum(map(len, pieces))))
    example = {"tokens": words, "tags": ["B-PER", "O", "B-LOC"]}
    labels = [LABELS[i] for i in examples(every).features(example)[0]["labels"]]
    assert labels == ["B-PER"] + ["I-PER"] * (len(pieces[0]) - 1) + ["O"] + ["B-LOC"] + ["I-LOC"] * (len(pieces[2]) - 1)
    # decoding from all sub-words gives the word tag back
    _, _, result = _serve(every, words, lambda w: "O")
    assert result["tags"] == ["O", "O", "O"]


def test_long_input_is_split_into_windows_not_truncated(tokenizers):
    codec = _codec(tokenizers["en"], "en", max_length=16)
    words = [f"word{i}" for i in range(40)]
    request, rows, result = _serve(codec, words, lambda w: "B-PER" if w == "word37" else "O")
    assert len(rows) > 1 and all(len(r.input_ids) <= 16 for r in rows)
    owners = [w for r in rows for w in r.meta["owners"]]
    assert owners == list(range(40))
    assert result["entities"] == [{"text": "word37", "label": "PER", "start": 37, "end": 38, "score": 0.9}]
    assert "truncated" not in result
    features = examples(codec).features({"tokens": words, "tags": ["I-PER"] * 40})
    assert len(features) == len(rows)
    assert all(LABELS[f["labels"][0]] == "B-PER" for f in features)  # each window starts a valid span


def test_character_spans_become_word_tags(tokenizers):
    codec = _codec(tokenizers["zh"], "zh")
    example = {"text": "在 上海见到李四", "spans": [{"start": 2, "end": 4, "label": "LOC"}, {"start": 6, "end": 8, "label": "PER"}]}
    assert examples(codec).reference(example) == ["O", "B-LOC", "I-LOC", "O", "O", "B-PER", "I-PER"]
    assert examples(codec).request(example) == example["text"]
    nested = {"text": "北京大学", "spans": [{"start": 0, "end": 4, "label": "LOC"}, {"start": 0, "end": 2, "label": "LOC"}]}
    assert examples(codec).reference(nested) == ["B-LOC", "I-LOC", "I-LOC", "I-LOC"]  # the longest of overlapping spans


@pytest.mark.parametrize("value", ["", "   ", [], ["ok", ""], ["ok", " "], ["ok", None], None, 3, {"words": ["a"]}])
def test_bad_tagging_input_is_refused_clearly(tokenizers, value):
    with pytest.raises(InputError, match="reads a text"):
        _codec(tokenizers["en"], "en").normalize(value)


def test_segmentation_and_pos_return_words(tokenizers):
    registry = load_registry(REPO / "registry.yaml")
    text = "江泽民发表讲话"
    word_tags = {"cws_zh": ["B", "M", "E", "B", "E", "B", "E"], "pos_zh": ["B-nr", "M-nr", "E-nr", "B-v", "E-v", "B-n", "E-n"]}
    for name, tags in word_tags.items():
        task = registry.task(name)
        head = KINDS["tagging"].head.from_options(task.head, hidden_size=8, labels=task.labels)
        codec = KINDS[task.kind].codec(task, head, tokenizers["zh"], 128, "zh")
        by_char = dict(zip(text, tags))
        _, _, result = _serve(codec, text, lambda ch: by_char[ch])
        words = [(w["text"], w["start"], w["end"], w.get("tag")) for w in result["words"]]
        kinds = [None] * 3 if name == "cws_zh" else ["nr", "v", "n"]
        assert words == [("江泽民", 0, 3, kinds[0]), ("发表", 3, 5, kinds[1]), ("讲话", 5, 7, kinds[2])]
        assert "entities" not in result
