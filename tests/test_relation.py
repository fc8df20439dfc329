"""Relation classification: entity markers from the existing vocabulary, pooled entities, direction,
bad input, SemEval reading and its official score."""

from __future__ import annotations

import pytest

from heads import KINDS
from heads.relation.codec import parse_marked
from hub.data import load_split
from hub.errors import DataError, InputError
from hub.metrics import compute_metric
from hub.registry import parse_registry

from conftest import SHARED_DATA, needs_shared_data


def test_marked_text_parses_to_spans():
    request = parse_marked("The <e1>child</e1> was wrapped into the <e2>cradle</e2>.")
    assert request.text == "The child was wrapped into the cradle."
    assert request.text[slice(*request.head)] == "child" and request.text[slice(*request.tail)] == "cradle"
    reverse = parse_marked("<e2>A</e2> and <e1>B</e1>")
    assert reverse.text[slice(*reverse.head)] == "B" and reverse.head[0] > reverse.tail[0]


def test_markers_are_existing_tokens_and_direction_changes_the_row(tiny_hub):
    codec = tiny_hub.runtime("relations").codec
    tokenizer = codec.tokenizer
    vocabulary = len(tokenizer)
    forward = codec.encode([codec.normalize("<e1>good</e1> movie beats <e2>dull</e2> book")])[0][0]
    backward = codec.encode([codec.normalize("<e2>good</e2> movie beats <e1>dull</e1> book")])[0][0]
    at, hash_ = tokenizer.convert_tokens_to_ids("@"), tokenizer.convert_tokens_to_ids("#")
    assert [forward.input_ids[i] for i in forward.extras["entity_tokens"]] == [at, at, hash_, hash_]
    assert [backward.input_ids[i] for i in backward.extras["entity_tokens"]] == [at, at, hash_, hash_]
    assert forward.input_ids != backward.input_ids and len(tokenizer) == vocabulary  # no new embeddings
    a = tiny_hub.run("relations", "<e1>good</e1> movie beats <e2>dull</e2> book")
    b = tiny_hub.run("relations", "<e2>good</e2> movie beats <e1>dull</e1> book")
    assert (a["label"], a["score"]) != (b["label"], b["score"])


def test_pooled_method_covers_the_entity_tokens(tiny_hub):
    task = tiny_hub.registry.task("relations")
    head = KINDS["relation"].head.from_options({"method": "pooled"}, hidden_size=32, labels=task.labels)
    codec = KINDS[task.kind].codec(task, head, tiny_hub.runtime("relations").codec.tokenizer, 24, "en")
    request = codec.normalize({"text": "the great movie was dull", "head": [4, 9], "tail": [20, 24]})
    row = codec.encode([request])[0][0]
    first, last, tail_first, tail_last = row.extras["entity_tokens"]
    tokens = codec.tokenizer.convert_ids_to_tokens(row.input_ids)
    assert "".join(t.strip("#") for t in tokens[first:last + 1]) == "great" and "".join(t.strip("#") for t in tokens[tail_first:tail_last + 1]) == "dull"


@pytest.mark.parametrize(("value", "message"), [
    ({"text": "good and bad", "head": [0, 4], "tail": [0, 4]}, "the same span"),
    ({"text": "good and bad", "head": [0, 4], "tail": [2, 8]}, "overlap"),
    ({"text": "good and bad", "head": [0, 40], "tail": [9, 12]}, "outside the text"),
    ({"text": "good and bad", "head": [0, 4]}, "classifies the relation"),
    ("good and <e2>bad</e2>", "one <e1>head</e1>"),
    (None, "got None"),
])
def test_bad_relation_input(tiny_hub, value, message):
    with pytest.raises(InputError, match=message):
        tiny_hub.run("relations", value)
    assert tiny_hub.run("relations", "<e1>good</e1> beats <e2>bad</e2>")["label"]


def test_entities_too_far_apart_for_one_window(tiny_hub):
    text = "<e1>good</e1> " + "movie " * 40 + "<e2>bad</e2>"
    with pytest.raises(InputError, match="apart"):
        tiny_hub.run("relations", text)
    near = tiny_hub.run("relations", "movie " * 40 + "<e1>good</e1> <e2>bad</e2>")
    assert near["truncated"] is True  # cut to a window holding both entities


def test_relation_rows_from_mention_strings(tmp_path):
    (tmp_path / "r.tsv").write_text("head\ttail\trelation\tsentence\nParis\tFrance\tcapital_of\tParis is the capital of France .\n")
    task = {"name": "t", "backbone": "b", "kind": "relation", "labels": ["capital_of", "Other"], "metric": "accuracy",
            "data": {"format": "tsv", "train": "r.tsv", "columns": {"text": "sentence", "label": "relation"}}}
    registry = parse_registry({"backbones": [{"name": "b", "source": "x", "language": "en"}], "tasks": [task]}, tmp_path / "r.yaml")
    row = load_split(registry, registry.task("t"), "train")[0]
    assert row == {"text": "Paris is the capital of France .", "head": [0, 5], "tail": [24, 30], "label": "capital_of"}


def test_official_semeval_score_needs_the_direction():
    scores = compute_metric("semeval_macro_f1", ["A(e1,e2)", "A(e2,e1)", "Other", "B(e1,e2)"], ["A(e1,e2)", "A(e1,e2)", "B(e1,e2)", "B(e1,e2)"],
                            ["A(e1,e2)", "A(e2,e1)", "B(e1,e2)", "B(e2,e1)", "Other"])
    assert scores["f1_A"] == pytest.approx(0.5) and scores["f1_B"] == pytest.approx(2 / 3)
    assert scores["macro_f1"] == pytest.approx((0.5 + 2 / 3) / 2) and "f1_Other" not in scores


@needs_shared_data
def test_real_semeval_files_read(tmp_path):
    folder = SHARED_DATA / "semeval2010_task8"
    labels = sorted({line.strip() for line in (folder / "TRAIN_FILE.TXT").read_text().splitlines()[1::4]})
    task = {"name": "t", "backbone": "b", "kind": "relation", "labels": labels, "metric": "semeval_macro_f1",
            "data": {"format": "semeval", "train": str(folder / "TRAIN_FILE.TXT"), "dev": str(folder / "TEST_FILE_FULL.TXT")}}
    registry = parse_registry({"backbones": [{"name": "b", "source": "x", "language": "en"}], "tasks": [task]}, tmp_path / "r.yaml")
    train, dev = load_split(registry, registry.task("t"), "train"), load_split(registry, registry.task("t"), "dev")
    assert (len(train), len(dev), len(labels)) == (8000, 2717, 19)
    first = train[0]
    assert first["text"][slice(*first["head"])] == "configuration" and first["label"] == "Component-Whole(e2,e1)"


def _relation_registry(tmp_path, data):
    task = {"name": "t", "backbone": "b", "kind": "relation", "labels": ["capital_of", "born_in", "Other"],
            "metric": "accuracy", "data": data}
    return parse_registry({"backbones": [{"name": "b", "source": "x", "language": "en"}], "tasks": [task]},
                          tmp_path / "r.yaml")


def test_relation_rows_from_numbered_columns_with_repeated_and_missing_mentions(tmp_path):
    """`head, tail, relation, sentence` without a header (the common layout of relation corpora): mentions are found
    in the text, a repeated one at its first (non-overlapping) occurrence and counted, a missing one left out and
    counted; the file is read to its end."""
    from hub.data import read_split

    (tmp_path / "r.tsv").write_text(
        "Paris\tFrance\tcapital_of\tParis is the capital of France .\n"
        "Ann\tAnnecy\tborn_in\tAnn was born in Annecy , Ann says .\n"      # 'Ann' also inside 'Annecy': the first
        "Rome\tItaly\tcapital_of\tMadrid is the capital of Spain .\n"     # neither mention in the text: left out
        "Bob\tBob\tOther\tBob met Bob .\n")                             # the tail skips the head's occurrence
    registry = _relation_registry(tmp_path, {"format": "tsv", "header": False, "train": "r.tsv",
                                             "columns": {"head": 0, "tail": 1, "label": 2, "text": 3}})
    split = read_split(registry, registry.task("t"), "train")
    rows = list(split.examples)
    assert [r["label"] for r in rows] == ["capital_of", "born_in", "Other"]
    assert rows[0]["head"] == [0, 5] and rows[0]["tail"] == [24, 30]
    assert rows[1]["head"] == [0, 3] and rows[1]["tail"] == [16, 22]
    assert rows[2]["head"] == [0, 3] and rows[2]["tail"] == [8, 11]
    assert dict(split.dropped) == {"head not in the text": 1}
    assert dict(split.notes) == {"head occurs more than once (the first used)": 2,
                                 "tail occurs more than once (the first not overlapping the head used)": 1}


def test_offset_columns_pick_the_occurrence(tmp_path):
    from hub.data import read_split

    (tmp_path / "r.jsonl").write_text(
        '{"s": "Ann met Ann .", "h": "Ann", "hs": 8, "t": "Ann", "ts": 0, "r": "Other"}\n'
        '{"s": "Ann met Ann .", "h": "Ann", "hs": 3, "t": "Ann", "ts": 0, "r": "Other"}\n')
    registry = _relation_registry(tmp_path, {"format": "jsonl", "train": "r.jsonl", "columns": {
        "text": "s", "head": "h", "head_start": "hs", "tail": "t", "tail_start": "ts", "label": "r"}})
    split = read_split(registry, registry.task("t"), "train")
    assert list(split.examples) == [{"text": "Ann met Ann .", "head": [8, 11], "tail": [0, 3], "label": "Other"}]
    assert dict(split.dropped) == {"head not at its offset": 1} and not split.notes


def test_a_head_column_without_a_tail_column_says_what_to_set(tmp_path):
    (tmp_path / "r.tsv").write_text("e1\tsentence\trel\nParis\tParis is nice .\tOther\n")
    registry = _relation_registry(tmp_path, {"format": "tsv", "train": "r.tsv",
                                             "columns": {"head": "e1", "text": "sentence", "label": "rel"}})
    with pytest.raises(DataError, match="give both data.columns.head and data.columns.tail"):
        load_split(registry, registry.task("t"), "train")


@pytest.mark.parametrize(("row", "message"), [
    ({"s": "Ann met Bob .", "h": "Bob", "hs": -5, "t": "Ann", "r": "Other"}, "holds -5, not a character offset"),
    ({"s": "Ann met Bob .", "h": "Bob", "hs": "x", "t": "Ann", "r": "Other"}, "holds 'x', not a character offset"),
    ({"s": "Ann met Bob", "h": [0, 3], "t": [50, 60], "r": "Other"}, r"tail span \[50, 60\] is empty or outside"),
    ({"s": "Ann met Bob", "h": [3, 3], "t": [8, 11], "r": "Other"}, r"head span \[3, 3\] is empty or outside"),
])
def test_bad_offsets_and_spans_stop_with_the_row(tmp_path, row, message):
    """A negative or non-numeric offset, or a span outside its text, is a broken row (not a mention to look for)."""
    import json

    (tmp_path / "r.jsonl").write_text(json.dumps(row) + "\n")
    registry = _relation_registry(tmp_path, {"format": "jsonl", "train": "r.jsonl", "columns": {
        "text": "s", "head": "h", "head_start": "hs", "tail": "t", "label": "r"}})
    with pytest.raises(DataError, match=f"example 1: .*{message}"):
        load_split(registry, registry.task("t"), "train")
