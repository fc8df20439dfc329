"""`hub train TASK --processes N` (hub/distributed.py): two CPU processes (gloo) train the tiny task with the
recipe's global batch, only the main process evaluates and writes the folder, and the result matches one process
within seed noise."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import needs_shared_data

from hub.distributed import per_process_batch, without_option
from hub.errors import HubError


def test_the_launched_processes_do_not_launch_again():
    assert without_option(["train", "t", "--processes", "2", "--seed", "1"], "--processes") == ["train", "t",
                                                                                              "--seed", "1"]
    assert without_option(["train", "--processes=3", "t"], "--processes") == ["train", "t"]


def test_the_recipe_batch_splits_over_the_processes(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert per_process_batch(16) == 8
    with pytest.raises(HubError, match="batch_size 15 does not split over 2 processes"):
        per_process_batch(15)
    monkeypatch.delenv("WORLD_SIZE")
    assert per_process_batch(15) == 15


def _train_task(registry: Path, task: str, output: Path, *extra: str) -> dict:
    """`hub train TASK` in a subprocess; the card's metrics and report."""
    from hub.card import card_metrics, card_report

    environment = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "hub", "train", task, "--registry", str(registry), "--output",
                           str(output), *extra], capture_output=True, text=True, env=environment, timeout=3600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return {"metrics": card_metrics(output), **card_report(output)}


def _train(registry: Path, output: Path, *extra: str) -> dict:
    return _train_task(registry, "entities", output, "--epochs", "2", *extra)


def test_two_processes_train_like_one(trained_registry, tmp_path):
    one = _train(trained_registry, tmp_path / "one")
    two = _train(trained_registry, tmp_path / "two", "--processes", "2")
    assert two["processes"] == 2 and "processes" not in one
    assert two["train_steps"] == one["train_steps"]  # the recipe's global batch: the same optimizer steps
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())
    assert not list(tmp_path.glob(".*"))  # no staging folder left behind by a second writer
    assert abs(two["metrics"]["f1"] - one["metrics"]["f1"]) < 0.2, (one["metrics"], two["metrics"])


@pytest.mark.slow
@needs_shared_data
@pytest.mark.skipif(os.environ.get("HUB_SLOW_TESTS") != "1", reason="a real task trained twice (minutes): set "
                                                                      "HUB_SLOW_TESTS=1 to run it")
def test_two_processes_train_sst2_like_one(tmp_path):
    """SST-2, 2,000 training examples, 1 epoch, 872 dev sentences: two processes reach one process's accuracy."""
    import hub as hub_package

    registry = hub_package.default_registry_path()
    one = _train_task(registry, "sst2", tmp_path / "one", "--max-train-examples", "2000", "--epochs", "1")
    two = _train_task(registry, "sst2", tmp_path / "two", "--max-train-examples", "2000", "--epochs", "1",
                      "--processes", "2")
    print(f"sst2: one process {one['metrics']['accuracy']:.4f} in {one['train_seconds']} s, two processes "
          f"{two['metrics']['accuracy']:.4f} in {two['train_seconds']} s ({one['train_steps']} steps each)")
    assert two["train_steps"] == one["train_steps"]
    assert abs(two["metrics"]["accuracy"] - one["metrics"]["accuracy"]) < 0.03, (one["metrics"], two["metrics"])
