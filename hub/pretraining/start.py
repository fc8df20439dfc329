"""A task adapter that starts from a domain adapter's weights (`train.init_from`): task-adaptive pre-training, then
fine-tuning (Gururangan et al. 2020). The domain folder must hold an adapter of the same method, options and
backbone as the task's recipe; its weights are copied into the fresh adapter before training, checked key by key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import load_file
from torch import nn

from ..errors import HubError
from ..methods import PEFT_CONFIG, PEFT_WEIGHTS

# the adapter_config.json fields that make two adapters' weights mean the same thing
SHAPING_FIELDS = ("peft_type", "r", "lora_alpha", "target_modules", "use_rslora", "use_dora", "feedforward_modules",
                  "layers_to_transform", "vera_dropout", "d_initial")


def start_from_domain_adapter(wrapped: nn.Module, folder: Path, base_model_id: str) -> int:
    """Copy the domain adapter in `folder` into `wrapped` (the task's fresh PEFT model); returns the tensors copied.
    HubError names what does not match: another backbone, method or options, or weights of other shapes."""
    from peft import PeftModel, set_peft_model_state_dict

    if not isinstance(wrapped, PeftModel):
        raise HubError("train.init_from starts a PEFT adapter (lora, ia3, vera) from a domain adapter; this recipe's "
                       "method is not one: use one of those, or drop init_from.")
    try:
        domain = json.loads((folder / PEFT_CONFIG).read_text(encoding="utf-8"))
        weights = load_file(str(folder / PEFT_WEIGHTS))
    except (OSError, ValueError) as exc:
        raise HubError(f"train.init_from {folder}: not a readable adapter folder ({exc}); give a folder `hub pretrain` "
                       "wrote.") from None
    if domain.get("base_model_name_or_path") != base_model_id:
        raise HubError(f"train.init_from {folder} was pre-trained on {domain.get('base_model_name_or_path')!r}, the "
                       f"task's backbone is {base_model_id!r}: pre-train on the task's backbone.")
    task = wrapped.peft_config["default"].to_dict()
    differing = [f"{key}: {domain.get(key)!r} vs {task.get(key)!r}" for key in SHAPING_FIELDS
                 if _comparable(domain.get(key)) != _comparable(task.get(key))]
    if differing:
        raise HubError(f"train.init_from {folder}: its adapter differs from the task's recipe ({'; '.join(differing)});"
                       " give the recipe the domain adapter's method and options, or pre-train with the task's.")
    own = {name for name in wrapped.state_dict() if "lora_" in name or "ia3_" in name or "vera_" in name}
    result: Any = set_peft_model_state_dict(wrapped, weights)  # torch's (missing_keys, unexpected_keys)
    missing, unexpected = [name for name in result.missing_keys if name in own], list(result.unexpected_keys)
    if missing or unexpected:
        raise HubError(f"train.init_from {folder}: its weights do not fit the task's adapter (missing "
                       f"{missing[:3]}, unexpected {unexpected[:3]}); pre-train again.")
    return len(weights)


def _comparable(value: object) -> object:
    """Target module lists compare as sets (PEFT writes them in any order)."""
    return sorted(value) if isinstance(value, (list, set, tuple)) else value
