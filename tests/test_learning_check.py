"""`hub train` says when a model learned nothing: the majority-class baseline beside the dev metric, the share of
its most frequent answer, and a warning (issue 20)."""

from __future__ import annotations

import json
from pathlib import Path

from hub.card import card_report
from hub.learning_check import card_lines, check_learning
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


def _answer_task(kind, metric, labels=None):
    task = {"name": "t", "backbone": "b", "kind": kind, "inputs": ["text"] if kind == "span_ner" else
            ["question", "context"], "metric": metric, **({"labels": list(labels)} if labels else {})}
    registry = parse_registry({"backbones": [{"name": "b", "source": "x", "language": "en"}], "tasks": [task]},
                              Path("registry.yaml"))
    return registry.task("t")


def test_a_span_task_that_finds_nothing_is_flagged():
    """Span NER: the baseline answers the dev set's most frequent span set (here none: F1 0)."""
    task = _answer_task("span_ner", "span_f1", ("PER", "LOC"))
    references = [[[0, 4, "PER"]], [], [[2, 5, "LOC"], [7, 9, "PER"]], [], []]
    nothing = [[] for _ in references]
    found = check_learning(task, nothing, references, compute_metric("span_f1", nothing, references, task.labels))
    assert found["majority_label"] == "nothing (no span)" and found["majority_baseline"] == {"f1": 0.0}
    assert found["top_prediction"] == "nothing (no span)" and found["top_prediction_share"] == 1.0
    assert "no better than always answering nothing (no span)" in found["warning"]
    assert "would score f1 0.0000" in card_lines(found) and "most frequent answer nothing (no span)" in card_lines(found)
    good = check_learning(task, references, references, compute_metric("span_f1", references, references, task.labels))
    assert "warning" not in good and good["top_prediction"] == "nothing (no span)" and good["top_prediction_share"] == 0.6
    tuples = [[tuple(span) for span in row] for row in references]  # a head may answer tuples
    assert "warning" not in check_learning(task, tuples, references, {"f1": 1.0})


def test_a_qa_task_that_answers_nothing_is_flagged():
    """QA: a model that answers nothing for nearly every question, where the gold answers differ."""
    task = _answer_task("qa", "squad")
    references = [[f"answer {i}", f"the answer {i}"] for i in range(40)]
    empty = [""] * 40
    found = check_learning(task, empty, references, compute_metric("squad", empty, references))
    assert found["top_prediction"] == "nothing (no answer)" and found["unit"] == "questions"
    assert found["majority_baseline"]["f1"] > 0  # 'answer 0' shares the token 'answer' with every gold answer
    assert "it answers nothing (no answer) for 100% of the dev questions" in found["warning"]
    good = [r[0] for r in references]
    assert "warning" not in check_learning(task, good, references, compute_metric("squad", good, references))


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


def test_span_and_qa_training_reports_carry_the_check(tmp_path, tiny_backbone_dir, capsys):
    """The served answers of real span and QA tasks reach the check: the screen and the card show whole answers."""
    registry = load_registry(write_registry(tmp_path, tiny_registry(tmp_path, tiny_backbone_dir)))
    for task, unit in (("spans", "rows"), ("reader", "questions")):
        report = train_task(registry, task, progress=False, learning_rate=1e-9, output=tmp_path / task)
        check = report["learning_check"]
        assert check["answers"] is True and check["unit"] == unit and 0 < check["top_prediction_share"] <= 1
        printed = capsys.readouterr().out
        assert f"[{task}] always answering {check['majority_label']} would score" in printed
        assert f"most frequent answer {check['majority_label']}" in (tmp_path / task / "README.md").read_text()
