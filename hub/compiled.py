"""A serving backbone's forward through `torch.compile` (`Hub(compile=True)`, `--compile`): the fastest way found to
run the int8 backbone on the CPU (benchmarks/backbone_runtimes.py, benchmarks/serving.py --compile), because
inductor fuses what eager PyTorch runs as separate passes over the activations: each linear layer's per-token
quantization, its rescaling, the bias, GELU and layer norm.

LoRA's per-row hooks are traced into the graph (hub.methods.lora.serving._Plan): they read only tensors, and every
compiled pass plans every hooked layer, so a pass is guarded on the same plan whatever its mix of tasks, and inductor
fuses each update into what reads the layer's output. The other methods' hooks stay eager (hub.methods.rows.opaque):
each is a graph break, so their plans (Python objects made anew every pass) are never traced or guarded on; a
backbone serving one of them makes LoRA's hooks opaque too (LayerHooks.untrace), since graph breaks in every layer
would otherwise compile traced hooks once per layer. Shapes are dynamic: one compiled graph serves every batch size
and length; a single-row batch, a pass with one adapter and each new set of hooked layers compile once more.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from .errors import BackboneError

# Frames compiled per code object before torch gives up on it and runs it eagerly. transformers wraps many layer
# methods in one generic decorator (a single code object called with different arguments), and graph breaks at the
# hooks split a pass into many frames: torch's default (8) sent some of them back to eager.
RECOMPILE_LIMIT = 64
SUFFIX = "+compile"  # after a dtype in a runtime name ('int8+compile', as the benchmarks take them)


def runtime_options(runtime: str) -> dict[str, Any]:
    """Hub options for a runtime name: a dtype, with SUFFIX after it for its forward through torch.compile."""
    dtype, compiled, _ = runtime.partition(SUFFIX)
    return {"dtype": dtype, "compile": bool(compiled)}


def compile_model(model: nn.Module, name: str) -> Callable[..., Any]:
    """`model`'s forward compiled, checked on a tiny batch now: a machine that cannot compile (no C++ compiler,
    an unsupported platform) fails here with the fix, not at a user's first request."""
    compiled = torch.compile(model, dynamic=True)
    try:
        with torch.inference_mode(), limits():
            for rows in (2, 1):  # one row is a shape of its own to the compiler
                ids = torch.ones(rows, 4, dtype=torch.long, device=next(model.parameters()).device)
                compiled(input_ids=ids, attention_mask=torch.ones_like(ids), token_type_ids=torch.zeros_like(ids))
    except Exception as exc:  # inductor raises its own error types, from the compiler it runs
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BackboneError(f"backbone {name!r}: torch.compile could not build its forward ({first}). Compiling on "
                            "the CPU needs a C++ compiler (gcc or clang) on PATH: install one, or serve without "
                            "--compile.") from None
    return compiled


@contextlib.contextmanager
def limits() -> Iterator[None]:
    """Around a compiled pass: the recompile limit it needs (RECOMPILE_LIMIT)."""
    with torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT):
        yield
