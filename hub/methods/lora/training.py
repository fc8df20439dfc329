"""LoRA's options in registry.yaml (`train.adapter`, or `train.lora` as registries wrote it before methods) and
the PEFT config they train with."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from ..base import AdapterOptions

if TYPE_CHECKING:
    from peft import LoraConfig


class LoraOptions(AdapterOptions):
    method: Literal["lora"] = "lora"
    r: int = Field(8, ge=1, le=1024)
    alpha: float = 16.0
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    target_modules: list[str] = ["query", "key", "value", "dense"]  # every linear layer; the pooler is excluded


def lora_peft_config(options: LoraOptions) -> LoraConfig:
    """Plain LoRA, as the per-row hook serves it (no DoRA, no bias, no saved modules)."""
    from peft import LoraConfig  # imported by training only: it takes seconds

    # PEFT annotates lora_alpha as int, but scales by any number
    return LoraConfig(r=options.r, lora_alpha=options.alpha, lora_dropout=options.dropout,  # type: ignore[arg-type]
                      target_modules=options.target_modules, exclude_modules=["pooler.dense"])
