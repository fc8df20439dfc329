"""Data readers: TSV with/without header, BOM, quotes; JSON lines; CSV; label mapping; clear errors."""

from __future__ import annotations

import pytest

from hub.data import load_split
from hub.errors import DataError
from hub.registry import parse_registry

from conftest import REPO, SHARED_DATA, needs_shared_data


def _registry(tmp_path, data: dict, labels=("negative", "positive"), inputs=("sentence",), kind="classification"):
    task = {"name": "t", "backbone": "b", "kind": kind, "inputs": list(inputs), "metric": "accuracy" if labels else "pearson_spearman", "data": data}
    if labels:
        task["labels"] = list(labels)
    return parse_registry({"backbones": [{"name": "b", "source": "x", "language": "en"}], "tasks": [task]}, tmp_path / "r.yaml")


def test_tsv_without_header_by_index_with_quotes(tmp_path):
    (tmp_path / "train.tsv").write_text('src\t1\t\tHe said "hi there.\nsrc\t0\t*\tBad one .\n')
    registry = _registry(tmp_path, {"format": "tsv", "header": False, "columns": {"sentence": 3, "label": 1},
                                    "train": "train.tsv", "label_values": {"0": "negative", "1": "positive"}})
    data = load_split(registry, registry.task("t"), "train")
    assert data["sentence"] == ['He said "hi there.', "Bad one ."]
    assert data["label"] == ["positive", "negative"]


def test_tsv_header_with_byte_order_mark(tmp_path):
    (tmp_path / "dev.tsv").write_bytes("\ufeffQuality\t#1 String\t#2 String\n1\ta\tb\n".encode())
    registry = _registry(tmp_path, {"format": "tsv", "columns": {"s1": "#1 String", "s2": "#2 String", "label": "Quality"},
                                    "dev": "dev.tsv", "label_values": {"0": "negative", "1": "positive"}}, inputs=("s1", "s2"))
    data = load_split(registry, registry.task("t"), "dev")
    assert data[0] == {"s1": "a", "s2": "b", "label": "positive"}


def test_jsonl_and_csv_with_column_mapping(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"txt": "好", "y": 1}\n\n{"txt": "坏", "y": 0}\n', encoding="utf-8")
    registry = _registry(tmp_path, {"format": "jsonl", "columns": {"sentence": "txt", "label": "y"}, "train": "a.jsonl",
                                    "label_values": {"0": "negative", "1": "positive"}})
    assert load_split(registry, registry.task("t"), "train")["sentence"] == ["好", "坏"]
    (tmp_path / "a.csv").write_text('text,score\n"hello, world",3.5\n')
    registry = _registry(tmp_path, {"format": "csv", "columns": {"sentence": "text", "label": "score"}, "train": "a.csv"},
                         labels=None, kind="regression")
    assert load_split(registry, registry.task("t"), "train")[0] == {"sentence": "hello, world", "label": 3.5}


@pytest.mark.parametrize(
    ("content", "data", "message"),
    [
        ('{"sentence": "x", "label": "meh"}\n', {}, "not one of the task's labels"),
        ('{"sentence": "x"}\n', {}, "no column 'label'"),
        ('{"sentence": "x", "label": "positive"\n', {}, "not a JSON object"),
    ],
)
def test_bad_rows_name_the_file_row_and_fix(tmp_path, content, data, message):
    (tmp_path / "d.jsonl").write_text(content)
    registry = _registry(tmp_path, {"format": "jsonl", "train": "d.jsonl", **data})
    with pytest.raises(DataError, match=message):
        load_split(registry, registry.task("t"), "train")


def test_missing_file_and_missing_split(tmp_path):
    registry = _registry(tmp_path, {"format": "jsonl", "train": "absent.jsonl"})
    with pytest.raises(DataError, match="not found"):
        load_split(registry, registry.task("t"), "train")
    with pytest.raises(DataError, match="data.dev is not set"):
        load_split(registry, registry.task("t"), "dev")


def test_package_corpora_have_fixed_disjoint_splits():
    from hub.registry import load_registry

    registry = load_registry(REPO / "registry.yaml")
    for name in ("bbc_news", "sentiment_zh"):
        task = registry.task(name)
        train, dev = load_split(registry, task, "train"), load_split(registry, task, "dev")
        assert set(train["label"]) == set(dev["label"]) == set(task.labels)
        assert not set(train[task.inputs[0]]) & set(dev[task.inputs[0]])
        assert 0.08 < len(dev) / (len(train) + len(dev)) < 0.25


@needs_shared_data
def test_real_glue_and_clue_files_read_with_official_row_counts():
    from hub.registry import load_registry

    registry = load_registry(REPO / "registry.yaml")
    expected = {("cola", "dev"): 1043, ("mrpc", "train"): 3668, ("mrpc", "dev"): 408, ("stsb", "dev"): 1500,
                ("rte", "dev"): 277, ("sst2", "dev"): 872, ("tnews", "dev"): 10000, ("afqmc", "dev"): 4316}
    for (task, split), rows in expected.items():
        assert len(load_split(registry, registry.task(task), split)) == rows, (task, split)
    assert SHARED_DATA.is_dir()


def test_hub_data_set_path_with_class_label_names(tmp_path, monkeypatch):
    """format: hf goes through datasets.load_dataset; checked offline on a local parquet data set."""
    from datasets import ClassLabel, Dataset, Features, Value

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    features = Features({"sentence": Value("string"), "label": ClassLabel(names=["negative", "positive"])})
    folder = tmp_path / "my_glue"
    folder.mkdir()
    Dataset.from_dict({"sentence": ["great", "awful"], "label": [1, 0]}, features=features).to_parquet(str(folder / "train.parquet"))
    Dataset.from_dict({"sentence": ["fine"], "label": [1]}, features=features).to_parquet(str(folder / "validation.parquet"))
    registry = _registry(tmp_path, {"format": "hf", "path": str(folder)})
    train = load_split(registry, registry.task("t"), "train")
    assert train["label"] == ["positive", "negative"]
    assert load_split(registry, registry.task("t"), "dev")["sentence"] == ["fine"]


def test_rows_dropped_by_a_null_label_value_and_by_data_drop_are_counted(tmp_path):
    """An NLI file whose unlabelled rows hold '-' (SNLI's convention): `label_values: {"-": null}` drops them, and
    `data.drop` drops by any field; the split says how many rows went, and why."""
    from hub.data import read_split

    (tmp_path / "nli.tsv").write_text("premise\thypothesis\tgold\n"
                                      "a man\ta person\tentailment\n"
                                      "a cat\ta dog\t-\n"
                                      "\tempty premise\tcontradiction\n"
                                      "two\tone\tcontradiction\n"
                                      "x\ty\t-\n")
    data = {"format": "tsv", "train": "nli.tsv", "columns": {"label": "gold"},
            "label_values": {"-": None}, "drop": {"premise": [""]}}
    registry = _registry(tmp_path, data, labels=("entailment", "contradiction"), inputs=("premise", "hypothesis"))
    split = read_split(registry, registry.task("t"), "train")
    assert split.examples["premise"] == ["a man", "two"]
    assert dict(split.dropped) == {"label '-'": 2, "premise ''": 1}
    assert split.dropped_note() == "3 rows dropped (label '-': 2, premise '': 1)"
    without = _registry(tmp_path, {**data, "label_values": None, "drop": {}},
                        labels=("entailment", "contradiction"), inputs=("premise", "hypothesis"))
    with pytest.raises(DataError, match="label '-' is not one of the task's labels"):
        read_split(without, without.task("t"), "train")


def test_a_file_whose_every_row_is_dropped_says_so(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"sentence": "x", "label": "-"}\n')
    registry = _registry(tmp_path, {"format": "jsonl", "train": "d.jsonl", "drop": {"label": ["-"]}})
    with pytest.raises(DataError, match=r"holds no examples \(1 row dropped \(label '-': 1\)"):
        load_split(registry, registry.task("t"), "train")


def test_tagging_refuses_a_null_tag_with_the_fix(tmp_path):
    (tmp_path / "d.conll").write_text("EU B-ORG\nrejects O\n\n")
    registry = _registry(tmp_path, {"format": "conll", "train": "d.conll", "label_values": {"O": None}},
                         labels=("ORG", "PER"), inputs=("text",), kind="tagging")
    with pytest.raises(DataError, match="one tag per token; map each such tag to a label"):
        load_split(registry, registry.task("t"), "train")


def test_token_pattern_keeps_the_token_of_a_column_that_carries_more(tmp_path):
    """A character CoNLL column whose characters carry a position digit ('中1'): data.token_pattern keeps the token."""
    (tmp_path / "d.conll").write_text("中1 B-ORG\n国2 I-ORG\n好1 O\n\n", encoding="utf-8")
    data = {"format": "conll", "train": "d.conll", "token_pattern": "^(.)"}
    registry = _registry(tmp_path, data, labels=("B-ORG", "I-ORG", "O"), inputs=("text",), kind="tagging")
    assert load_split(registry, registry.task("t"), "train")[0]["tokens"] == ["中", "国", "好"]
    emptying = _registry(tmp_path, {**data, "token_pattern": r"(\d*)$"}, labels=("B-ORG", "I-ORG", "O"), inputs=("text",),
                         kind="tagging")
    (tmp_path / "d.conll").write_text("中 B-ORG\n\n", encoding="utf-8")
    with pytest.raises(DataError, match="leaves nothing under data.token_pattern"):
        load_split(emptying, emptying.task("t"), "train")


def test_a_token_pattern_that_is_no_regular_expression_is_refused(tmp_path):
    from hub.errors import RegistryError

    with pytest.raises(RegistryError, match="is not a regular expression"):
        _registry(tmp_path, {"format": "conll", "train": "d.conll", "token_pattern": "(unclosed"},
                  labels=("ORG", "PER"), inputs=("text",), kind="tagging")
