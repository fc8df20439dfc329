"""Devices and precision: a Hub serves on the device and in the dtype it is given; one this PyTorch cannot
use fails at once, clearly.

The GPU tests run where PyTorch sees CUDA (the project's lent GPU machine) and skip elsewhere.
"""

from __future__ import annotations

import random

import pytest
import torch
from typer.testing import CliRunner

import hub
from hub.cli import app
from hub.devices import resolve_device, resolve_dtype

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


@pytest.mark.parametrize("name, dtype", [(None, torch.float32), ("float32", torch.float32), ("bf16", torch.bfloat16),
                                         ("BFloat16", torch.bfloat16), ("torch.float16", torch.float16), (torch.bfloat16, torch.bfloat16)])
def test_dtype_names(name, dtype):
    assert resolve_dtype(name, torch.device("cpu")) == dtype


@pytest.mark.parametrize("name", ["int4", "float64", torch.int32, "half-ish"])
def test_unknown_dtype_names_the_choices(name):
    with pytest.raises(hub.HubError, match="the hub serves in 'float32' \\(default\\), 'bfloat16', 'float16'.*'int8'"):
        resolve_dtype(name, torch.device("cpu"))


def test_bad_dtype_on_the_command_line_is_one_clear_line(trained_registry):
    result = CliRunner().invoke(app, ["run", "sentiment", "good", "--registry", str(trained_registry), "--dtype", "int4"])
    assert result.exit_code == 2 and "dtype 'int4'" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("name, dtype", [("bf16", torch.bfloat16), ("float16", torch.float16)])
def test_half_precision_hub_serves_every_task_kind_close_to_float32(trained_registry, name, dtype):
    """Backbone and adapters in half precision, heads in float32: a float32 Hub's answers, within that precision."""
    full, half = hub.Hub.load(trained_registry), hub.Hub.load(trained_registry, dtype=name)
    runtime = half.runtime("entities")
    assert runtime.backbone.dtype == runtime.adapter.buffer.dtype == dtype == half.dtype
    assert runtime.backbone is not full.runtime("entities").backbone  # one shared backbone per dtype
    assert all(p.dtype == torch.float32 for p in runtime.head.parameters())
    rng = random.Random(0)
    requests = [random_request(rng) for _ in range(60)]
    same = 0
    for a, b in zip(full.run_many(requests), half.run_many(requests)):
        assert a.keys() == b.keys() and a["task"] == b["task"]
        if "value" in a:
            assert b["value"] == pytest.approx(a["value"], abs=0.05)
        if "score" in a:
            assert b["score"] == pytest.approx(a["score"], abs=0.05)
        same += all(a.get(k) == b.get(k) for k in ("label", "tags", "answer", "start", "end"))
    assert same >= 0.9 * len(requests)
    result = CliRunner().invoke(app, ["run", "sentiment", "good", "--registry", str(trained_registry), "--dtype", name])
    assert result.exit_code == 0 and '"task": "sentiment"' in result.output


@needs_cuda
def test_gpu_half_precision_hub_answers_close_to_float32(trained_registry):
    full = hub.Hub.load(trained_registry, device="cuda")
    for dtype in ("float16", *(("bfloat16",) if torch.cuda.is_bf16_supported() else ())):
        half = hub.Hub.load(trained_registry, device="cuda", dtype=dtype)
        runtime = half.runtime("entities")
        assert runtime.backbone.dtype == runtime.adapter.buffer.dtype == getattr(torch, dtype)
        assert runtime.backbone.device.type == "cuda"
        rng = random.Random(1)
        requests = [random_request(rng) for _ in range(30)]
        answers = list(zip(full.run_many(requests), half.run_many(requests)))
        assert sum(a.get("label") == b.get("label") and a.get("tags") == b.get("tags") for a, b in answers) >= 0.9 * len(answers)
