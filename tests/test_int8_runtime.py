"""The int8 backbone runtime (`dtype="int8"`, hub/int8.py): int8 weights per output channel times int8 activations
per token, multiplied in integers. What it promises: close to the float32 layer, a row's result independent of the
other rows of its batch (per-token scales, exact integer products), adapters served on it per row as on float32,
and a clear refusal off the CPU."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import hub
from hub.devices import dtype_name, resolve_dtype
from hub.errors import HubError
from hub.int8 import Int8Linear, quantize_linear_layers

from test_kind_conformance import CASES


def _linear(inputs: int = 96, outputs: int = 160, bias: bool = True) -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(inputs, outputs, bias=bias)


@pytest.mark.parametrize("bias", [True, False])
def test_an_int8_layer_is_close_to_its_float32_layer(bias):
    linear = _linear(bias=bias)
    layer = Int8Linear(linear)
    inputs = torch.randn(3, 11, 96) * torch.logspace(-3, 2, 11).unsqueeze(1)  # tokens of very different norms
    with torch.inference_mode():
        expected, found = linear(inputs), layer(inputs)
    assert found.shape == expected.shape == (3, 11, 160) and found.dtype == torch.float32
    cosine = nn.functional.cosine_similarity(found, expected, dim=-1)
    assert cosine.min() > 0.999  # each token at its own scale: the small ones are not rounded away
    assert (layer.weight - linear.weight).abs().max() <= linear.weight.abs().amax(1).max() / 254 + 1e-7
    assert layer.weight_t.dtype == torch.int8 and layer.weight_t.numel() == linear.weight.numel()


def test_a_row_of_an_int8_layer_does_not_depend_on_its_batch():
    layer = Int8Linear(_linear())
    rows = torch.randn(9, 7, 96)
    rows[4] *= 1000  # a loud neighbour would set a per-batch scale
    with torch.inference_mode():
        together = layer(rows)
        for i in range(len(rows)):
            assert torch.equal(layer(rows[i : i + 1]), together[i : i + 1])


def test_a_zero_token_gives_the_bias_and_a_single_token_works():
    linear = _linear()
    layer = Int8Linear(linear)
    with torch.inference_mode():
        assert torch.equal(layer(torch.zeros(1, 96)), linear.bias.detach().unsqueeze(0))
        assert layer(torch.randn(96)).shape == (160,)


def test_quantizing_a_model_replaces_every_linear_layer_once():
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Sequential(nn.Linear(16, 4)))
    assert quantize_linear_layers(model) == 2
    assert all(isinstance(m, Int8Linear) for m in (model[0], model[2][0]))
    assert quantize_linear_layers(model) == 0  # already int8


def test_int8_is_a_cpu_dtype():
    assert resolve_dtype("int8", torch.device("cpu")) == torch.int8 and dtype_name(torch.int8) == "int8"
    for device in ("cuda", "mps"):
        with pytest.raises(HubError, match="'int8' is the CPU runtime.*use 'bfloat16' or 'float16'"):
            resolve_dtype("int8", torch.device(device))


@pytest.fixture(scope="module")
def int8_hub(trained_registry):
    return hub.Hub.load(trained_registry, dtype="int8")


def test_an_int8_hub_quantizes_its_backbone_and_keeps_adapters_and_heads_float32(int8_hub):
    runtime = int8_hub.runtime(CASES["classification"][0])
    layers = [m for m in runtime.backbone.model.modules() if isinstance(m, nn.Linear)]
    assert layers and all(isinstance(m, Int8Linear) for m in layers)
    assert runtime.backbone.dtype == torch.float32 and int8_hub.dtype == torch.int8


def _answer(result: object) -> object:
    """An answer without its scores and values (labels, tags, spans: what must not change)."""
    if isinstance(result, dict):
        return {k: _answer(v) for k, v in result.items() if k not in ("score", "value")}
    return [_answer(v) for v in result] if isinstance(result, list) else result


def _numbers(result: object) -> list[float]:
    """Every score and value of an answer, in order."""
    if isinstance(result, dict):
        own = [float(result[k]) for k in ("score", "value") if k in result]
        return own + [n for k, v in result.items() if k not in ("score", "value") for n in _numbers(v)]
    return [n for v in result for n in _numbers(v)] if isinstance(result, list) else []


def assert_mixed_as_alone_and_near(served: hub.Hub, reference: hub.Hub, near: float) -> None:
    """Rows of every kind in one pass of `served`: the same labels, tags and spans as each request alone (scores
    within 0.02: padding moves float32 results by ~1e-6, which can flip one int8 rounding); most answers as
    `reference` gives them (the tiny model's borderline answers may flip), their numbers within `near`."""
    requests = [(task, value) for task, values in CASES.values() for value in values]
    together = served.run_many(requests)
    for request, result in zip(requests, together):
        alone = served.run_many([request])[0]
        assert _answer(result) == _answer(alone)
        assert _numbers(result) == pytest.approx(_numbers(alone), abs=0.02)
    same = [(result, expected) for result, expected in zip(together, reference.run_many(requests))
            if _answer(result) == _answer(expected)]
    assert len(same) >= 0.8 * len(requests)
    for result, expected in same:
        assert _numbers(result) == pytest.approx(_numbers(expected), abs=near)


def test_every_kind_on_int8_answers_in_a_mixed_batch_as_alone_and_near_float32(int8_hub, tiny_hub):
    assert_mixed_as_alone_and_near(int8_hub, tiny_hub, near=0.1)


def test_the_command_line_serves_int8(trained_registry):
    from typer.testing import CliRunner

    from hub.cli import app

    result = CliRunner().invoke(app, ["run", "sentiment", "good movie", "--registry", str(trained_registry),
                                      "--dtype", "int8"])
    assert result.exit_code == 0 and '"label"' in result.output and "Traceback" not in result.output


def test_gradients_pass_straight_through_an_int8_layer():
    """Training with the int8 backbone in the loop: the input's gradient is the float product's with the dequantized
    weight (the rounding passed straight through); inference keeps the integer path."""
    linear = _linear()
    layer = Int8Linear(linear)
    inputs = torch.randn(2, 5, 96, requires_grad=True)
    upstream = torch.randn(2, 5, 160)
    (layer(inputs) * upstream).sum().backward()
    reference = inputs.detach().clone().requires_grad_(True)
    (nn.functional.linear(reference, layer.weight, layer.bias) * upstream).sum().backward()
    assert inputs.grad is not None and torch.allclose(inputs.grad, reference.grad, atol=1e-6)
    with torch.no_grad():
        assert torch.equal(layer(inputs), layer.integer_forward(inputs))


def test_an_adapter_trained_with_the_int8_backbone_is_validated_in_it(tiny_backbone_dir, tmp_path, monkeypatch):
    """`train.runtime: int8`: the adapter trains through the int8 layers (straight-through gradients reach every LoRA
    matrix), the card says which runtime it is for, and its metrics are what the int8 hub measures; `hub quantize`
    measures it there again. Full fine-tuning has no float weights to train in int8: refused before any work."""
    from hub.card import card_metrics, trained_runtime
    from hub.data import load_split
    from hub.evaluation import evaluate_task
    from hub.quantize import quantize_task
    from hub.registry import load_registry
    from hub.training import fit_task, train_task
    from conftest import tiny_registry, write_registry

    registry = load_registry(write_registry(tmp_path, tiny_registry(tmp_path, tiny_backbone_dir)))
    from hub.methods import PeftTraining

    wrapped = {}
    original = PeftTraining.wrap
    monkeypatch.setattr(PeftTraining, "wrap", lambda self, model, options: wrapped.setdefault(
        "model", original(self, model, options)))
    train_task(registry, "sentiment", progress=False, runtime="int8")
    bases = [m for m in wrapped["model"].modules() if isinstance(m, Int8Linear)]
    assert bases  # PEFT wrapped the int8 layers themselves
    lora_b = [p for name, p in wrapped["model"].named_parameters() if "lora_B" in name]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)  # every B moved: gradients reached every layer

    folder = registry.adapter_dir(registry.task("sentiment"))
    assert trained_runtime(folder) == "int8"
    listed = {t["task"]: t for t in hub.Hub(registry).tasks()}
    assert listed["sentiment"]["runtime"] == "int8" and listed["similarity"].get("runtime") in (None, "float32")
    assert "serve it with `--dtype int8`" in (folder / "README.md").read_text()
    dev = load_split(registry, registry.task("sentiment"), "dev")
    on_int8 = evaluate_task(hub.Hub(registry, share_backbones=False, dtype="int8"), "sentiment", dev, progress=False)
    assert card_metrics(folder) == pytest.approx(on_int8, abs=1e-4)

    served_in, hub_class = [], hub.service.Hub
    monkeypatch.setattr("hub.service.Hub", lambda *args, **kwargs: served_in.append(kwargs.get("dtype")) or hub_class(
        *args, **kwargs))
    assert quantize_task(registry, "sentiment", "int8", progress=False)["metrics"] is not None
    assert served_in == ["int8"] and trained_runtime(folder) == "int8"
    with pytest.raises(HubError, match="full fine-tuning.*runtime float32"):
        fit_task(registry, "sentiment", "full", progress=False, runtime="int8")
    with pytest.raises(HubError, match="runtime='int4'"):
        train_task(registry, "sentiment", progress=False, runtime="int4")
