"""Model cards: the Hub data sets in `datasets` and `model-index`, rebuilding a card without retraining, and the
shipped cards."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from huggingface_hub import ModelCard

from hub.card import build_card, card_for_upload, card_metrics, card_report, dataset_ids, rebuild_card
from hub.registry import BackboneSpec, TaskSpec, load_registry

from conftest import REPO

BACKBONE = BackboneSpec(name="tiny", source="unused", id="tests/tiny-bert", language="en")
REPORT = {
    "metrics": {"accuracy": 0.875, "f1": 0.8},
    "trainable_parameters": 1000, "total_parameters": 50000, "trainable_share": 0.02, "adapter_bytes": 4096,
    "train_examples": 96, "eval_examples": 40, "train_seconds": 3.2, "command": "hub train reviews",
    "head": {"pooling": "mean", "dropout": 0.1}, "train": {"epochs": 1.0, "learning_rate": 0.005},
}


def make_task(data: dict | None) -> TaskSpec:
    return TaskSpec.model_validate({
        "name": "reviews", "backbone": "tiny", "kind": "classification", "metric": "accuracy",
        "labels": ["negative", "positive"], "description": "Review sentiment", "data": data,
    })


def metadata(text: str) -> dict:
    return yaml.safe_load(text.split("---")[1])


def dev_dataset(text: str) -> dict:
    (result,) = metadata(text)["model-index"][0]["results"]  # all dev metrics share one task and data set
    return result["dataset"]


def write_card(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "README.md").write_text(text, encoding="utf-8")
    return folder


def test_a_task_with_a_hub_id_names_it_in_datasets_and_model_index():
    task = make_task({"format": "jsonl", "train": "t.jsonl", "dev": "d.jsonl", "hub_id": "nyu-mll/glue"})
    card = build_card(task, BACKBONE, REPORT)
    assert metadata(card)["datasets"] == ["nyu-mll/glue"]
    assert dev_dataset(card) == {"name": "Review sentiment", "type": "nyu-mll/glue", "split": "dev"}


def test_a_hub_data_set_task_also_gives_its_config_and_split():
    task = make_task({"format": "hf", "path": "nyu-mll/glue", "name": "sst2", "train": "train"})
    card = build_card(task, BACKBONE, REPORT)
    assert metadata(card)["datasets"] == ["nyu-mll/glue"]
    expected = {"name": "Review sentiment", "type": "nyu-mll/glue", "config": "sst2", "split": "validation"}
    assert dev_dataset(card) == expected


NO_HUB_ID = [None, {"format": "package", "corpus": "bbc_news"}, {"format": "jsonl", "dev": "d.jsonl"}]


@pytest.mark.parametrize("data", NO_HUB_ID)
def test_a_task_without_a_hub_id_has_no_datasets_and_falls_back_to_its_name(data):
    card = build_card(make_task(data), BACKBONE, REPORT)
    assert "datasets" not in metadata(card)
    assert dev_dataset(card)["type"] == "reviews"


def test_the_upload_card_keeps_the_data_sets_and_metrics(tmp_path):
    task = make_task({"format": "jsonl", "dev": "d.jsonl", "hub_id": "tests/reviews"})
    built = build_card(task, BACKBONE, REPORT)
    uploaded = card_for_upload(write_card(tmp_path, built) / "README.md", task)
    assert metadata(uploaded)["datasets"] == ["tests/reviews"] and dev_dataset(uploaded) == dev_dataset(built)
    assert metadata(uploaded)["model-index"] == metadata(built)["model-index"]
    assert metadata(uploaded)["bert_adapter_hub"]["task"]["kind"] == "classification"


def test_rebuilding_a_card_adds_the_new_fields_and_keeps_what_it_records(tmp_path):
    """A card written before `datasets` existed (dataset named after the task) gains them; metrics, sizes,
    recipe and command come back unchanged, and rebuilding the rebuilt card changes nothing."""
    old_task = make_task({"format": "jsonl", "dev": "d.jsonl"})
    new_task = make_task({"format": "jsonl", "dev": "d.jsonl", "hub_id": "tests/reviews"})
    folder = write_card(tmp_path / "reviews", build_card(old_task, BACKBONE, REPORT))
    before = (card_metrics(folder), card_report(folder))
    rebuilt = rebuild_card(folder, new_task, BACKBONE)
    assert rebuilt == build_card(new_task, BACKBONE, REPORT)
    write_card(folder, rebuilt)
    assert (card_metrics(folder), card_report(folder)) == before
    assert rebuild_card(folder, new_task, BACKBONE) == rebuilt


def shipped_cards() -> list[tuple[TaskSpec, Path]]:
    registry = load_registry(REPO / "registry.yaml")
    cards = [(task, registry.adapter_dir(task) / "README.md") for task in registry.tasks]
    found = [(task, card) for task, card in cards if card.is_file()]
    if not found:
        pytest.skip("no shipped adapter cards in adapters/ (the adapters are not checked out)")
    return found


def test_shipped_cards_parse_and_list_their_hub_data_sets():
    for task, card_file in shipped_cards():
        card = ModelCard.load(card_file)
        assert card.data.base_model and card.data.library_name == "peft" and card.data.eval_results, task.name
        expected = dataset_ids(task)
        assert (card.data.datasets or []) == expected, f"{task.name}: run benchmarks/refresh_cards.py"
        assert {r.dataset_type for r in card.data.eval_results} == {expected[0] if expected else task.name}, task.name
        assert metadata(card_for_upload(card_file, task)).get("datasets") == card.data.datasets, task.name
