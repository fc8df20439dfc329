"""Training: only adapter + head change; the folder is complete, evaluated, carded; broken folders never land."""

from __future__ import annotations

import re

import pytest
import torch

import hub
from hub.card import card_metrics
from hub.errors import HubError
from hub.registry import load_registry
from hub.training import train_task

from conftest import tiny_registry, write_registry


def test_only_adapter_and_head_parameters_change(tmp_path, tiny_backbone_dir, monkeypatch):
    registry = load_registry(write_registry(tmp_path, tiny_registry(tmp_path, tiny_backbone_dir)))
    from hub.methods import PeftTraining

    captured = {}
    original = PeftTraining.wrap

    def spy(self, model, options):
        captured["model"] = model
        captured["before"] = {k: v.clone() for k, v in model.state_dict().items()}
        return original(self, model, options)

    monkeypatch.setattr(PeftTraining, "wrap", spy)
    report = train_task(registry, "sentiment", progress=False)
    after = captured["model"].state_dict()
    base_keys = [k for k in after if "lora_" not in k]
    assert {k.replace(".base_layer", "") for k in base_keys} == set(captured["before"])
    for key in base_keys:
        assert torch.equal(after[key], captured["before"][key.replace(".base_layer", "")]), key
    lora_b = [v for k, v in after.items() if "lora_B" in k]
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b)  # LoRA B starts at zero: training moved it
    assert 0 < report["trainable_share"] < 0.5


def test_report_card_and_folder(trained_registry):
    folder = trained_registry.parent / "adapters" / "paraphrase"
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md", "adapter_config.json", "adapter_model.safetensors", "head.safetensors", "head_config.json"]
    card = (folder / "README.md").read_text()
    assert "library_name: peft" in card and "base_model: tests/tiny-bert" in card
    assert "hub train paraphrase" in card and "trainable parameters" in card
    metrics = card_metrics(folder)
    assert set(metrics) == {"f1", "accuracy"}
    assert all(0.0 <= v <= 1.0 for v in metrics.values())


def test_card_metrics_equal_what_serving_measures(trained_registry):
    from hub.data import load_split
    from hub.evaluation import evaluate_task

    loaded = hub.Hub.load(trained_registry)
    for task in ("sentiment", "similarity"):
        dev = load_split(loaded.registry, loaded.registry.task(task), "dev")
        measured = evaluate_task(loaded, task, dev, progress=False)
        recorded = card_metrics(loaded.registry.adapter_dir(loaded.registry.task(task)))
        for name, value in measured.items():
            assert recorded[name] == pytest.approx(value, abs=1e-4), (task, name)


def test_refuses_to_write_a_broken_folder(tmp_path, tiny_backbone_dir, monkeypatch):
    registry = load_registry(write_registry(tmp_path, tiny_registry(tmp_path, tiny_backbone_dir)))
    import hub.training as training

    def broken_save(self, folder, dtype=None):
        raise OSError("disk full while writing the head")

    monkeypatch.setattr(training.kind("classification").head, "save", broken_save)
    target = tmp_path / "adapters" / "sentiment"
    with pytest.raises(OSError, match="disk full"):
        train_task(registry, "sentiment", progress=False)
    assert not target.exists()
    assert not [p for p in (tmp_path / "adapters").iterdir()]  # no staging folder left


def test_bad_training_options_and_missing_data(tmp_path, tiny_backbone_dir):
    document = tiny_registry(tmp_path, tiny_backbone_dir)
    del document["tasks"][0]["data"]
    registry = load_registry(write_registry(tmp_path, document))
    with pytest.raises(HubError, match="unknown training option"):
        train_task(registry, "paraphrase", progress=False, epoch=3)
    with pytest.raises(HubError, match=r"invalid training option\(s\): epochs=0.0: input should be greater than 0"):
        train_task(registry, "paraphrase", progress=False, epochs=0.0, output=tmp_path / "never")
    with pytest.raises(HubError, match=r"lora.r=0"):
        train_task(registry, "paraphrase", progress=False, lora={"r": 0}, output=tmp_path / "never")
    assert not (tmp_path / "never").exists()
    with pytest.raises(HubError, match="no 'data' section"):
        train_task(registry, "sentiment", progress=False)


def test_a_storage_the_method_cannot_write_is_refused_before_training(tmp_path, tiny_backbone_dir):
    registry = load_registry(write_registry(tmp_path, tiny_registry(tmp_path, tiny_backbone_dir)))
    with pytest.raises(HubError, match="storage.adapter 'int8' is not how ia3 adapters are stored; use one of: "
                                       "float32, float16, bfloat16"):
        train_task(registry, "sentiment", progress=False, adapter={"method": "ia3"}, storage={"adapter": "int8"},
                   output=tmp_path / "never")
    assert not (tmp_path / "never").exists()
    document = tiny_registry(tmp_path, tiny_backbone_dir)
    document["tasks"][0]["train"] = {"adapter": {"method": "vera"}, "storage": {"adapter": "int8"}}
    with pytest.raises(HubError, match="is not how vera adapters are stored"):
        load_registry(write_registry(tmp_path, document))
    for adapter, storage, message in (({"method": "vera", "r": 8}, {"rank": 4}, "vera adapters have no rank to reduce"),
                                      ({"method": "lora", "r": 4}, {"rank": 4}, "storage.rank 4 is not below the "
                                                                                "trained rank r=4")):
        document["tasks"][0]["train"] = {"adapter": adapter, "storage": storage}
        with pytest.raises(HubError, match=message):
            load_registry(write_registry(tmp_path, document))


def test_dropped_rows_are_reported_and_carded(tmp_path, tiny_backbone_dir, capsys):
    """Rows a data section drops (here: unlabelled '-' rows, the NLI convention) are counted in the report, printed
    by `hub train` and written to the card, for train and dev alike."""
    import json

    document = tiny_registry(tmp_path, tiny_backbone_dir)
    data = tmp_path / "data"
    for split, extra in (("train", 5), ("dev", 3)):
        path = data / f"sent_{split}.jsonl"
        lines = path.read_text().splitlines() + [json.dumps({"text": "no label", "label": "-"})] * extra
        path.write_text("\n".join(lines) + "\n")
    sentiment = next(t for t in document["tasks"] if t["name"] == "sentiment")
    sentiment["data"]["label_values"] = {"-": None}
    registry = load_registry(write_registry(tmp_path, document))
    report = train_task(registry, "sentiment", progress=False, output=tmp_path / "out")
    assert report["train_dropped"] == {"label '-'": 5} and report["eval_dropped"] == {"label '-'": 3}
    assert report["train_examples"] == 96 and report["eval_examples"] == 40
    printed = capsys.readouterr().out
    assert "5 rows dropped (label '-': 5)" in printed and "dev: 3 rows dropped" in printed
    card = (tmp_path / "out" / "README.md").read_text()
    assert "- train file: 5 rows dropped (label '-': 5)" in card
    assert "- dev file: 3 rows dropped (label '-': 3)" in card
    from hub.card import card_report

    assert card_report(tmp_path / "out")["train_dropped"] == {"label '-'": 5}  # kept for refreshed cards


def test_training_refuses_tokens_serving_never_produces(tmp_path, tiny_backbone_dir):
    """A character-split task (head.words: chars) whose token column carries a position digit ('g1'): training would
    learn tokens it is never served, so it stops and names data.token_pattern; with the pattern it trains."""
    from hub.errors import DataError

    document = tiny_registry(tmp_path, tiny_backbone_dir)
    lines = ["g1 B-GOOD", "o2 I-GOOD", "o3 I-GOOD", "d4 I-GOOD", "x1 O", ""] * 20
    (tmp_path / "data" / "chars.conll").write_text("\n".join(lines) + "\n")
    entities = next(t for t in document["tasks"] if t["name"] == "entities")
    entities["head"] = {**entities["head"], "words": "chars"}
    entities["data"] = {"format": "conll", "train": "data/chars.conll", "dev": "data/chars.conll"}
    entities["train"] = {**entities["train"], "epochs": 1}
    registry = load_registry(write_registry(tmp_path, document))
    with pytest.raises(DataError, match=r"100%\) are longer than one character \(e.g. 'g1'.*data.token_pattern"):
        train_task(registry, "entities", progress=False, output=tmp_path / "never")
    assert not (tmp_path / "never").exists()
    entities["data"]["token_pattern"] = "^(.)"
    registry = load_registry(write_registry(tmp_path, document))
    report = train_task(registry, "entities", progress=False, output=tmp_path / "chars")
    assert report["train_examples"] == 20 and (tmp_path / "chars" / "head.safetensors").is_file()


def test_a_time_budget_stops_training_and_still_writes_a_valid_folder(tmp_path, tiny_backbone_dir, capsys):
    """`train.max_train_seconds` (`hub train --max-train-seconds`): training stops at the budget, the folder is
    evaluated and written as usual, and the report and the card say after how many of the planned steps."""
    registry = load_registry(write_registry(tmp_path, tiny_registry(tmp_path, tiny_backbone_dir)))
    report = train_task(registry, "sentiment", progress=False, max_train_seconds=1e-6, epochs=3,
                        output=tmp_path / "budget")
    assert report["stopped_by_time_budget"] == 1e-6 and report["train_steps"] == 1 and report["planned_steps"] == 18
    assert set(report["metrics"]) == {"accuracy"} and (tmp_path / "budget" / "adapter_model.safetensors").is_file()
    assert "stopped at the time budget (1e-06 s) after 1 of 18 steps" in capsys.readouterr().out
    assert "- stopped at its time budget (1e-06 s) after 1 of 18 steps" in (tmp_path / "budget" / "README.md").read_text()
    full = train_task(registry, "sentiment", progress=False, epochs=1, output=tmp_path / "full")
    assert full["train_steps"] == full["planned_steps"] == 6 and "stopped_by_time_budget" not in full
    assert full["estimated_seconds"] >= 0  # measured over the first 5 steps (a tiny task may round to 0.0 s)


def test_the_training_clock_estimates_from_its_first_steps():
    from types import SimpleNamespace

    from hub.training_clock import TrainingClock

    clock = TrainingClock("t", planned_steps=100, budget_seconds=None, progress=False)
    control = SimpleNamespace(should_training_stop=False)
    for step in range(1, 6):
        clock.on_step_end(None, SimpleNamespace(global_step=step), control)
    assert clock.estimated_seconds is not None and clock.estimated_seconds >= 0 and not control.should_training_stop
    assert clock.report() == {"train_steps": 5, "planned_steps": 100, "estimated_seconds": round(clock.estimated_seconds, 1)}


def test_the_training_bar_shows_the_estimate_and_the_budget(tmp_path, tiny_backbone_dir, capsys):
    """With progress on, transformers' training bar carries the clock's estimate of the whole run and the budget."""
    registry = load_registry(write_registry(tmp_path, tiny_registry(tmp_path, tiny_backbone_dir)))
    train_task(registry, "sentiment", progress=True, epochs=1, max_train_seconds=900, output=tmp_path / "bar")
    captured = capsys.readouterr()
    bar = [line for line in captured.err.replace("\r", "\n").splitlines() if "6/6" in line]
    assert bar and re.search(r"whole run ≈ \d+ s, budget 900 s", bar[-1]), captured.err[-2000:]
    assert re.search(r"\[sentiment\] about \d+ s for 6 steps", captured.out + captured.err)


def test_training_refuses_word_tokens_the_vocabulary_cannot_read(tmp_path, tiny_backbone_dir):
    """Split into words, tokens the backbone reads only as its unknown token (here a script its vocabulary lacks)."""
    from hub.errors import DataError

    document = tiny_registry(tmp_path, tiny_backbone_dir)
    lines = ["ДОБРО B-GOOD", "ФИЛЬМ O", "good O", ""] * 20
    (tmp_path / "data" / "cyrillic.conll").write_text("\n".join(lines) + "\n", encoding="utf-8")
    entities = next(t for t in document["tasks"] if t["name"] == "entities")
    entities["data"] = {"format": "conll", "train": "data/cyrillic.conll", "dev": "data/cyrillic.conll"}
    registry = load_registry(write_registry(tmp_path, document))
    with pytest.raises(DataError, match=r"40 of 60 training tokens \(67%\) are unknown to the backbone's vocabulary"):
        train_task(registry, "entities", progress=False, output=tmp_path / "never")
