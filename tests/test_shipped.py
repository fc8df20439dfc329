"""The shipped adapters on the embedded backbones: the issue's examples, and card metrics that reproduce."""

from __future__ import annotations

import pytest

import hub
from hub.card import card_metrics
from hub.data import load_split
from hub.evaluation import evaluate_task

from conftest import REPO, needs_shared_data


@pytest.fixture(scope="module")
def shipped():
    loaded = hub.Hub.load(REPO / "registry.yaml")
    missing = [t["task"] for t in loaded.tasks() if not t["trained"]]
    assert not missing, f"registry.yaml lists tasks without shipped adapters: {missing}"
    return loaded


def test_python_api_examples(shipped):
    result = shipped.run("sst2", "This movie was amazing!")
    assert result["task"] == "sst2" and result["label"] == "positive" and 0.5 < result["score"] <= 1.0
    assert shipped.run("sst2", "A dull, lifeless and badly acted mess.")["label"] == "negative"
    assert shipped.run("mrpc", ("He said hi.", "He greeted us."))["label"] in {"equivalent", "not_equivalent"}
    similar = shipped.run("stsb", ("A man plays the guitar.", "A man is playing a guitar."))["value"]
    unrelated = shipped.run("stsb", ("A man plays the guitar.", "The stock market fell sharply today."))["value"]
    assert similar > unrelated + 1.5
    assert shipped.run("tnews", "上课时学生手机响个不停，老师一怒之下把手机摔了")["label"] in shipped.registry.task("tnews").labels
    filled = shipped.run("fill_mask_zh", "我喜欢吃苹[MASK]。")  # the shipped masked-LM adapter and its small head
    assert filled["sequence"] == "我喜欢吃苹果。" and len(filled["masks"][0]["candidates"]) == 5
    batch = shipped.run("sst2", ["good", "bad", "fine"])
    assert isinstance(batch, list) and len(batch) == 3
    assert {t["language"] for t in shipped.tasks()} == {"en", "zh"}


def test_one_mixed_batch_across_languages(shipped):
    requests = [("sst2", "What a wonderful film."), ("tnews", "国足比赛今晚开始"), ("stsb", ("A dog runs.", "A dog is running.")),
                ("sentiment_zh", "质量很差，非常失望"), ("bbc_news", "The striker scored twice in the cup final."),
                ("fill_mask_zh", "北京是中国的[MASK]都。")]
    mixed = shipped.run_many(requests)
    for (task, value), result in zip(requests, mixed):
        alone = shipped.run(task, value)
        assert result.get("label") == alone.get("label") and result.get("sequence") == alone.get("sequence")
        assert result.get("score", result.get("value")) == pytest.approx(alone.get("score", alone.get("value")), abs=1e-4)
        for mixed_mask, alone_mask in zip(result.get("masks", []), alone.get("masks", [])):
            assert [c["score"] for c in mixed_mask["candidates"]] == pytest.approx(
                [c["score"] for c in alone_mask["candidates"]], abs=1e-4)
    assert mixed[5]["masks"] and mixed[3]["label"] == "negative" and mixed[4]["label"] == "sports"


@needs_shared_data
@pytest.mark.parametrize("task", ["sst2", "tnews"])
def test_card_metric_reproduces_on_dev_rows(shipped, task):
    """A few hundred dev rows must land within 3 binomial standard errors of the card's full-dev accuracy."""
    spec = shipped.registry.task(task)
    recorded = card_metrics(shipped.registry.adapter_dir(spec))[spec.metric]
    dev = load_split(shipped.registry, spec, "dev").shuffle(seed=0).select(range(400))
    measured = evaluate_task(shipped, task, dev, progress=False)[spec.metric]
    tolerance = 3 * (recorded * (1 - recorded) / len(dev)) ** 0.5
    assert measured == pytest.approx(recorded, abs=tolerance)


def test_demo_command_answers_every_shipped_task(shipped):
    from typer.testing import CliRunner

    from hub.cli import app

    result = CliRunner().invoke(app, ["demo"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for task in shipped.tasks():
        assert task["task"] in result.output


def test_every_shipped_task_stores_at_most_0_2_percent_of_its_backbone(shipped):
    """The storage promise (README, shipped table): each task's whole folder (adapter, head, configs, card) is at
    most 0.2% of the weight bytes of the backbone it shares."""
    from hub.adapter_folder import AdapterFolder

    for task in shipped.registry.tasks:
        model = shipped.runtime(task.name).backbone.model
        weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        assert weight_bytes > 80e6, task.name  # the embedded MiniLM / m3e-small, not a fragment of them
        folder = AdapterFolder(shipped.registry.adapter_dir(task))
        assert folder.nbytes() <= 0.002 * weight_bytes, (task.name, folder.nbytes(), weight_bytes)


@needs_shared_data
def test_every_shipped_tagging_task_passes_the_training_token_checks(shipped):
    """The checks that stop `hub train` on tokens serving never produces (too long for a character-split task, mostly
    unknown to the vocabulary) pass on every shipped tagging task's own train file: no false alarm."""
    tagging = [t for t in shipped.registry.tasks if t.kind in ("tagging", "span_ner") and t.data is not None]
    assert tagging
    for task in tagging:
        rows = load_split(shipped.registry, task, "train")
        assert shipped.runtime(task.name).examples.serving_mismatch(rows) is None, task.name
