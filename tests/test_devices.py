"""Devices: a Hub serves on the device it is given; a device this PyTorch cannot use fails at once, clearly.

The GPU tests run where PyTorch sees CUDA (the project's lent GPU machine) and skip elsewhere.
"""

from __future__ import annotations

import random

import pytest
import torch
from typer.testing import CliRunner

import hub
from hub.cli import app
from hub.devices import resolve_device

from conftest import assert_same_result, random_request

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (PyTorch sees none here)")


def test_default_and_auto_devices():
    assert resolve_device(None) == torch.device("cpu") == resolve_device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("name, message", [("gpu0", "is not a device"), ("meta", "not 'meta'")])
def test_unknown_device_names_the_choices(name, message):
    with pytest.raises(hub.HubError, match=message) as caught:
        resolve_device(name)
    assert "'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'" in str(caught.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_cuda_without_a_gpu_fails_before_loading_anything(trained_registry):
    with pytest.raises(hub.HubError, match="sees no CUDA GPU"):
        hub.Hub.load(trained_registry, device="cuda")
    result = CliRunner().invoke(app, ["run", "sentiment", "good", "--registry", str(trained_registry), "--device", "cuda"])
    assert result.exit_code == 2 and "sees no CUDA GPU" in result.output and "Traceback" not in result.output


def test_cpu_hub_keeps_everything_on_the_cpu(trained_registry):
    served = hub.Hub.load(trained_registry, device="cpu")
    runtime = served.runtime("entities")
    assert served.device == runtime.backbone.device == runtime.adapter.buffer.device == torch.device("cpu")


@needs_cuda
def test_gpu_index_out_of_range_is_named():
    with pytest.raises(hub.HubError, match="numbered from 0"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")


@needs_cuda
@pytest.mark.parametrize("seed", [0, 1])
def test_gpu_hub_answers_like_the_cpu_hub(trained_registry, seed):
    """Every task kind, mixed in one call: backbone, adapters and heads on the GPU give the CPU's answers."""
    on_cpu, on_gpu = hub.Hub.load(trained_registry), hub.Hub.load(trained_registry, device="cuda")
    rng = random.Random(seed)
    requests = [random_request(rng) for _ in range(40)]
    for cpu_answer, gpu_answer in zip(on_cpu.run_many(requests), on_gpu.run_many(requests)):
        assert_same_result(cpu_answer, gpu_answer)
    runtime = on_gpu.runtime("entities")
    assert runtime.backbone is not on_cpu.runtime("entities").backbone  # one shared backbone per device
    assert {runtime.backbone.device.type, runtime.adapter.buffer.device.type} == {"cuda"}
    assert all(p.device.type == "cuda" for p in runtime.head.parameters())
