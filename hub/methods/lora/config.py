"""What LoRA folders the per-row hook serves exactly, and loading their matrices after checking them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ...errors import AdapterError
from ...safetensors_header import SAFETENSORS_DTYPES, SafetensorsHeader, read_safetensors_header
from ..base import PEFT_WEIGHTS as WEIGHTS_FILE
from ..base import refuse_non_finite
from .weights import LORA_KEY, LoraWeights, pattern_value, read_lora_weights

if TYPE_CHECKING:
    from ...backbone import Backbone

# LoraConfig options that change what LoRA computes beyond x @ A.T @ B.T x scaling: the batched
# serving path (serving.py) does not apply them, so such folders are refused, never half-served.
UNSERVED_OPTIONS = (
    "use_dora", "lora_bias", "fan_in_fan_out", "use_qalora", "use_bdlora", "alora_invocation_tokens",
    "arrow_config", "layer_replication", "target_parameters", "trainable_token_indices", "modules_to_save",
)


def load_lora(name: str, folder: Path, config: dict[str, Any], backbone: Backbone) -> LoraWeights:
    """A LoRA folder's matrices, ready for per-row serving on `backbone`, once every check passed."""
    header = check_lora(folder, config, backbone)
    try:
        weights = read_lora_weights(name, folder / WEIGHTS_FILE, config, backbone.dtype, header)
    except (OSError, ValueError) as exc:
        raise AdapterError(f"{folder / WEIGHTS_FILE} could not be read ({exc}); re-download or retrain it.") from None
    if not torch.isfinite(weights.buffer).all():  # one check over the adapter's single buffer
        refuse_non_finite(folder / WEIGHTS_FILE, _matrices(weights))
    return weights


def check_lora(folder: Path, config: dict[str, Any], backbone: Backbone) -> SafetensorsHeader:
    """Refuse a LoRA the router cannot serve exactly on this backbone; return its file's tensor table."""
    unserved = [key for key in UNSERVED_OPTIONS if config.get(key)]
    if config.get("bias", "none") != "none":
        unserved.append(f"bias={config['bias']!r}")
    if unserved:
        raise AdapterError(
            f"{folder}: LoRA option(s) {', '.join(unserved)} are not served (the batched router applies plain LoRA "
            "only); retrain without them (`hub train` does) or merge them into the backbone."
        )
    try:
        header = read_safetensors_header(folder / WEIGHTS_FILE)
    except (OSError, ValueError) as exc:
        raise AdapterError(
            f"{folder / WEIGHTS_FILE} is not a readable safetensors file ({exc}); re-download or retrain it.") from None
    if not header.tensors:
        raise AdapterError(f"{folder / WEIGHTS_FILE} holds no tensors; retrain the adapter.")
    halves: dict[str, set[str]] = {}
    for key, entry in header.tensors.items():
        match = LORA_KEY.fullmatch(key)
        if not match:
            raise AdapterError(
                f"{folder}: tensor {key} is not a LoRA matrix of a linear layer (lora_A / lora_B), which is all "
                "the router applies; retrain the adapter with `hub train`."
            )
        path, which = match.groups()
        layer = backbone.linear_layer(path)
        if layer is None:
            raise AdapterError(
                f"{folder}: tensor {key} targets {path!r}, which is not a linear layer of this backbone.")
        rank = int(pattern_value(config.get("rank_pattern") or {}, path, config.get("r", 0)))
        expected = (rank, layer.in_features) if which == "A" else (layer.out_features, rank)
        if entry.shape != expected:
            raise AdapterError(
                f"{folder}: tensor {key} has shape {entry.shape}, this backbone needs {expected}; the adapter was made "
                "for another model size. Retrain it on this backbone."
            )
        if entry.dtype not in SAFETENSORS_DTYPES:
            raise AdapterError(
                f"{folder}: tensor {key} is stored as {entry.dtype}, not a float type; retrain the adapter.")
        halves.setdefault(path, set()).add(which)
    lonely = sorted(path for path, found in halves.items() if found != {"A", "B"})
    if lonely:
        raise AdapterError(f"{folder}: layer(s) {', '.join(lonely)} have only one of lora_A / lora_B; the file is "
                           "incomplete. Retrain or re-download it.")
    return header


def _matrices(weights: LoraWeights) -> dict[str, torch.Tensor]:
    """The adapter's matrices by their PEFT tensor names (B with its scaling, as served)."""
    return {f"base_model.model.{path}.lora_{which}.weight": matrix for path in weights.paths
            for which, matrix in (("A", weights.down(path)), ("B", weights.up(path)))}
