"""registry.yaml validation: every error names the file, the entry, the field and the fix."""

from __future__ import annotations

import json
import shutil

import pytest

import hub
from hub.errors import RegistryError
from hub.registry import load_registry, parse_registry

from conftest import tiny_registry, write_registry


def _error(tmp_path, backbone_dir, mutate) -> str:
    document = tiny_registry(tmp_path, backbone_dir)
    mutate(document)
    path = write_registry(tmp_path, document)
    with pytest.raises(RegistryError) as info:
        load_registry(path)
    return str(info.value)


def test_valid_registry_loads(tmp_path, tiny_backbone_dir):
    registry = load_registry(write_registry(tmp_path, tiny_registry(tmp_path, tiny_backbone_dir)))
    assert [t.name for t in registry.tasks] == ["sentiment", "paraphrase", "similarity", "entities", "reader", "spans", "relations", "joint"]
    assert registry.adapter_dir(registry.task("sentiment")) == tmp_path / "adapters" / "sentiment"
    assert registry.task("entities").labels == ["O", "B-GOOD", "I-GOOD", "B-BAD", "I-BAD"]  # types -> BIO tags


def test_unknown_key_names_file_entry_field_and_fix(tmp_path, tiny_backbone_dir):
    message = _error(tmp_path, tiny_backbone_dir, lambda d: d["tasks"][1].update(lables=["a", "b"]))
    assert "registry.yaml" in message and "'paraphrase'" in message and "'lables'" in message
    assert "remove this key" in message


def test_unknown_kind_lists_known_kinds(tmp_path, tiny_backbone_dir):
    message = _error(tmp_path, tiny_backbone_dir, lambda d: d["tasks"][0].update(kind="clasification"))
    assert "field 'kind'" in message and "classification" in message and "'sentiment'" in message


def test_unknown_backbone(tmp_path, tiny_backbone_dir):
    message = _error(tmp_path, tiny_backbone_dir, lambda d: d["tasks"][2].update(backbone="german"))
    assert "unknown backbone 'german'" in message and "'similarity'" in message and "use one of: tiny" in message


def test_duplicate_task(tmp_path, tiny_backbone_dir):
    message = _error(tmp_path, tiny_backbone_dir, lambda d: d["tasks"].append(dict(d["tasks"][0])))
    assert "duplicate name" in message and "'sentiment'" in message and "#9" in message


def test_duplicate_yaml_key_is_refused(tmp_path, tiny_backbone_dir):
    path = write_registry(tmp_path, tiny_registry(tmp_path, tiny_backbone_dir))
    text = path.read_text().replace("  kind: classification\n", "  kind: classification\n  kind: regression\n", 1)
    path.write_text(text)
    with pytest.raises(RegistryError, match="key 'kind' appears twice"):
        load_registry(path)


def test_labels_required_for_classification_and_refused_for_regression(tmp_path, tiny_backbone_dir):
    assert "needs 'labels'" in _error(tmp_path, tiny_backbone_dir, lambda d: d["tasks"][0].pop("labels"))
    assert "remove 'labels'" in _error(tmp_path, tiny_backbone_dir, lambda d: d["tasks"][2].update(labels=["x", "y"]))


def test_bad_head_option_and_metric(tmp_path, tiny_backbone_dir):
    assert "pooling" in _error(tmp_path, tiny_backbone_dir, lambda d: d["tasks"][0].update(head={"pooling": "sum"}))
    assert "unknown metric 'acc'" in _error(tmp_path, tiny_backbone_dir, lambda d: d["tasks"][0].update(metric="acc"))


def test_missing_adapter_files(tmp_path, tiny_backbone_dir, trained_registry):
    document = tiny_registry(tmp_path, tiny_backbone_dir)
    path = write_registry(tmp_path, document)
    shutil.copytree(trained_registry.parent / "adapters" / "sentiment", tmp_path / "adapters" / "sentiment")
    load_registry(path)  # complete folder: fine
    (tmp_path / "adapters" / "sentiment" / "head.safetensors").unlink()
    with pytest.raises(RegistryError, match=r"lacks head\.safetensors.*hub train sentiment"):
        load_registry(path)


def test_labels_that_do_not_match_the_head(tmp_path, tiny_backbone_dir, trained_registry):
    shutil.copytree(trained_registry.parent / "adapters" / "sentiment", tmp_path / "adapters" / "sentiment")
    message = _error(tmp_path, tiny_backbone_dir, lambda d: d["tasks"][0].update(labels=["negative", "neutral", "positive"]))
    assert "field 'labels'" in message and "do not match the adapter head's 2 labels" in message


def test_absent_adapter_means_untrained_and_says_how_to_train(tmp_path, tiny_backbone_dir):
    loaded = hub.Hub.load(write_registry(tmp_path, tiny_registry(tmp_path, tiny_backbone_dir)))
    assert [t["trained"] for t in loaded.tasks()] == [False] * 8
    with pytest.raises(hub.AdapterError, match="hub train sentiment"):
        loaded.run("sentiment", "good movie")


def test_not_a_mapping_and_bad_yaml(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("- just a list\n")
    with pytest.raises(RegistryError, match="mapping"):
        load_registry(path)
    path.write_text("backbones: [\n")
    with pytest.raises(RegistryError, match="not valid YAML"):
        load_registry(path)
    with pytest.raises(RegistryError, match="cannot read registry file"):
        load_registry(tmp_path / "absent.yaml")


def test_shipped_registry_is_valid():
    registry = load_registry(hub.default_registry_path())
    names = {t.name for t in registry.tasks}
    assert {"sst2", "cola", "mrpc", "stsb", "rte", "tnews", "afqmc"} <= names
    assert {b.language for b in registry.backbones} == {"en", "zh"}


def test_head_config_kind_mismatch(tmp_path, tiny_backbone_dir, trained_registry):
    shutil.copytree(trained_registry.parent / "adapters" / "similarity", tmp_path / "adapters" / "sentiment")
    message = _error(tmp_path, tiny_backbone_dir, lambda d: None)
    assert "head is of kind 'regression'" in message
    config = json.loads((tmp_path / "adapters" / "sentiment" / "head_config.json").read_text())
    assert config["kind"] == "regression"


def test_example_must_fit_the_input_fields(tmp_path, tiny_backbone_dir):
    message = _error(tmp_path, tiny_backbone_dir, lambda d: d["tasks"][1].update(example="only one text"))
    assert "'example' must give 2 text(s)" in message and "'paraphrase'" in message
    registry = load_registry(write_registry(tmp_path, tiny_registry(tmp_path, tiny_backbone_dir)))
    assert registry.task("sentiment").example_input is None


@pytest.mark.parametrize(("change", "expected"), [
    (lambda d: d["tasks"][0]["head"].update(pair="siamese") if "head" in d["tasks"][0] else d["tasks"][0].update(head={"pair": "siamese"}),
     "siamese compares two texts"),
    (lambda d: d["tasks"][2].update(head={"pooling": "pooler", "pair": "siamese"}), "use pooling cls, mean or max"),
    (lambda d: d["tasks"][3].update(labels=["O", "X-GOOD"]), "not a BIO tag"),
    (lambda d: d["tasks"][3].update(labels=["O", "B-GOOD", "I-GOOD"], head={"scheme": "bmes"}), "not a BMES tag"),
])
def test_head_options_that_cannot_work_are_refused(tmp_path, tiny_backbone_dir, change, expected):
    message = _error(tmp_path, tiny_backbone_dir, change)
    assert expected in message and "registry.yaml" in message


def test_metric_defaults_to_the_kinds_and_a_misspelled_kind_is_the_only_error():
    from pathlib import Path

    def parse(kind: str):
        entry = {"name": "t", "backbone": "b", "kind": kind, "inputs": ["question", "context"]}
        return parse_registry({"backbones": [{"name": "b", "source": "x", "language": "en"}], "tasks": [entry]}, Path("r.yaml"))

    assert parse("qa").tasks[0].metric == "squad"
    with pytest.raises(RegistryError) as error:
        parse("qaa")
    assert "unknown kind 'qaa'" in str(error.value) and "metric" not in str(error.value)


def test_a_head_config_that_is_not_an_object_is_named(trained_registry, tmp_path):
    shutil.copytree(trained_registry.parent, tmp_path / "copy")
    (tmp_path / "copy" / "adapters" / "sentiment" / "head_config.json").write_text("[1, 2]")
    with pytest.raises(RegistryError, match="head_config.json is not a JSON object"):
        load_registry(tmp_path / "copy" / "registry.yaml")
