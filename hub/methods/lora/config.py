"""What LoRA folders the per-row hook serves exactly, and loading their matrices after checking them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError, safe_open

from ...errors import AdapterError
from ...safetensors_header import SAFETENSORS_DTYPES, SafetensorsHeader, TensorEntry, read_safetensors_header
from ..base import PEFT_INT8_WEIGHTS, PEFT_WEIGHTS, refuse_non_finite
from .weights import (
    INT8_METADATA,
    INT8_SCALE,
    LORA_KEY,
    LoraWeights,
    pattern_value,
    rank_of,
    read_int8_lora_weights,
    read_lora_weights,
)

if TYPE_CHECKING:
    from ...backbone import Backbone

# LoraConfig options that change what LoRA computes beyond x @ A.T @ B.T x scaling: the batched
# serving path (serving.py) does not apply them, so such folders are refused, never half-served.
UNSERVED_OPTIONS = (
    "use_dora", "lora_bias", "fan_in_fan_out", "use_qalora", "use_bdlora", "alora_invocation_tokens",
    "arrow_config", "layer_replication", "target_parameters", "trainable_token_indices", "modules_to_save",
)
REQUANTIZE = "re-quantize it from the float adapter with `hub quantize TASK --dtype int8`, or retrain it"


def lora_weights_file(folder: Path) -> Path:
    """The folder's LoRA weights: PEFT's float file, or the int8 one `hub quantize` writes in its place."""
    float_file, int8_file = folder / PEFT_WEIGHTS, folder / PEFT_INT8_WEIGHTS
    if not int8_file.is_file():
        return float_file
    if float_file.is_file():
        raise AdapterError(
            f"{folder} holds both {PEFT_WEIGHTS} and {PEFT_INT8_WEIGHTS}, so which LoRA weights to serve is ambiguous; "
            f"delete one of them (`hub quantize` leaves exactly one).")
    return int8_file


def load_lora(name: str, folder: Path, config: dict[str, Any], backbone: Backbone) -> LoraWeights:
    """A LoRA folder's matrices, ready for per-row serving on `backbone`, once every check passed."""
    path, header, matrices = check_lora(folder, config, backbone)
    try:
        if path.name == PEFT_INT8_WEIGHTS:
            weights = read_int8_lora_weights(name, path, config, backbone.dtype, matrices)
        else:
            weights = read_lora_weights(name, path, config, backbone.dtype, header)
    except (OSError, ValueError, SafetensorError) as exc:
        raise AdapterError(f"{path} could not be read ({exc}); re-download or retrain it.") from None
    if weights.scales is not None:  # int8 matrices are finite: only their scales can be NaN or inf
        if not torch.isfinite(weights.scales).all():
            refuse_non_finite(path, _scales(weights))
    elif not torch.isfinite(weights.buffer).all():  # one check over the adapter's single buffer
        refuse_non_finite(path, _matrices(weights))
    return weights


def check_lora(folder: Path, config: dict[str, Any],
               backbone: Backbone) -> tuple[Path, SafetensorsHeader, dict[str, TensorEntry]]:
    """Refuse a LoRA the router cannot serve exactly on this backbone; return its weights file, the file's tensor
    table and its matrices' entries (an int8 file's scales checked and left out)."""
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
    matrices = int8_matrices(path, header) if path.name == PEFT_INT8_WEIGHTS else header.tensors
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
    return path, header, matrices


def read_lora_header(path: Path) -> SafetensorsHeader:
    """The tensor table of a LoRA weights file; AdapterError when it is unreadable or empty."""
    try:
        header = read_safetensors_header(path)
    except (OSError, ValueError) as exc:
        raise AdapterError(f"{path} is not a readable safetensors file ({exc}); re-download or retrain it.") from None
    if not header.tensors:
        raise AdapterError(f"{path} holds no tensors; retrain the adapter.")
    return header


def int8_matrices(path: Path, header: SafetensorsHeader) -> dict[str, TensorEntry]:
    """The int8 matrices of an int8 LoRA file, once its metadata and every matrix's scale (`<key>_scale`: float32,
    one per rank channel) are checked."""
    try:
        with safe_open(str(path), framework="pt") as weights:
            metadata = weights.metadata() or {}
    except (OSError, SafetensorError) as exc:
        raise AdapterError(f"{path} is not a readable safetensors file ({exc}); re-download or retrain it.") from None
    for field, value in INT8_METADATA.items():
        if metadata.get(field) != value:
            raise AdapterError(f"{path}: its metadata records {field} {metadata.get(field)!r}, but this hub reads "
                               f"{value!r} only; {REQUANTIZE}.")
    matrices = {key: entry for key, entry in header.tensors.items() if not key.endswith(INT8_SCALE)}
    for key, entry in matrices.items():
        if entry.dtype != "I8":
            raise AdapterError(f"{path}: tensor {key} is stored as {entry.dtype}, not I8 as an int8 file's matrices "
                               f"are; {REQUANTIZE}.")
        scale = header.tensors.get(key + INT8_SCALE)
        if scale is None:
            raise AdapterError(f"{path}: int8 tensor {key} has no scale tensor {key + INT8_SCALE}, so it cannot be "
                               f"dequantized; {REQUANTIZE}.")
        rank = (rank_of(key, entry.shape),) if len(entry.shape) == 2 else None
        if scale.dtype != "F32" or scale.shape != rank:
            raise AdapterError(f"{path}: scale tensor {key + INT8_SCALE} is {scale.dtype} of shape {scale.shape}, "
                               f"but its matrix needs F32 of shape {rank} (one per rank channel); {REQUANTIZE}.")
    orphans = sorted(key for key in header.tensors if key.endswith(INT8_SCALE)
                     and key.removesuffix(INT8_SCALE) not in matrices)
    if orphans:
        raise AdapterError(f"{path}: scale tensor(s) {', '.join(orphans)} belong to no matrix; {REQUANTIZE}.")
    return matrices


def _matrices(weights: LoraWeights) -> dict[str, torch.Tensor]:
    """The adapter's matrices by their PEFT tensor names (B with its scaling, as served)."""
    return {f"base_model.model.{path}.lora_{which}.weight": matrix for path in weights.paths
            for which, matrix in (("A", weights.down(path)), ("B", weights.up(path)))}


def _scales(weights: LoraWeights) -> dict[str, torch.Tensor]:
    """An int8 adapter's rank scales by their tensor names in its file (B's with its scaling, as served)."""
    assert weights.scales is not None  # only int8 adapters have scales
    scales = {}
    for path, slot in weights.layout.slots.items():
        halves = (("A", slot.down_scale_start, slot.rank), ("B", slot.up_scale_start, slot.rank))
        for which, start, rows in halves:
            scales[f"base_model.model.{path}.lora_{which}.weight{INT8_SCALE}"] = weights.scales[start:start + rows]
    return scales
