"""What LoRA folders the per-row hook serves exactly, and loading their matrices after checking them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError

from ...errors import AdapterError
from ...safetensors_header import SAFETENSORS_DTYPES, SafetensorsHeader, TensorEntry, read_safetensors_header
from ..base import PEFT_QUANTIZED_WEIGHTS, PEFT_WEIGHTS, refuse_non_finite
from .quantized_file import QuantizedLayout, read_layout
from .weights import LORA_KEY, LoraWeights, lora_key, pattern_value, read_lora_weights, read_quantized_lora_weights

if TYPE_CHECKING:
    from ...backbone import Backbone

# LoraConfig options that change what LoRA computes beyond x @ A.T @ B.T x scaling: the batched
# serving path (serving.py) does not apply them, so such folders are refused, never half-served.
UNSERVED_OPTIONS = (
    "use_dora", "lora_bias", "fan_in_fan_out", "use_qalora", "use_bdlora", "alora_invocation_tokens",
    "arrow_config", "layer_replication", "target_parameters", "trainable_token_indices", "modules_to_save",
)


def lora_weights_file(folder: Path) -> Path:
    """The folder's LoRA weights: PEFT's float file, or the quantized one `hub quantize` writes in its place."""
    float_file, quantized_file = folder / PEFT_WEIGHTS, folder / PEFT_QUANTIZED_WEIGHTS
    if not quantized_file.is_file():
        return float_file
    if float_file.is_file():
        raise AdapterError(
            f"{folder} holds both {PEFT_WEIGHTS} and {PEFT_QUANTIZED_WEIGHTS}, so which LoRA weights to serve is "
            f"ambiguous; delete one of them (`hub quantize` leaves exactly one).")
    return quantized_file


def load_lora(name: str, folder: Path, config: dict[str, Any], backbone: Backbone) -> LoraWeights:
    """A LoRA folder's matrices, ready for per-row serving on `backbone`, once every check passed."""
    path, header, layout = check_lora(folder, config, backbone)
    try:
        if layout is not None:
            weights = read_quantized_lora_weights(name, path, config, backbone.dtype, layout)
        else:
            weights = read_lora_weights(name, path, config, backbone.dtype, header)
    except (OSError, ValueError, SafetensorError) as exc:
        raise AdapterError(f"{path} could not be read ({exc}); re-download or retrain it.") from None
    if weights.scales is not None:  # integer or half matrices are finite: only their scales can be NaN or inf
        if not torch.isfinite(weights.scales).all():
            refuse_non_finite(path, _scales(weights))
    elif not torch.isfinite(weights.buffer).all():  # one check over the adapter's single buffer
        refuse_non_finite(path, _matrices(weights))
    return weights


def check_lora(folder: Path, config: dict[str, Any],
               backbone: Backbone) -> tuple[Path, SafetensorsHeader, QuantizedLayout | None]:
    """Refuse a LoRA the router cannot serve exactly on this backbone; return its weights file, the file's tensor
    table and, for a quantized file, its checked layout."""
    unserved = [key for key in UNSERVED_OPTIONS if config.get(key)]
    if config.get("bias", "none") != "none":
        unserved.append(f"bias={config['bias']!r}")
    if unserved:
        raise AdapterError(
            f"{folder}: LoRA option(s) {', '.join(unserved)} are not served (the batched router applies plain LoRA "
            "only); retrain without them (`hub train` does) or merge them into the backbone."
        )
    path = lora_weights_file(folder)
    header = read_lora_header(path)
    layout = read_layout(path, header) if path.name == PEFT_QUANTIZED_WEIGHTS else None
    matrices = header.tensors if layout is None else _virtual_entries(layout)
    halves: dict[str, set[str]] = {}
    for key, entry in matrices.items():
        match = LORA_KEY.fullmatch(key)
        if not match:
            raise AdapterError(
                f"{folder}: tensor {key} is not a LoRA matrix of a linear layer (lora_A / lora_B), which is all "
                "the router applies; retrain the adapter with `hub train`."
            )
        path_in_model, which = match.groups()
        layer = backbone.linear_layer(path_in_model)
        if layer is None:
            raise AdapterError(
                f"{folder}: tensor {key} targets {path_in_model!r}, which is not a linear layer of this backbone.")
        rank = int(pattern_value(config.get("rank_pattern") or {}, path_in_model, config.get("r", 0)))
        expected = (rank, layer.in_features) if which == "A" else (layer.out_features, rank)
        if entry.shape != expected:
            raise AdapterError(
                f"{folder}: tensor {key} has shape {entry.shape}, this backbone needs {expected}; the adapter was made "
                "for another model size. Retrain it on this backbone."
            )
        if path.name == PEFT_WEIGHTS and entry.dtype not in SAFETENSORS_DTYPES:
            raise AdapterError(
                f"{folder}: tensor {key} is stored as {entry.dtype}, not a float type; retrain the adapter.")
        halves.setdefault(path_in_model, set()).add(which)
    lonely = sorted(p for p, found in halves.items() if found != {"A", "B"})
    if lonely:
        raise AdapterError(f"{folder}: layer(s) {', '.join(lonely)} have only one of lora_A / lora_B; the file is "
                           "incomplete. Retrain or re-download it.")
    return path, header, layout


def _virtual_entries(layout: QuantizedLayout) -> dict[str, TensorEntry]:
    """A quantized file's matrices as PEFT's keys and shapes would name them (for the checks every file gets)."""
    entries = {}
    for layer in layout.layers:
        entries[lora_key(layer.path, "A")] = TensorEntry(layout.dtype, (layer.rank, layer.in_features), 0, 0)
        entries[lora_key(layer.path, "B")] = TensorEntry(layout.dtype, (layer.out_features, layer.rank), 0, 0)
    return entries


def read_lora_header(path: Path) -> SafetensorsHeader:
    """The tensor table of a LoRA weights file; AdapterError when it is unreadable or empty."""
    try:
        header = read_safetensors_header(path)
    except (OSError, ValueError) as exc:
        raise AdapterError(f"{path} is not a readable safetensors file ({exc}); re-download or retrain it.") from None
    if not header.tensors:
        raise AdapterError(f"{path} holds no tensors; retrain the adapter.")
    return header


def _matrices(weights: LoraWeights) -> dict[str, torch.Tensor]:
    """The adapter's matrices by their PEFT tensor names (B with its scaling, as served)."""
    return {lora_key(path, which): matrix for path in weights.paths
            for which, matrix in (("A", weights.down(path)), ("B", weights.up(path)))}


def _scales(weights: LoraWeights) -> dict[str, torch.Tensor]:
    """An adapter's rank scales by the matrix they scale (B's with its scaling, as served)."""
    assert weights.scales is not None  # only quantized or narrow adapters have scales
    scales = {}
    for path, slot in weights.layout.slots.items():
        halves = (("A", slot.down_scale_start, slot.rank), ("B", slot.up_scale_start, slot.rank))
        for which, start, rows in halves:
            scales[f"rank scales of {path}.lora_{which}"] = weights.scales[start:start + rows]
    return scales
