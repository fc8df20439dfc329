"""`hub train` says when a model learned nothing: the majority-class baseline beside the dev metric, the share of
its most frequent answer, and a warning (issue 20)."""

from __future__ import annotations

import json
from pathlib import Path

from hub.card import card_report
from hub.learning_check import check_learning
from hub.metrics import compute_metric
from hub.registry import load_registry, parse_registry
from hub.training import train_task

from conftest import tiny_registry, write_registry


def _task(metric="accuracy", labels=("negative", "positive")):
    task = {"name": "t", "backbone": "b", "kind": "classification" if labels else "regression", "inputs": ["text"],
            "metric": metric, **({"labels": list(labels)} if labels else {})}
    registry = parse_registry({"backbones": [{"name": "b", "source": "x", "language": "en"}], "tasks": [task]},
                              Path("registry.yaml"))
    return registry.task("t")


def test_one_answer_for_every_row_is_flagged():
    references = ["negative"] * 6 + ["positive"] * 4
    found = check_learning(_task(), ["negative"] * 10, references, {"accuracy": 0.6})
    assert found["majority_label"] == "negative" and found["majority_baseline"] == {"accuracy": 0.6}
    assert found["top_prediction_share"] == 1.0
    assert "no better than always answering 'negative'" in found["warning"]
    assert "answers 'negative' for 100% of the dev rows" in found["warning"] and "--epochs" in found["warning"]


def test_a_model_that_beats_the_majority_is_not_flagged():
    references = ["negative"] * 6 + ["positive"] * 4
    predictions = ["negative"] * 5 + ["positive"] + ["positive"] * 4
    found = check_learning(_task(), predictions, references, {"accuracy": 0.9})
    assert "warning" not in found and found["top_prediction_share"] == 0.5


def test_the_baseline_is_scored_with_the_tasks_own_metric():
    """F1 of the positive class: always answering the majority 'different' scores 0, so a model at F1 0.3 is not
    flagged by the baseline (only by a one-answer share, which it does not have)."""
    references = ["different"] * 7 + ["same"] * 3
    predictions = ["different"] * 5 + ["same"] * 5
    found = check_learning(_task("f1", ("different", "same")), predictions, references, {"f1": 0.5, "accuracy": 0.6})
    assert found["majority_baseline"] == {"f1": 0.0} and "warning" not in found


def test_a_regression_that_predicts_one_value_is_flagged():
    found = check_learning(_task("pearson_spearman", None), [2.5] * 8, [0.0, 1, 2, 3, 4, 5, 1, 2],
                           {"pearson_spearman": 0.0})
    assert "predictions hardly vary" in found["warning"]
    assert "warning" not in check_learning(_task("pearson_spearman", None), [0.1, 1, 2, 3, 4, 5, 1, 2],
                                           [0.0, 1, 2, 3, 4, 5, 1, 2], {"pearson_spearman": 1.0})


def test_a_tagger_that_tags_every_word_o_is_flagged():
    """Per word: tagging every word 'O' (the dev set's most frequent tag) is the baseline; entity F1 scores it 0."""
    task = _task("entity_f1", ("O", "B-PER", "I-PER"))
    references = [["B-PER", "I-PER", "O", "O"], ["O", "O", "B-PER", "O"]]
    all_o = [["O"] * 4, ["O"] * 4]
    found = check_learning(task, all_o, references, compute_metric("entity_f1", all_o, references, task.labels))
    (primary, value), = found["majority_baseline"].items()
    assert found["majority_label"] == "O" and value == 0.0
    assert found["unit"] == "words" and found["top_prediction_share"] == 1.0 and "no better than" in found["warning"]
    good = check_learning(task, references, references, compute_metric("entity_f1", references, references, task.labels))
    assert "warning" not in good


def test_other_kinds_are_not_checked():
    spans = [[[0, 4, "PER"]], []]
    assert check_learning(_task(), spans, [[[0, 4, "PER"]], []], {"accuracy": 0.0}) is None  # span answers
    assert check_learning(_task(), [{"answer": "x"}], [{"answer": "x"}], {"accuracy": 1.0}) is None  # QA


def test_an_undertrained_task_warns_on_screen_and_in_its_card(tmp_path, tiny_backbone_dir, capsys):
    """A deliberately under-trained task (a learning rate of 1e-9) on a dev set that is 90% one class."""
    document = tiny_registry(tmp_path, tiny_backbone_dir)
    dev = tmp_path / "data" / "sent_dev.jsonl"
    rows = [{"text": "the movie was good", "label": "positive"}] * 36 + [{"text": "bad plot", "label": "negative"}] * 4
    dev.write_text("".join(json.dumps(row) + "\n" for row in rows))
    registry = load_registry(write_registry(tmp_path, document))
    report = train_task(registry, "sentiment", progress=False, learning_rate=1e-9, output=tmp_path / "out")
    check = report["learning_check"]
    assert check["majority_label"] == "positive" and check["majority_baseline"] == {"accuracy": 0.9}
    assert report["metrics"]["accuracy"] <= 0.9 and "warning" in check
    printed = capsys.readouterr().out
    assert "always answering 'positive' would score accuracy=0.9000" in printed and "WARNING: task 'sentiment'" in printed
    card = (tmp_path / "out" / "README.md").read_text()
    assert ("always answering the dev set's most frequent label 'positive' (90% of its rows) would score accuracy "
            "0.9000") in card
    assert "**Warning:** task 'sentiment' may have learned little" in card
    assert card_report(tmp_path / "out")["learning_check"]["majority_label"] == "positive"
