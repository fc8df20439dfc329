"""Tagging data readers: CoNLL columns in any order, character spans (CLUENER style), package corpora."""

from __future__ import annotations

import json

import pytest

from hub.data import load_split
from hub.errors import DataError
from hub.registry import load_registry, parse_registry

from conftest import REPO, SHARED_DATA, needs_shared_data


def _registry(tmp_path, data: dict, labels=("PER", "LOC"), head=None):
    task = {"name": "t", "backbone": "b", "kind": "tagging", "labels": list(labels), "metric": "entity_f1",
            "head": head or {"scheme": "bio"}, "data": data}
    return parse_registry({"backbones": [{"name": "b", "source": "x", "language": "en"}], "tasks": [task]}, tmp_path / "r.yaml")


def test_conll_columns_in_any_order(tmp_path):
    (tmp_path / "train.txt").write_text("-DOCSTART- O x\n\nB-PER\tJohn\tNNP\nO\tlives\tVBZ\n\nB-LOC Paris NNP\n", encoding="utf-8")
    registry = _registry(tmp_path, {"format": "conll", "train": "train.txt", "columns": {"tokens": 1, "tags": 0}})
    data = load_split(registry, registry.task("t"), "train")
    assert data["tokens"] == [["John", "lives"], ["Paris"]]
    assert data["tags"] == [["B-PER", "O"], ["B-LOC"]]


def test_conll_unknown_tag_and_missing_column_are_clear(tmp_path):
    (tmp_path / "a.txt").write_text("John B-ORG\n", encoding="utf-8")
    registry = _registry(tmp_path, {"format": "conll", "train": "a.txt"})
    with pytest.raises(DataError, match=r"tags \['B-ORG'\] are not among the task's labels"):
        load_split(registry, registry.task("t"), "train")
    registry = _registry(tmp_path, {"format": "conll", "train": "a.txt", "columns": {"tags": 5}})
    with pytest.raises(DataError, match="data.columns.tags"):
        load_split(registry, registry.task("t"), "train")


def test_character_spans_both_styles(tmp_path):
    rows = [{"text": "张三在北京", "label": {"PER": {"张三": [[0, 1]]}, "LOC": {"北京": [[3, 4]]}}},
            {"text": "李四", "label": [{"start": 0, "end": 2, "label": "PER"}]}, {"text": "没有实体"}]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    registry = _registry(tmp_path, {"format": "jsonl", "dev": "d.jsonl"})
    data = load_split(registry, registry.task("t"), "dev")
    assert data[0]["spans"] == [{"start": 0, "end": 2, "label": "PER"}, {"start": 3, "end": 5, "label": "LOC"}]
    assert data[1]["spans"] == [{"start": 0, "end": 2, "label": "PER"}] and data[2]["spans"] == []


@pytest.mark.parametrize(("label", "message"), [
    ({"PER": {"张三": [[0, 9]]}}, "outside the text"),
    ({"PER": {"王五": [[0, 1]]}}, "not '王五'"),
    ({"ORG": {"张三": [[0, 1]]}}, "entity type 'ORG' is not among"),
])
def test_bad_spans_are_refused(tmp_path, label, message):
    (tmp_path / "d.jsonl").write_text(json.dumps({"text": "张三在北京", "label": label}, ensure_ascii=False) + "\n", encoding="utf-8")
    registry = _registry(tmp_path, {"format": "jsonl", "dev": "d.jsonl"})
    with pytest.raises(DataError, match=message):
        load_split(registry, registry.task("t"), "dev")


def test_package_tagging_corpora_have_disjoint_fixed_splits():
    registry = load_registry(REPO / "registry.yaml")
    for name in ("cws_zh", "pos_zh"):
        task = registry.task(name)
        train, dev = load_split(registry, task, "train"), load_split(registry, task, "dev")
        assert not {"".join(t) for t in train["tokens"]} & {"".join(t) for t in dev["tokens"]}
        assert 0.08 < len(dev) / (len(train) + len(dev)) < 0.12
        assert {tag for tags in dev["tags"] for tag in tags} <= set(task.labels)
    cws = load_split(registry, registry.task("cws_zh"), "dev")[0]
    assert cws["tags"][:6] == ["B", "M", "M", "M", "E", "S"]  # "１９９８年" "，"
    msra = registry.task("msra_ner")
    assert len(load_split(registry, msra, "dev")) == 5000


@needs_shared_data
def test_real_ner_files_read():
    registry = load_registry(REPO / "registry.yaml")
    dev = load_split(registry, registry.task("conll2003"), "dev")
    assert len(dev) == 3250  # eng.testa sentences
    assert dev[0]["tokens"][:3] == ["CRICKET", "-", "LEICESTERSHIRE"]
    clue = load_split(registry, registry.task("cluener"), "dev")
    assert len(clue) == 1343 and clue[0]["spans"][0] == {"start": 0, "end": 3, "label": "name"}
    assert SHARED_DATA.is_dir()
