"""VeRA's options in registry.yaml (`train.adapter: {method: vera, r: 256}`) and the PEFT config they train with."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from ..base import AdapterOptions

if TYPE_CHECKING:
    from peft import VeraConfig


class VeraOptions(AdapterOptions):
    method: Literal["vera"] = "vera"
    r: int = Field(256, ge=1, le=4096)  # the shared projections' rank (the paper's default is large: it costs no bytes)
    target_modules: list[str] = ["query", "value"]  # the paper's placement
    projection_prng_key: int = 0  # the seed the shared projections are regenerated from
    d_initial: float = Field(0.1, gt=0)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


def vera_peft_config(options: VeraOptions) -> VeraConfig:
    """Projections not saved (save_projection=False): every task's folder holds only its vectors."""
    from peft import VeraConfig  # imported by training only: it takes seconds

    # VeraConfig has no exclude_modules: the names become one expression that never matches the (untrained) pooler
    names = "|".join(re.escape(name) for name in options.target_modules)
    return VeraConfig(r=options.r, target_modules=rf"(?!pooler\.)(.*\.)?({names})",
                      projection_prng_key=options.projection_prng_key, save_projection=False,
                      d_initial=options.d_initial, vera_dropout=options.dropout)
