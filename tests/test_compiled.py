"""Backbones through torch.compile (`Hub(compile=True)`, `--compile`, hub/compiled.py): every adapter method and kind
answers as the eager hub does, a new mix of tasks compiles nothing new (the per-row hooks are graph breaks, not
traced), the int8 runtime keeps rows independent of their batch, and a machine that cannot compile is told why."""

from __future__ import annotations

import random
import shutil

import pytest
import torch
from torch._dynamo.utils import counters

import hub
from hub.errors import BackboneError

from conftest import METHOD_TASKS, assert_same_result, random_request
from test_int8_runtime import assert_mixed_as_alone_and_near


needs_compiler = pytest.mark.skipif(not (shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")),
                                    reason="torch.compile on the CPU needs a C++ compiler (gcc or clang); none on PATH")


def _mix(seed: int, count: int = 50) -> list:
    """`count` random requests over every task of the methods registry (so every adapter method is in the pass)."""
    rng = random.Random(seed)
    requests = [random_request(rng) for _ in range(count)]
    assert {task for task, _ in requests} == set(METHOD_TASKS)
    return requests


@pytest.fixture(scope="module")
def compiled_methods_hub(methods_registry):
    return hub.Hub.load(methods_registry, compile=True)


@needs_compiler
def test_a_compiled_hub_answers_every_method_and_kind_as_the_eager_hub(compiled_methods_hub, methods_registry):
    eager = hub.Hub.load(methods_registry)
    requests = _mix(0)
    compiled = compiled_methods_hub.run_many(requests)
    assert compiled_methods_hub.runtime("sentiment").backbone.compiled is not None
    assert eager.runtime("sentiment").backbone.compiled is None  # a backbone of its own: compile is part of the key
    for a, b in zip(compiled, eager.run_many(requests)):
        assert_same_result(a, b)


@needs_compiler
def test_new_mixes_of_tasks_compile_nothing_new(compiled_methods_hub):
    """Each pass plans its rows anew (Python objects); were the hooks traced, every pass would compile again. A pass
    compiles once per form of its inputs (one row or several, rows with attention blocks or not, all layers'
    outputs or the last), all of which the first requests below show it."""

    def one_per_task(requests: list) -> list:
        return list({task: (task, value) for task, value in requests}.values())

    compiled_methods_hub.run_many(_mix(1))
    for request in one_per_task(_mix(1)):
        compiled_methods_hub.run_many([request])
    graphs = counters["stats"]["unique_graphs"]
    for seed in (3, 4):
        compiled_methods_hub.run_many(_mix(seed))
        for request in one_per_task(_mix(seed)):
            compiled_methods_hub.run_many([request])
    assert counters["stats"]["unique_graphs"] == graphs


@needs_compiler
def test_a_compiled_int8_hub_keeps_rows_independent_and_near_eager_int8(trained_registry):
    """int8 compiled: fused kernels round a little differently from eager, so answers may flip at the int8 rounding
    of borderline tokens; a row still answers as alone, and as eager int8 within the int8 tolerance."""
    compiled = hub.Hub.load(trained_registry, dtype="int8", compile=True)
    assert_mixed_as_alone_and_near(compiled, hub.Hub.load(trained_registry, dtype="int8"), near=0.05)


def test_a_machine_that_cannot_compile_is_told_why_at_load(trained_registry, monkeypatch):
    def no_compiler(model, **options):
        def fails(**inputs):
            raise RuntimeError("InductorError: CppCompileError: C++ compile error\nlong compiler output")
        return fails

    monkeypatch.setattr(torch, "compile", no_compiler)
    served = hub.Hub.load(trained_registry, compile=True, share_backbones=False)
    with pytest.raises(BackboneError, match=r"torch.compile could not build its forward \(InductorError: "
                                            r"CppCompileError: C\+\+ compile error\).*C\+\+ compiler.*without --compile"):
        served.run("sentiment", "good movie")


@needs_compiler
def test_the_command_line_serves_compiled(trained_registry):
    from typer.testing import CliRunner

    from hub.cli import app

    result = CliRunner().invoke(app, ["run", "sentiment", "good movie", "--registry", str(trained_registry),
                                      "--compile"])
    assert result.exit_code == 0 and '"label"' in result.output and "Traceback" not in result.output


def _lora_mix(seed: int, count: int = 40) -> list:
    rng = random.Random(seed)
    return [random_request(rng) for _ in range(count)]


@needs_compiler
def test_lora_hooks_are_traced_into_the_graph_and_new_mixes_compile_nothing_new(trained_registry):
    """A LoRA-only backbone traces its hooks (no graph break per layer: inductor fuses the update into what reads
    it), answers as the eager hub, and plans every hooked layer in every pass, so that no mix of tasks (one task,
    several, rows of one request) makes a graph of its own once each form of pass has been seen."""
    compiled = hub.Hub.load(trained_registry, compile=True, share_backbones=False)
    eager = hub.Hub.load(trained_registry, share_backbones=False)
    breaks = sum(counters["graph_break"].values())
    requests = _lora_mix(0)
    for a, b in zip(compiled.run_many(requests), eager.run_many(requests)):
        assert_same_result(a, b)
    assert compiled.runtime("sentiment").backbone.row_hooks["lora"].traced
    assert sum(counters["graph_break"].values()) == breaks  # the hooks did not break the graph

    def one_task_passes(requests: list) -> list:
        by_task: dict = {}
        for task, value in requests:
            by_task.setdefault(task, []).append((task, value))
        return list(by_task.values())

    compiled.run_many(_lora_mix(1))
    for rows in one_task_passes(_lora_mix(1)):  # each pass one adapter (several rows), then one row
        compiled.run_many(rows)
        compiled.run_many(rows[:1])
    graphs = counters["stats"]["unique_graphs"]
    for seed in (3, 4):
        for a, b in zip(compiled.run_many(_lora_mix(seed)), eager.run_many(_lora_mix(seed))):
            assert_same_result(a, b)
        for rows in one_task_passes(_lora_mix(seed)):
            compiled.run_many(rows)
            compiled.run_many(rows[-1:])
    assert counters["stats"]["unique_graphs"] == graphs


@needs_compiler
def test_beside_another_methods_opaque_hooks_lora_hooks_are_opaque_too(compiled_methods_hub):
    """A graph break in every layer (another method's hooks) would make traced LoRA hooks frames of their own,
    compiled once per layer and form of pass: a backbone serving such a method untraces them."""
    compiled_methods_hub.run_many(_mix(5))
    hooks = compiled_methods_hub.runtime("similarity").backbone.row_hooks
    assert "lora" in hooks and len(hooks) > 1 and not any(hook.traced for hook in hooks.values())
