"""`hub train` with bottleneck adapters: each targeted dense layer replaced in place by itself + an adapter, and the
trained adapters written as an adapter folder.

Written here, not taken from a library: PEFT has no bottleneck adapters, and AdapterHub's `adapters` library pins an
older transformers than the hub's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from ..base import PEFT_CONFIG, PEFT_WEIGHTS
from .options import ACTIVATIONS, CONFIGS, BottleneckOptions, bottleneck_size

PEFT_TYPE = "BOTTLENECK"
KEY_PREFIX = "base_model.model."  # PEFT's key layout, so every method's weights file reads alike


class BottleneckLinear(nn.Module):
    """A frozen linear layer and the adapter on its output: y = dense(x); y + up(act(down(y)))."""

    def __init__(self, base_layer: nn.Linear, options: BottleneckOptions):
        super().__init__()
        self.base_layer = base_layer  # the name hub.methods.base.linear_layer unwraps
        self.options = options
        hidden, width = base_layer.out_features, bottleneck_size(base_layer.out_features, options.reduction_factor)
        device, dtype = base_layer.weight.device, base_layer.weight.dtype
        self.adapter_down = nn.Linear(hidden, width, device=device, dtype=dtype)
        self.adapter_up = nn.Linear(width, hidden, device=device, dtype=dtype)
        # near identity, as Houlsby et al.: small down weights (truncated normal, std 1e-2), zero up weights and biases,
        # so training starts from the frozen backbone's own outputs
        nn.init.trunc_normal_(self.adapter_down.weight, std=1e-2, a=-2e-2, b=2e-2)
        nn.init.zeros_(self.adapter_down.bias)
        nn.init.zeros_(self.adapter_up.weight)
        nn.init.zeros_(self.adapter_up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)
        return y + self.adapter_up(ACTIVATIONS[self.options.non_linearity](self.adapter_down(y)))


class BottleneckTraining:
    """AdapterTraining for bottleneck adapters: injected into the model itself, so the model's forward trains them."""

    def wrap(self, model: nn.Module, options: Any) -> nn.Module:
        """Freeze `model` and replace each of the config's target layers with a BottleneckLinear; returns `model`."""
        if not isinstance(options, BottleneckOptions):
            raise TypeError(f"bottleneck adapters train with BottleneckOptions, not {type(options).__name__}")
        if adapted(model):
            raise ValueError("the model already holds bottleneck adapters; wrap a fresh model")
        model.requires_grad_(False)
        pattern = CONFIGS[options.config]
        targets = [(name, module) for name, module in model.named_modules()
                   if isinstance(module, nn.Linear) and pattern.fullmatch(name)]
        if not targets:
            raise ValueError(f"no layer of {type(model).__name__} matches bottleneck config {options.config!r} "
                             f"({pattern.pattern}); bottleneck adapters need a BERT-style encoder")
        for name, layer in targets:
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, BottleneckLinear(layer, options))
        return model

    def save(self, wrapped: nn.Module, folder: Path, base_model_id: str) -> None:
        """adapter_config.json and adapter_model.safetensors (the adapters' weights only) into `folder`."""
        layers = adapted(wrapped)
        if not layers:
            raise TypeError("BottleneckTraining.save needs the model its wrap made; this one holds no adapters")
        options = next(iter(layers.values())).options
        tensors = {f"{KEY_PREFIX}{path}.{part}.{kind}": getattr(getattr(layer, part), kind).detach().cpu().contiguous()
                   for path, layer in layers.items() for part in ("adapter_down", "adapter_up")
                   for kind in ("weight", "bias")}
        config = {"peft_type": PEFT_TYPE, "base_model_name_or_path": base_model_id, "config": options.config,
                  "reduction_factor": options.reduction_factor, "non_linearity": options.non_linearity,
                  "bottleneck_size": next(iter(layers.values())).adapter_down.out_features,
                  "target_modules": sorted(layers)}
        folder.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(folder / PEFT_WEIGHTS), metadata={"format": "pt"})
        (folder / PEFT_CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def adapted(model: nn.Module) -> dict[str, BottleneckLinear]:
    """The model's injected adapter layers, by module path."""
    return {name: module for name, module in model.named_modules() if isinstance(module, BottleneckLinear)}
