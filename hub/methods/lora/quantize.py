"""`hub quantize`: a PEFT LoRA folder's matrices stored as float32, float16, bfloat16, int8 or int4, and back; and
optionally at a lower rank (the best rank-k approximation of each layer's trained update).

float16 / bfloat16 keep PEFT's file (`adapter_model.safetensors`, same keys): plain PEFT reads it as is. int8 and
int4 go to another file, `adapter_model.quantized.safetensors` (quantized_file.py), in its place: PEFT would copy
integer values into float parameters without a word, so with PEFT's file gone it fails loudly instead.
`--dtype float32` dequantizes a quantized folder back into the file PEFT reads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ...atomic import atomic_file
from ...errors import AdapterError
from ...safetensors_header import SAFETENSORS_DTYPES
from ..base import PEFT_CONFIG, PEFT_QUANTIZED_WEIGHTS, PEFT_WEIGHTS, refuse_non_finite
from ..storage import FLOAT_STORAGE, cast_floats
from .config import lora_weights_file, read_lora_header
from .quantized_file import QUANTIZATIONS, dequantized_matrices, read_layout, write_quantized
from .weights import LORA_KEY, lora_key

STORAGE_DTYPES = (*FLOAT_STORAGE, *QUANTIZATIONS)


def quantize_lora_folder(folder: Path, dtype: str) -> None:
    """Rewrite the LoRA weights of a PEFT LoRA folder in storage `dtype`, in place: the new file written atomically;
    a float file replaced by a quantized one, or back, is removed only once its successor is complete."""
    if dtype not in STORAGE_DTYPES:
        raise AdapterError(f"unknown storage dtype {dtype!r}; use one of: {', '.join(STORAGE_DTYPES)}.")
    _lora_config(folder)
    source = lora_weights_file(folder)
    if stored_dtype(source) == dtype:
        return  # already so: re-rounding integer values could only drift
    _write(folder, read_float_matrices(source), dtype, source)


def reduce_lora_rank(folder: Path, rank: int) -> None:
    """Rewrite a PEFT LoRA folder at a lower `rank` (reduce_rank), as a float32 file PEFT reads, with its config."""
    config = _lora_config(folder)
    source = lora_weights_file(folder)
    matrices, config = reduce_rank(read_float_matrices(source), config, rank, folder)
    _write(folder, matrices, "float32", source)  # the weights first: a crash in between leaves a folder that fails
    with atomic_file(folder / PEFT_CONFIG) as staging:  # its shape checks loudly, never a wrong one served
        staging.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _write(folder: Path, matrices: dict[str, torch.Tensor], dtype: str, source: Path) -> None:
    """The matrices as the folder's weights file in `dtype` (atomically), then the old file removed if another."""
    if dtype in QUANTIZATIONS:
        target = folder / PEFT_QUANTIZED_WEIGHTS
        write_quantized(target, _pairs(matrices), dtype)
    else:
        target = folder / PEFT_WEIGHTS
        tensors = cast_floats(matrices, dtype, source, "bfloat16 or int8")
        with atomic_file(target) as staging:
            save_file(tensors, str(staging), metadata={"format": "pt"})  # "format": as PEFT writes it
    if source != target:
        source.unlink()


def reduce_rank(matrices: dict[str, torch.Tensor], config: dict[str, Any], rank: int,
                where: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Every layer's update B A replaced by its best rank-`rank` approximation (truncated SVD, Eckart-Young), split
    evenly between the factors (sqrt of the singular values on each side: similar ranges, so per-rank quantization
    loses little), and the config's r and lora_alpha set so that LoRA's scaling is unchanged. Trained at a rank
    and stored at a lower one keeps most of the quality of the higher rank for the bytes of the lower (measured in
    the README's shipped table)."""
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        raise AdapterError(f"{where}: its config has a rank_pattern or alpha_pattern; only adapters of one rank and "
                           "alpha are reduced in rank.")
    current = int(config.get("r", 0))
    if not 1 <= rank < current:
        raise AdapterError(f"{where}: rank {rank} is not below the adapter's rank {current}; give a rank from 1 to "
                           f"{current - 1}.")
    reduced = {}
    for key_a, a in matrices.items():
        if ".lora_A." not in key_a:
            continue
        key_b = key_a.replace(".lora_A.", ".lora_B.")
        u, s, vh = torch.linalg.svd(matrices[key_b].double() @ a.double(), full_matrices=False)
        root = s[:rank].sqrt()
        reduced[key_a] = (root[:, None] * vh[:rank]).float().contiguous()
        reduced[key_b] = (u[:, :rank] * root).float().contiguous()
    alpha = float(config.get("lora_alpha", 8))
    ratio = (rank / current) ** 0.5 if config.get("use_rslora") else rank / current  # alpha / r (or / sqrt r) kept
    return reduced, {**config, "r": rank, "lora_alpha": alpha * ratio}


def stored_dtype(weights_file: Path) -> str | None:
    """The storage dtype of a LoRA weights file (STORAGE_DTYPES' names), None for a float file of mixed dtypes."""
    header = read_lora_header(weights_file)
    if weights_file.name == PEFT_QUANTIZED_WEIGHTS:
        return read_layout(weights_file, header).dtype
    names = {SAFETENSORS_DTYPES.get(e.dtype) for e in header.tensors.values()}
    found = next(iter(names)) if len(names) == 1 else None
    return next((name for name, dtype in FLOAT_STORAGE.items() if dtype == found), None)


def read_float_matrices(weights_file: Path) -> dict[str, torch.Tensor]:
    """The LoRA matrices of a weights file by PEFT key, as float32 (a quantized file's dequantized); AdapterError
    when it holds anything else or non-finite values."""
    header = read_lora_header(weights_file)
    try:
        if weights_file.name == PEFT_QUANTIZED_WEIGHTS:
            tensors = {lora_key(path, which): matrix
                       for path, pair in dequantized_matrices(weights_file, read_layout(weights_file, header)).items()
                       for which, matrix in zip("AB", pair)}
        else:
            tensors = load_file(str(weights_file))
    except (OSError, SafetensorError) as exc:
        raise AdapterError(f"{weights_file} could not be read ({exc}); re-download or retrain it.") from None
    for key, tensor in tensors.items():
        if not (LORA_KEY.fullmatch(key) and tensor.is_floating_point() and tensor.dim() == 2):
            raise AdapterError(f"{weights_file}: tensor {key} ({tensor.dtype}, shape {list(tensor.shape)}) is not a "
                               "float LoRA matrix (lora_A / lora_B); only LoRA folders the hub serves are quantized.")
    refuse_non_finite(weights_file, tensors)
    return {key: tensor.float() for key, tensor in tensors.items()}


def _pairs(matrices: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """PEFT-keyed matrices as (A, B) by module path."""
    pairs = {}
    for key, a in matrices.items():
        match = LORA_KEY.fullmatch(key)
        if match and match.group(2) == "A":
            pairs[match.group(1)] = (a, matrices[key.replace(".lora_A.", ".lora_B.")])
    return pairs


def _lora_config(folder: Path) -> dict[str, Any]:
    """The folder's PEFT config; only LoRA folders are quantized (other methods' loaders read PEFT's float file)."""
    try:
        config = json.loads((folder / PEFT_CONFIG).read_text(encoding="utf-8"))
        peft_type = config.get("peft_type")
    except (OSError, ValueError, AttributeError) as exc:
        raise AdapterError(f"{folder / PEFT_CONFIG} is not a readable PEFT config ({exc}); retrain or re-download the "
                           "adapter.") from None
    if peft_type != "LORA":
        raise AdapterError(f"{folder} holds a {peft_type} adapter; only LoRA adapters are quantized.")
    return config
