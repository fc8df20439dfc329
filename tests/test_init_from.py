"""`train.init_from`: a task adapter that starts from a domain adapter `hub pretrain` wrote (hub/pretraining/start.py):
the fresh adapter holds the domain weights before its first step; one of another shape or backbone is refused."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from hub.errors import HubError
from hub.pretraining.train import PretrainRecipe, pretrain
from hub.registry import load_registry
from hub.training import _build_model, _recipe, train_task

from conftest import FILLER, tiny_registry, write_registry

TEXTS = [" ".join(FILLER[i % 10:] + FILLER[:i % 10]) for i in range(40)]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_backbone_dir):
    folder = tmp_path_factory.mktemp("init_from")
    registry = load_registry(write_registry(folder, tiny_registry(folder, tiny_backbone_dir)))
    adapter = {"method": "lora", "r": 4, "target_modules": ["query", "value"]}  # the sentiment recipe's
    pretrain(registry, "tiny", TEXTS, folder / "domain", PretrainRecipe(adapter=adapter, max_length=24), progress=False)
    pretrain(registry, "tiny", TEXTS, folder / "domain_r2", PretrainRecipe(adapter={**adapter, "r": 2}, max_length=24),
             progress=False)
    return folder, registry


def test_the_task_adapter_starts_from_the_domain_weights(setup):
    folder, registry = setup
    task = registry.task("sentiment")
    domain = load_file(str(folder / "domain" / "adapter_model.safetensors"))
    model, _ = _build_model(registry, task, _recipe(task, {"init_from": str(folder / "domain")}))
    started = {name: p for name, p in model.encoder.named_parameters() if "lora_" in name}
    assert len(started) == len(domain) > 0
    for name, tensor in domain.items():
        ours = next(p for n, p in started.items() if n.replace(".default", "").endswith(name.split("base_model.")[-1]))
        assert torch.equal(ours.detach(), tensor), name
    fresh, _ = _build_model(registry, task, _recipe(task, {}))
    fresh_b = [p for n, p in fresh.encoder.named_parameters() if "lora_B" in n]
    assert all(not p.any() for p in fresh_b)  # LoRA's B starts at zero: without init_from nothing was copied
    report = train_task(registry, "sentiment", output=folder / "tapt", progress=False, init_from=str(folder / "domain"))
    assert report["train"]["init_from"] == str(folder / "domain")


@pytest.mark.parametrize("domain, message", [
    ("domain_r2", r"differs from the task's recipe \(r: 2 vs 4"),
    ("missing", "not a readable adapter folder"),
])
def test_a_domain_adapter_that_does_not_fit_is_refused(setup, domain, message):
    folder, registry = setup
    task = registry.task("sentiment")
    with pytest.raises(HubError, match=message):
        _build_model(registry, task, _recipe(task, {"init_from": str(folder / domain)}))
