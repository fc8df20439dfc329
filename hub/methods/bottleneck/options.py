"""Bottleneck adapters' options in registry.yaml (`train.adapter: {method: bottleneck, config: seq_bn,
reduction_factor: 16}`), named as AdapterHub names them, and what they mean on a BERT layer."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch.nn import functional as F

from ..base import AdapterOptions

# Where each config puts an adapter: on the output of a sub-layer's dense projection, before the layer's own
# residual + LayerNorm (the papers' placement). seq_bn (Pfeiffer): after the feed-forward output only;
# double_seq_bn (Houlsby): also after the attention's output projection. (AdapterHub's own seq_bn feeds its adapter
# after the layer's LayerNorm, original_ln_before=True: its checkpoints are not folders of this method.)
FEEDFORWARD_OUTPUT = r"(.*\.)?layer\.\d+\.output\.dense"
ATTENTION_OUTPUT = r"(.*\.)?layer\.\d+\.attention\.output\.dense"
CONFIGS: dict[str, re.Pattern[str]] = {
    "seq_bn": re.compile(FEEDFORWARD_OUTPUT),
    "double_seq_bn": re.compile(f"{FEEDFORWARD_OUTPUT}|{ATTENTION_OUTPUT}"),
}
DEFAULT_NON_LINEARITY = {"seq_bn": "relu", "double_seq_bn": "swish"}  # AdapterHub's defaults

# Every one maps 0 to 0: per-row serving pads narrower adapters (and rows without one) with zero weights and biases,
# and relies on a zero unit staying exactly zero through the non-linearity.
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu, "swish": F.silu, "silu": F.silu, "gelu": F.gelu, "tanh": torch.tanh}
NonLinearity = Literal["relu", "swish", "silu", "gelu", "tanh"]


class BottleneckOptions(AdapterOptions):
    method: Literal["bottleneck"] = "bottleneck"
    config: Literal["seq_bn", "double_seq_bn"] = "seq_bn"
    reduction_factor: int = Field(16, ge=1)  # bottleneck width = hidden size // reduction_factor (at least 1)
    non_linearity: NonLinearity = "relu"  # when not given: the config's AdapterHub default

    @model_validator(mode="before")
    @classmethod
    def _config_default(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and raw.get("non_linearity") is None:
            return {**raw, "non_linearity": DEFAULT_NON_LINEARITY.get(raw.get("config", "seq_bn"), "relu")}
        return raw


def bottleneck_size(hidden_size: int, reduction_factor: int) -> int:
    return max(1, hidden_size // reduction_factor)
