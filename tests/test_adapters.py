"""Adapter folders: atomic writes, safetensors only, checked against the backbone before use."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file, save_file
from transformers import AutoModel

import hub
from hub.adapter_folder import AdapterFolder
from hub.atomic import atomic_file, atomic_folder
from hub.backbone import load_backbone
from hub.errors import AdapterError


def _copy_task(trained_registry, tmp_path, task="sentiment"):
    folder = tmp_path / task
    shutil.copytree(trained_registry.parent / "adapters" / task, folder)
    return folder


def _check(trained_registry, folder):
    """Everything serving checks of a folder copied from the trained task `sentiment`."""
    registry = hub.Hub.load(trained_registry).registry
    AdapterFolder(folder).load(registry.task("sentiment"), _backbone(trained_registry), "tests/tiny-bert")


def _backbone(trained_registry):
    registry = hub.Hub.load(trained_registry).registry
    return load_backbone(registry.backbones[0], registry)


def test_atomic_write_survives_an_exception_mid_write(tmp_path):
    target = tmp_path / "adapter"
    target.mkdir()
    (target / "weights").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_folder(target) as staging:
            (staging / "weights").write_text("new, half written")
            raise RuntimeError("disk full")
    assert (target / "weights").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]  # no staging folder left behind
    with atomic_folder(target) as staging:
        (staging / "weights").write_text("new")
    assert (target / "weights").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]


def test_folder_is_plain_peft_readable(trained_registry, tiny_backbone_dir):
    folder = trained_registry.parent / "adapters" / "sentiment"
    model = PeftModel.from_pretrained(AutoModel.from_pretrained(tiny_backbone_dir), str(folder))
    assert any("lora_A" in name for name, _ in model.named_parameters())
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "tests/tiny-bert"


def test_refuses_pickled_weights(trained_registry, tmp_path):
    folder = _copy_task(trained_registry, tmp_path)
    (folder / "adapter_model.safetensors").rename(folder / "adapter_model.bin")
    with pytest.raises(AdapterError, match="only safetensors are read"):
        _check(trained_registry, folder)


def test_refuses_adapter_of_another_base_model(trained_registry, tmp_path):
    folder = _copy_task(trained_registry, tmp_path)
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": "bert-base-uncased"}))
    with pytest.raises(AdapterError, match="trained on 'bert-base-uncased'"):
        _check(trained_registry, folder)


def test_refuses_wrong_shapes_and_corrupt_weights(trained_registry, tmp_path):
    folder = _copy_task(trained_registry, tmp_path)
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, "r": 16}))
    with pytest.raises(AdapterError, match="has shape"):
        _check(trained_registry, folder)
    (folder / "adapter_config.json").write_text(json.dumps(config))
    (folder / "adapter_model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(AdapterError, match="not a readable safetensors"):
        _check(trained_registry, folder)


def test_broken_adapter_gives_clear_error_and_hub_keeps_serving(trained_registry, tmp_path):
    document_path = tmp_path / "registry.yaml"
    text = trained_registry.read_text().replace("name: paraphrase", "name: paraphrase\n  adapter: broken")
    document_path.write_text(text)
    broken = _copy_task(trained_registry, tmp_path, "paraphrase")
    broken.rename(tmp_path / "broken")
    (tmp_path / "broken" / "adapter_model.safetensors").write_bytes(b"garbage")
    shutil.copytree(trained_registry.parent / "adapters", tmp_path / "adapters", dirs_exist_ok=True)
    shutil.copytree(trained_registry.parent / "data", tmp_path / "data")
    loaded = hub.Hub.load(document_path)
    with pytest.raises(AdapterError, match="safetensors"):
        loaded.run("paraphrase", ("the movie", "the book"))
    assert loaded.run("sentiment", "good movie")["label"] in {"negative", "positive"}


def test_atomic_file_replaces_whole_or_not_at_all(tmp_path):
    import os

    target = tmp_path / "registry.yaml"
    target.write_text("old\n")
    with pytest.raises(RuntimeError):
        with atomic_file(target) as staging:
            staging.write_text("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["registry.yaml"]
    with atomic_file(target) as staging:
        staging.write_text("new\n")
    umask = os.umask(0)
    os.umask(umask)
    assert target.read_text() == "new\n" and target.stat().st_mode & 0o777 == 0o666 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["registry.yaml"]


@pytest.mark.parametrize("file", ["head.safetensors", "adapter_model.safetensors"])
def test_nan_or_inf_weights_are_refused_never_served(trained_registry, tmp_path, file):
    folder = _copy_task(trained_registry, tmp_path)
    weights = load_file(str(folder / file))
    key = sorted(weights)[-1]
    weights[key].view(-1)[:2] = torch.tensor([float("nan"), float("inf")])
    save_file(weights, str(folder / file))
    registry = hub.Hub.load(trained_registry).registry
    task = registry.task("sentiment").model_copy(update={"adapter": str(folder)})
    poisoned = hub.Hub(registry.model_copy(update={"tasks": [task]}), share_backbones=False)
    fix = "retrain the task with `hub train sentiment`" if file == "head.safetensors" else "retrain or re-download the adapter"
    message = f"{folder / file}: tensor {key} holds 2 NaN/inf values; {fix}."
    with pytest.raises(AdapterError, match=re.escape(message)):
        poisoned.run("sentiment", "good movie")
