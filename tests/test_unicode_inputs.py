"""Any text, every task kind: a well-formed answer or an InputError that says why, never another exception.

Hypothesis draws texts from classes of Unicode that trip tokenizers or the code around them (control, format
and zero-width characters, lone surrogates, combining marks, private use, unassigned code points, CJK, emoji
with ZWJ sequences and skin tones, mixed scripts and RTL, whitespace variants, very long texts) and builds
each tiny task's input from them. Runs are derandomized and bounded, so CI sees the same examples every time.
"""

from __future__ import annotations

import json
import math
import operator
import random
import time

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hub
from heads import KINDS
from heads.tagging.crf import CRF
from heads.losses import classification_loss
from heads.tagging.schemes import transition_constraints, without_overlaps
from heads.relation.codec import RelationRequest, parse_marked
from heads.tagging.codec import TaggingRequest
from hub.errors import InputError

TASKS = ("sentiment", "paraphrase", "similarity", "entities", "spans", "reader", "relations", "joint", "fill")
NO_TOKENS = "has no tokens the model can read"
BOUNDED = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def served(trained_registry) -> hub.Hub:
    """One hub for the whole module: hypothesis calls a test many times, the tasks load once."""
    return hub.Hub.load(trained_registry)


# ---- classes of text -------------------------------------------------------------------------------------

def _chars(*categories: str, exclude: str = "") -> st.SearchStrategy[str]:
    return st.characters(categories=categories, exclude_characters=exclude)


def _text_of(chars: st.SearchStrategy[str], max_size: int = 12) -> st.SearchStrategy[str]:
    return st.text(chars, min_size=1, max_size=max_size)


WORDS = st.sampled_from(["good", "movie", "bad", "the", "plot", "Émile", "naïve", "1999", "!", "what?", "it's"])
EMOJI = st.sampled_from(["😀", "👍🏽", "👨‍👩‍👧", "🏳️‍🌈", "❤️", "🇩🇪", "👩🏿‍💻", "🤷‍♀️", "✋🏻", "🧑‍🤝‍🧑"])
SCRIPTS = st.sampled_from(["good", "Москва", "東京", "مرحبا", "שלום", "नमस्ते", "γειά", "ﷺ", "\u200f", "\u202e", "한국어"])
SPACES = _chars("Zs", "Zl", "Zp") | st.sampled_from("\t\n\r\x0b\x0c\x1c\x85\u2028\u2029\u3000\u00a0")
# what the tokenizer drops: controls (not the ones Python calls whitespace), format / zero-width, private use, Mn
INVISIBLE = _chars("Cc", "Cf", "Co", "Mn", exclude="\t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85")
SURROGATE = _chars("Cs")

CLASSES: dict[str, st.SearchStrategy[str]] = {
    "control": _text_of(_chars("Cc")),
    "format": _text_of(_chars("Cf") | st.sampled_from("\u200b\u200c\u200d\u2060\ufeff\u00ad")),
    "combining": _text_of(_chars("Mn", "Me")),
    "private_use": _text_of(_chars("Co")),
    "unassigned": _text_of(_chars("Cn")),
    "cjk": _text_of(st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF), 30),
    "emoji": st.lists(EMOJI, min_size=1, max_size=10).map("".join),
    "scripts": st.lists(SCRIPTS, min_size=1, max_size=8).map(" ".join),
    "whitespace": _text_of(SPACES),
    "surrogates": _text_of(SURROGATE, 3),
}
NOISE = st.one_of(*CLASSES.values())
# words with noise glued to them or between them: zero-width inside a word, a mark after a letter, ...
MIXED = st.builds(lambda parts, glue: glue.join(parts), st.lists(WORDS | NOISE, min_size=1, max_size=10),
                  st.sampled_from(["", " ", "\u200b", "\u00a0", "\u0301", "\n"]))
LONG = st.builds(operator.mul, WORDS.map(lambda w: w + " ") | EMOJI | _chars("Mn") | st.just("\u200b"),
                 st.integers(100, 1500))
ANY_TEXT = NOISE | MIXED | WORDS | LONG


# ---- the inputs of each kind -----------------------------------------------------------------------------

def _pair(text: st.SearchStrategy[str]) -> st.SearchStrategy:
    pair = st.tuples(text, text) | st.tuples(text, WORDS) | st.tuples(WORDS, text)
    return pair | pair.map(lambda p: {"first": p[0], "second": p[1]})


def _tagging(text: st.SearchStrategy[str]) -> st.SearchStrategy:
    tokens = st.lists(text | WORDS, min_size=1, max_size=8)
    return text | tokens.map(tuple) | tokens.map(lambda t: {"tokens": t}) | text.map(lambda t: {"text": t})


def _relation(parts: list[str], head_first: bool, marked: bool) -> dict | str:
    """A text with a head and a tail entity around `parts` = [before, first entity, middle, second entity, after]."""
    before, one, middle, two, after = parts
    if marked:
        a, b = ("e1", "e2") if head_first else ("e2", "e1")
        return f"{before} <{a}>{one}</{a}> {middle} <{b}>{two}</{b}> {after}"
    first = len(before) + 1
    second = first + len(one) + 1 + len(middle) + 1
    spans = [[first, first + len(one)], [second, second + len(two)]]
    head, tail = spans if head_first else spans[::-1]
    return {"text": f"{before} {one} {middle} {two} {after}", "head": head, "tail": tail}


def _relations(text: st.SearchStrategy[str]) -> st.SearchStrategy:
    return st.builds(_relation, st.lists(text | WORDS, min_size=5, max_size=5), st.booleans(), st.booleans())


def _qa(text: st.SearchStrategy[str]) -> st.SearchStrategy:
    return st.fixed_dictionaries({"question": text | WORDS, "context": text}) | st.tuples(WORDS, text)


def _fill(text: st.SearchStrategy[str]) -> st.SearchStrategy:
    """A text with one [MASK] somewhere in it (glued to its neighbours or not), or in {text, top_k}."""
    masked = st.builds(lambda a, gap, b: f"{a}{gap}[MASK]{gap}{b}", text | st.just(""), st.sampled_from(["", " "]),
                       text | WORDS)
    return masked | st.builds(lambda t, k: {"text": t, "top_k": k}, masked, st.integers(1, 20))


def inputs(task: str, text: st.SearchStrategy[str]) -> st.SearchStrategy:
    """Inputs of `task` built from texts of `text`."""
    if task == "sentiment":
        return text
    if task in ("paraphrase", "similarity"):
        return _pair(text)
    if task in ("entities", "spans", "joint"):
        return _tagging(text)
    if task == "fill":
        return _fill(text)
    return _qa(text) if task == "reader" else _relations(text)


# ---- what a well-formed answer is ------------------------------------------------------------------------

def answer(served: hub.Hub, task: str, value) -> dict | InputError:
    """The result, or the InputError; any other exception fails the test."""
    try:
        return served.run(task, value)
    except InputError as error:
        json.dumps(str(error), ensure_ascii=False).encode("utf-8")  # a message the server can send as UTF-8
        return error


def _utf8_encodable(value) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _keys(result: dict, required: set[str], optional: set[str] = frozenset({"truncated"})) -> None:
    assert required <= set(result) <= required | optional, sorted(result)


def _tagging_text(value) -> str | None:
    """The raw text of a tagging input (None for pre-split tokens)."""
    if isinstance(value, dict):
        value = value.get("text", value.get("tokens"))
    return value if isinstance(value, str) else None


def _check_tagging(served: hub.Hub, task: str, value, result: dict) -> None:
    _keys(result, {"task", "tokens", "tags", "entities"})
    labels = served.runtime(task).head.config.labels  # tags (tagging) or entity types (span_ner)
    types = {tag.split("-", 1)[1] for tag in labels if "-" in tag} if task == "entities" else set(labels)
    assert len(result["tags"]) == len(result["tokens"])
    assert all(tag == "O" or tag.split("-", 1)[1] in types for tag in result["tags"])
    text = _tagging_text(value)
    if text is None:
        assert result["tokens"] == list(value["tokens"] if isinstance(value, dict) else value)
    else:
        cursor = 0
        for token in result["tokens"]:  # the words are the text's own pieces, in order
            cursor = text.index(token, cursor) + len(token)
    _check_entities(served, task, value, result["entities"], types)


def _check_entities(served: hub.Hub, task: str, value, entities: list[dict], types: set[str] | None = None) -> None:
    """Each entity's type is the task's and its offsets cut its text out of the text (token indices for tokens)."""
    types = set(served.runtime(task).head.config.labels) if types is None else types
    text = _tagging_text(value)
    tokens = None if text is not None else list(value["tokens"] if isinstance(value, dict) else value)
    for entity in entities:
        assert set(entity) == {"text", "label", "start", "end", "score"} and 0.0 <= entity["score"] <= 1.0
        assert entity["label"] in types
        if tokens is not None:
            assert 0 <= entity["start"] < entity["end"] <= len(tokens)
            assert entity["text"] == " ".join(tokens[entity["start"]:entity["end"]])
        else:
            assert 0 <= entity["start"] < entity["end"] <= len(text)
            assert text[entity["start"]:entity["end"]] == entity["text"]


def _check_joint(served: hub.Hub, value, result: dict) -> None:
    """Entities as tagging's (offsets that cut their text out), relations between two of them with a known type."""
    _keys(result, {"task", "entities", "relations"})
    _check_entities(served, "joint", value, result["entities"])
    relations = served.runtime("joint").head.config.relations
    for relation in result["relations"]:
        assert set(relation) == {"head", "tail", "label", "score"} and relation["label"] in relations
        assert 0 <= relation["head"] < len(result["entities"]) and 0 <= relation["tail"] < len(result["entities"])
        assert relation["head"] != relation["tail"] and 0.0 <= relation["score"] <= 1.0


def _check_fill(value, result: dict) -> None:
    """One mask whose offsets cut "[MASK]" out of the text, top_k candidates by falling probability."""
    _keys(result, {"task", "masks", "sequence"})
    text, top_k = (value["text"], value["top_k"]) if isinstance(value, dict) else (value, None)
    (mask,) = result["masks"]
    assert text[mask["start"]:mask["end"]] == "[MASK]"
    scores = [candidate["score"] for candidate in mask["candidates"]]
    assert scores == sorted(scores, reverse=True) and all(0.0 <= score <= 1.0 for score in scores)
    assert top_k is None or len(scores) == top_k
    assert result["sequence"].startswith(text[:mask["start"]]) and result["sequence"].endswith(text[mask["end"]:])


def _check_qa(value, result: dict) -> None:
    _keys(result, {"task", "answer", "start", "end", "score", "windows"}, set())
    context = value["context"] if isinstance(value, dict) else value[1]
    assert result["windows"] >= 1 and 0.0 <= result["score"] <= 1.0
    if result["answer"] is None:
        assert result["start"] is None and result["end"] is None
    else:
        assert 0 <= result["start"] < result["end"] <= len(context)
        assert context[result["start"]:result["end"]] == result["answer"]


def assert_well_formed(served: hub.Hub, task: str, value, result: dict) -> None:
    """The kind's result keys, JSON the server can send, labels of the task, offsets inside the text."""
    json.dumps(result, allow_nan=False, ensure_ascii=False).encode("utf-8")
    assert result["task"] == task
    if task in ("entities", "spans"):
        _check_tagging(served, task, value, result)
    elif task == "reader":
        _check_qa(value, result)
    elif task == "joint":
        _check_joint(served, value, result)
    elif task == "fill":
        _check_fill(value, result)
    elif task == "similarity":
        _keys(result, {"task", "value"})
        assert math.isfinite(result["value"])
    else:
        _keys(result, {"task", "label", "score"})
        assert result["label"] in served.runtime(task).head.config.labels and 0.0 <= result["score"] <= 1.0


def _property(task: str, text: st.SearchStrategy[str]):
    """A test: every input of `task` built from `text` gets a well-formed answer or an InputError."""

    @BOUNDED
    @given(value=inputs(task, text))
    def test(served, value):
        result = answer(served, task, value)
        if not isinstance(result, InputError):
            assert_well_formed(served, task, value, result)

    return test


test_classification_any_text = _property("sentiment", ANY_TEXT)
test_pair_classification_any_text = _property("paraphrase", ANY_TEXT)
test_siamese_regression_any_text = _property("similarity", ANY_TEXT)
test_crf_tagging_any_text = _property("entities", ANY_TEXT)
test_span_ner_any_text = _property("spans", ANY_TEXT)
test_qa_any_text = _property("reader", ANY_TEXT)
test_relation_any_text = _property("relations", ANY_TEXT)
test_joint_extraction_any_text = _property("joint", ANY_TEXT)
test_fill_mask_any_text = _property("fill", ANY_TEXT)


def _everywhere(task: str, row) -> dict:
    """A head decoding that finds entities wherever it can: every word B-GOOD (tagging), every span GOOD (span_ner)."""
    if task == "entities":
        return {"tags": ["B-GOOD"] * len(row.meta["owners"]), "scores": [0.9] * len(row.meta["owners"])}
    return {"spans": [(i, "GOOD", 0.9) for i in range(len(row.meta["spans"]))]}


@pytest.mark.parametrize("task", ["entities", "spans"])
def test_entity_offsets_point_into_any_text(served, task):
    """The tiny model finds few entities, so the codec finishes a decoding with entities everywhere: each one's
    offsets must cut its own words out of the text, whatever the text holds."""
    codec = served.runtime(task).codec

    @BOUNDED
    @given(value=_tagging(ANY_TEXT).filter(_utf8_encodable))
    def check(value):
        try:
            request = codec.normalize(value)
        except InputError:
            return
        rows = codec.encode([request])[0]
        result = {"task": task, **codec.finish(request, rows, [_everywhere(task, row) for row in rows])}
        assert_well_formed(served, task, value, result)
        found = {(e["start"], e["end"]): e["text"] for e in result["entities"]}
        for word in {w for row in rows for w in row.meta["owners"]}:  # each word with a sub-word is an entity
            start, end = request.offsets[word] if request.offsets is not None else (word, word + 1)
            assert found[(start, end)] == result["tokens"][word]

    check()


# ---- class by class: what each kind answers ----------------------------------------------------------------

def _readable(served: hub.Hub, text: str) -> bool:
    """The oracle: does the tasks' own tokenizer give this text any token?"""
    return bool(served.runtime("sentiment").codec.tokenizer(text, add_special_tokens=False)["input_ids"])


def value_tokens(value) -> str:
    """Pre-split tokens of a tagging input, joined by spaces (what the oracle reads)."""
    return " ".join(value["tokens"] if isinstance(value, dict) else value)


def _whole_texts(task: str, value) -> list[str]:
    """What a whole-text kind must be able to read: the text, each text of a pair, question and context, each entity."""
    if task == "sentiment":
        return [value]
    if task in ("paraphrase", "similarity"):
        return [value["first"], value["second"]] if isinstance(value, dict) else list(value)
    if task == "reader":
        return [value["question"], value["context"]] if isinstance(value, dict) else list(value)
    if isinstance(value, str):
        request = parse_marked(value)
    else:
        request = RelationRequest(value["text"], value["head"], value["tail"])
    return [request.text[slice(*request.head)], request.text[slice(*request.tail)]]


INVISIBLE_TEXT = st.builds(lambda chars, gap: gap.join(chars), st.lists(_text_of(INVISIBLE, 6), min_size=1, max_size=3),
                           st.sampled_from(["", " ", "\u200b"]))


def _unread_tag_fits(tags: list[str], i: int, unread: set[int]) -> bool:
    """A word the model never saw is O, unless it sits inside an entity the model found around it (the codec never
    lets an unread word split an entity): then an inside tag of that entity's type."""
    if tags[i] == "O":
        return True
    before = next((tags[j] for j in range(i - 1, -1, -1) if j not in unread), "O")
    after = next((tags[j] for j in range(i + 1, len(tags)) if j not in unread), "O")
    kind = tags[i].split("-", 1)[-1]
    return (tags[i].startswith(("I-", "M-")) and before != "O" and before.split("-", 1)[-1] == kind
            and after.startswith(("I-", "M-", "E-")) and after.split("-", 1)[-1] == kind)


@pytest.mark.parametrize("task", TASKS)
def test_text_without_tokens(served, task):
    """Text made only of what the tokenizer drops: per-token kinds tag such words O and find nothing there; kinds
    that read the whole text refuse it, saying why and what to send."""

    @BOUNDED
    @given(value=inputs(task, INVISIBLE_TEXT))
    def check(value):
        result = answer(served, task, value)
        if task in ("entities", "spans"):
            assert_well_formed(served, task, value, result)
            unread = [i for i, token in enumerate(result["tokens"]) if not _readable(served, token)]
            for i in unread:
                assert _unread_tag_fits(result["tags"], i, set(unread)), ascii((value, result))
            if len(unread) == len(result["tokens"]):
                assert result["entities"] == []
        elif task == "joint":
            assert_well_formed(served, task, value, result)
            if not any(_readable(served, token) for token in (_tagging_text(value) or value_tokens(value),)):
                assert result["entities"] == [] and result["relations"] == []
        elif task == "fill":  # the mask is always a token: what is around it may be nothing
            assert_well_formed(served, task, value, result)
        elif all(_readable(served, text) for text in _whole_texts(task, value)):
            assert_well_formed(served, task, value, result)
        else:
            assert isinstance(result, InputError) and NO_TOKENS in str(result), result
            assert str(result).startswith(f"task '{task}': ")
            assert "send text with letters, digits or punctuation" in str(result)

    check()


WITH_SURROGATE = st.builds(lambda a, s, b: a + s + b, WORDS | st.just(""), _text_of(SURROGATE, 2), WORDS | NOISE)


@pytest.mark.parametrize("task", TASKS)
def test_strings_utf8_cannot_encode_are_refused_naming_the_field(served, task):
    """A lone surrogate in any field: InputError with the task, the field's path and the position, before any
    tokenizer sees it."""

    @BOUNDED
    @given(value=inputs(task, WITH_SURROGATE).filter(lambda v: not _utf8_encodable(v)))
    def check(value):
        with pytest.raises(InputError, match=f"^task '{task}': input[^ ]* has a (lone surrogate|surrogate pair) .* at "
                                             "character [0-9]+.*UTF-8 cannot encode") as info:
            served.run(task, value)
        json.dumps(str(info.value), ensure_ascii=False).encode("utf-8")  # the message itself holds no surrogate

    check()


# ---- the two reproduced defects --------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["\u200b", "\u0001", "\ufeff", "\u00ad", "\u0301", "\ue000", "\x00", "\u200b\u2060"])
@pytest.mark.parametrize("task", ["entities", "spans"])
def test_crf_and_span_tagging_of_a_text_with_no_sub_word(served, task, text):
    assert served.run(task, text) == {"task": task, "tokens": [text], "tags": ["O"], "entities": []}
    assert served.run(task, (text,)) == {"task": task, "tokens": [text], "tags": ["O"], "entities": []}
    some = served.run(task, ("good", text, "movie"))
    assert some["tokens"] == ["good", text, "movie"] and some["tags"][1] == "O"


@pytest.mark.parametrize(("task", "value"), [
    ("sentiment", "\u200b"), ("paraphrase", ("good", "\u0001")), ("similarity", {"first": "\ufeff", "second": "good"}),
    ("reader", {"question": "\u0301", "context": "the movie was good"}),
    ("reader", {"question": "what is good?", "context": "\u200b\u200c"}),
    ("relations", {"text": "good \u200b bad", "head": [0, 4], "tail": [5, 6]}),
    ("relations", "<e1>\ue000</e1> <e2>bad</e2>"),
])
def test_whole_text_kinds_refuse_text_without_tokens(served, task, value):
    with pytest.raises(InputError, match=f"task '{task}': .*{NO_TOKENS}.*send text with letters, digits or punct"):
        served.run(task, value)
    assert served.run("sentiment", "good")["task"] == "sentiment"  # still serving


@pytest.mark.parametrize(("task", "value", "where"), [
    ("sentiment", "\ud800", "input has a lone surrogate (U+D800) at character 0"),
    ("paraphrase", ("good", "the \ud800"), "input[1] has a lone surrogate (U+D800) at character 4"),
    ("similarity", {"first": "\udfff", "second": "good"},
     "input['first'] has a lone surrogate (U+DFFF) at character 0"),
    ("entities", "good \ud800 movie", "input has a lone surrogate (U+D800) at character 5"),
    ("entities", {"tokens": ["good", "\ud800"]}, "input['tokens'][1] has a lone surrogate (U+D800) at character 0"),
    ("spans", ("good", "x\udc00"), "input[1] has a lone surrogate (U+DC00) at character 1"),
    ("reader", {"question": "what?", "context": "good movie \ud800"},
     "input['context'] has a lone surrogate (U+D800) at character 11"),
    ("relations", {"text": "good \ud800 bad", "head": [0, 4], "tail": [7, 10]},
     "input['text'] has a lone surrogate (U+D800) at character 5"),
])
def test_lone_surrogate_names_task_field_and_position(served, task, value, where):
    with pytest.raises(InputError) as info:
        served.run(task, value)
    assert str(info.value) == f"task '{task}': {where}; send valid Unicode text (UTF-8 cannot encode lone surrogates)."


def test_surrogates_in_a_batch_name_the_request_and_the_pair(served):
    reader = {"question": "what?", "context": "the movie is good\ud800"}
    with pytest.raises(InputError) as info:
        served.run_many([("sentiment", "good"), ("entities", "fine"), ("reader", reader)])
    assert str(info.value).startswith("request #2: task 'reader': input['context'] has a lone surrogate (U+D800) at "
                                      "character 17; send valid Unicode text")
    with pytest.raises(InputError, match=r"surrogate pair \(U\+D83D U\+DE00\) at character 3 .* \(U\+1F600\)"):
        served.run("sentiment", "hi \ud83d\ude00")
    with pytest.raises(InputError, match=r"lone surrogate \(U\+DC00\) at character 0"):
        served.run("sentiment", "\udc00\ud800")  # a pair in the wrong order
    assert served.run("sentiment", "good")["task"] == "sentiment"  # still serving


# ---- very long texts -------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["x" * 100_000, "😀" * 75_000, "a" + "\u0301" * 50_000])
@pytest.mark.parametrize("task", TASKS)
def test_huge_single_words(served, task, text):
    """One 'word' of 100,000 characters, 300 KB of one emoji, 50,000 marks on one letter: answered, quickly."""
    value = {"sentiment": text, "paraphrase": (text, text), "similarity": ("good", text), "entities": text,
             "spans": text, "reader": {"question": "what is good?", "context": text},
             "relations": {"text": f"good {text} bad", "head": [0, 4], "tail": [len(text) + 6, len(text) + 9]},
             "joint": text, "fill": f"good {text} [MASK] movie"}[task]
    assert_well_formed(served, task, value, served.run(task, value))


def test_long_pair_is_cut_without_the_tokenizer_pair_truncation(served):
    """The tokenizer's own pair truncation builds every pair of overflow windows (seconds for these two texts);
    the codec cuts the pair itself, exactly as `longest_first` would."""
    codec = served.runtime("paraphrase").codec
    long = "good movie " * 4000
    start = time.perf_counter()
    (row,), = codec.encode([(long, long)])
    assert time.perf_counter() - start < 5.0  # the tokenizer's own truncation takes about 20 s here
    assert row.truncated and len(row.input_ids) == codec.max_length
    rng = random.Random(0)
    words = ["good", "bad", "movie", "x", "abc", "!", "é", "\u200b"]
    pairs = [tuple(" ".join(rng.choices(words, k=rng.randint(1, 20))) for _ in range(2)) for _ in range(200)]
    for (a, b), (row,) in zip(pairs, codec.encode(pairs)):
        expected = codec.tokenizer(a, b, truncation="longest_first", max_length=codec.max_length)
        assert (row.input_ids, row.token_type_ids) == (expected["input_ids"], expected["token_type_ids"])


def test_tagging_windows_of_a_long_text_cover_every_word(served):
    codec = served.runtime("entities").codec
    text = "!?" * 20_000 + " " + "ab" * 45  # 40,000 one-token words, then a word of 90 sub-words: more than a window
    request = codec.normalize(text)
    rows = codec.encode([request])[0]
    assert all(len(row.input_ids) <= codec.max_length for row in rows)
    assert [w for row in rows for w in row.meta["owners"]] == list(range(len(request.words)))
    decoded = [{"tags": ["O"] * len(row.meta["owners"]), "scores": [1.0] * len(row.meta["owners"])} for row in rows]
    result = codec.finish(request, rows, decoded)
    assert result["tags"] == ["O"] * len(request.words) and result["truncated"] is True  # the long word's end is cut


# ---- heads and codecs on rows with nothing to label ------------------------------------------------------

def test_tagging_and_span_codecs_send_no_row_for_nothing_to_tag(served):
    for task in ("entities", "spans"):
        codec = served.runtime(task).codec
        no_sub_word, no_word = codec.normalize("\u200b \u0001"), TaggingRequest([], [], "\u200b")
        for request in (no_sub_word, no_word):
            assert codec.encode([request]) == [[]]
            result = codec.finish(request, [], [])
            assert result["tokens"] == request.words and result["tags"] == ["O"] * len(request.words)
            assert result["entities"] == []


@pytest.mark.parametrize(("value", "tags", "entities"), [
    ("good \u200b fine", ["B-GOOD", "I-GOOD", "I-GOOD"], [("good \u200b fine", 0, 11)]),  # inside: never splits it
    ("\u0001 good \ufeff", ["O", "B-GOOD", "O"], [("good", 2, 6)]),  # around: outside it
    (("good", "\u00ad", "fine"), ["B-GOOD", "I-GOOD", "I-GOOD"], [("good \u00ad fine", 0, 3)]),
])
def test_a_word_the_model_never_sees_takes_the_tag_around_it(served, value, tags, entities):
    codec = served.runtime("entities").codec
    request = codec.normalize(value)
    rows = codec.encode([request])[0]
    decoded = [{"tags": ["B-GOOD" if request.words[w] == "good" else "I-GOOD" for w in row.meta["owners"]],
                "scores": [0.8] * len(row.meta["owners"])} for row in rows]
    result = codec.finish(request, rows, decoded)
    assert result["tags"] == tags
    assert [(e["text"], e["start"], e["end"], e["score"]) for e in result["entities"]] == [(*e, 0.8) for e in entities]


@pytest.mark.parametrize("crf", [True, False])
def test_tagging_head_on_rows_without_label_positions(crf):
    options = {"scheme": "bio", "crf": crf}
    head = KINDS["tagging"].head.from_options(options, hidden_size=4, labels=["O", "B-X", "I-X"]).eval()
    hidden = torch.randn(3, 5, 4)
    for positions in (torch.zeros(3, 0, dtype=torch.long), torch.tensor([[1, 2], [-1, -1], [3, -1]])):
        outputs = head({"last_hidden_state": hidden, "attention_mask": torch.ones(3, 5), "label_positions": positions})
        decoded = head.decode(outputs)
        assert [len(d["tags"]) for d in decoded] == (positions >= 0).sum(1).tolist()
        loss = head.loss(outputs, torch.where(positions >= 0, 0, -100))
        assert torch.isfinite(loss)


def test_crf_with_no_words():
    crf = CRF(*transition_constraints(["O", "B-X", "I-X"], "bio"))
    emissions, mask = torch.randn(2, 0, 3), torch.zeros(2, 0, dtype=torch.bool)
    assert crf.viterbi(emissions, mask) == [[], []]
    assert crf.marginals(emissions, mask).shape == (2, 0, 3)
    assert crf.nll(emissions, torch.zeros(2, 0, dtype=torch.long), mask).item() == 0.0


def test_span_head_and_losses_without_any_target():
    head = KINDS["span_ner"].head.from_options({}, hidden_size=4, labels=["A"]).eval()
    none = torch.zeros(2, 0, dtype=torch.long)
    outputs = head({"last_hidden_state": torch.randn(2, 4, 4), "attention_mask": torch.ones(2, 4),
                    "label_positions": none, "span_starts": none, "span_ends": none})
    assert head.decode(outputs) == [{"spans": []}, {"spans": []}]
    assert head.loss(outputs, none).item() == 0.0  # not the NaN of a mean over nothing
    assert classification_loss(torch.randn(3, 2), torch.full((3,), -100)).item() == 0.0


@BOUNDED
@given(st.lists(st.tuples(st.integers(0, 30), st.integers(1, 8), st.sampled_from("AB")), max_size=40))
def test_without_overlaps_keeps_the_longest_disjoint_spans(raw):
    entities = [(start, start + width, kind) for start, width, kind in raw]
    kept = []
    for span in sorted(entities, key=lambda s: (-(s[1] - s[0]), s[0])):  # the definition, in quadratic time
        if all(span[1] <= other[0] or span[0] >= other[1] for other in kept):
            kept.append(span)
    assert without_overlaps(entities) == sorted(kept)


def _qa_reference(head, outputs) -> list[dict]:
    """The QA decoding as nested loops over the top start and end candidates of each window."""
    start_log, end_log = (outputs[k].float().log_softmax(-1) for k in ("start", "end"))
    k = min(head.config.top_k, start_log.shape[1])
    results = []
    for s_log, e_log, allowed in zip(start_log, end_log, outputs["allowed"].tolist()):
        (s_val, s_top), (e_val, e_top) = s_log.topk(k), e_log.topk(k)
        spans = [(s, e, float(torch.tensor(a + b).exp())) for a, s in zip(s_val.tolist(), s_top.tolist())
                 for b, e in zip(e_val.tolist(), e_top.tolist())
                 if 0 < s <= e < s + head.config.max_answer_tokens and allowed[s] and allowed[e]]
        spans.sort(key=lambda span: -span[2])
        results.append({"spans": spans[: head.config.top_k], "no_answer": float((s_log[0] + e_log[0]).exp())})
    return results


@pytest.mark.parametrize("seed", range(5))
def test_qa_decoding_of_many_windows_equals_the_nested_loops(seed):
    torch.manual_seed(seed)
    options = {"top_k": [1, 3, 20, 20, 5][seed], "max_answer_tokens": [1, 4, 30, 2, 8][seed]}
    head = KINDS["qa"].head.from_options(options, hidden_size=4, labels=None).eval()
    hidden, context = torch.randn(40, 24, 4) * 10, (torch.rand(40, 24) < 0.7).long()  # 40 windows
    with torch.no_grad():
        outputs = head({"last_hidden_state": hidden, "context_mask": context})
    assert head.decode(outputs) == _qa_reference(head, outputs)
