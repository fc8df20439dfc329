"""`hub quantize`: a PEFT LoRA folder's matrices stored as float32, float16, bfloat16 or int8, and back.

float16 / bfloat16 keep PEFT's file (`adapter_model.safetensors`, same keys): plain PEFT reads it as is. int8
goes to another file, `adapter_model.int8.safetensors`, in its place: PEFT would copy int8 values into float
parameters without a word, so with PEFT's file gone it fails loudly instead. `--dtype float32` dequantizes
an int8 folder back into the file PEFT reads.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ...atomic import atomic_file
from ...errors import AdapterError
from ...safetensors_header import SAFETENSORS_DTYPES
from ..base import PEFT_CONFIG, PEFT_INT8_WEIGHTS, PEFT_WEIGHTS, refuse_non_finite
from ..storage import FLOAT_STORAGE, cast_floats
from .config import int8_matrices, lora_weights_file, read_lora_header
from .weights import INT8_METADATA, INT8_SCALE, LORA_KEY, dequantize_matrix, is_down

STORAGE_DTYPES = {**FLOAT_STORAGE, "int8": torch.int8}


def quantize_lora_folder(folder: Path, dtype: str) -> None:
    """Rewrite the LoRA weights of a PEFT LoRA folder in storage `dtype`, in place (the new file written atomically;
    a float file replaced by an int8 one, or back, is removed only once its successor is complete)."""
    if dtype not in STORAGE_DTYPES:
        raise AdapterError(f"unknown storage dtype {dtype!r}; use one of: {', '.join(STORAGE_DTYPES)}.")
    _check_lora_config(folder)
    source = lora_weights_file(folder)
    if stored_dtype(source) == dtype:
        return  # already so: re-rounding int8 values could only drift
    matrices = read_float_matrices(source)
    if dtype == "int8":
        target, tensors, metadata = folder / PEFT_INT8_WEIGHTS, quantize_int8(matrices), INT8_METADATA
    else:
        target, metadata = folder / PEFT_WEIGHTS, {}
        tensors = cast_floats(matrices, dtype, source, "bfloat16 or int8")
    with atomic_file(target) as staging:
        save_file(tensors, str(staging), metadata={"format": "pt", **metadata})  # "format": as PEFT writes it
    if source != target:
        source.unlink()


def stored_dtype(weights_file: Path) -> str | None:
    """The storage dtype of a LoRA weights file (STORAGE_DTYPES' names), None for a float file of mixed dtypes."""
    if weights_file.name == PEFT_INT8_WEIGHTS:
        return "int8"
    names = {SAFETENSORS_DTYPES.get(e.dtype) for e in read_lora_header(weights_file).tensors.values()}
    found = next(iter(names)) if len(names) == 1 else None
    return next((name for name, dtype in STORAGE_DTYPES.items() if dtype == found), None)


def read_float_matrices(weights_file: Path) -> dict[str, torch.Tensor]:
    """The LoRA matrices of a weights file by PEFT key, as float32 (an int8 file's dequantized); AdapterError when
    it holds anything else or non-finite values."""
    header = read_lora_header(weights_file)
    try:
        tensors = load_file(str(weights_file))
    except (OSError, SafetensorError) as exc:
        raise AdapterError(f"{weights_file} could not be read ({exc}); re-download or retrain it.") from None
    if weights_file.name == PEFT_INT8_WEIGHTS:
        int8_matrices(weights_file, header)  # metadata, every scale present and of its matrix's shape
        tensors = dequantize(tensors)
    for key, tensor in tensors.items():
        if not (LORA_KEY.fullmatch(key) and tensor.is_floating_point() and tensor.dim() == 2):
            raise AdapterError(f"{weights_file}: tensor {key} ({tensor.dtype}, shape {list(tensor.shape)}) is not a "
                               "float LoRA matrix (lora_A / lora_B); only LoRA folders the hub serves are quantized.")
    refuse_non_finite(weights_file, tensors)
    return {key: tensor.float() for key, tensor in tensors.items()}


def quantize_int8(matrices: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Symmetric int8 with an absmax scale per rank channel: each row of A [r, in] and each column of B [out, r]
    gets its own. The update B A is a sum of r rank-one terms (column j of B times row j of A) whose sizes differ
    (B starts at zero and trains), so one scale per tensor would spend its bits on the largest term; a scale per
    row of B instead would cost as many floats as B has rows, 50% of an r=4 int8 file, for a product error of 0.6%
    instead of 0.8% on the shipped adapters. Dequantizing is one broadcast multiply.

    Scales are float32 (2r floats per layer): float16 would turn small scales into subnormals (coarse, or zero);
    as stored they keep each value within scale / 2 of the original."""
    quantized = {}
    for key, matrix in matrices.items():
        rows = is_down(key)
        scale = matrix.abs().amax(dim=1 if rows else 0) / 127
        divisor = torch.where(scale > 0, scale, 1.0).unsqueeze(1 if rows else 0)  # an all-zero channel stays zero
        quantized[key] = torch.round(matrix / divisor).clamp(-127, 127).to(torch.int8)
        quantized[key + INT8_SCALE] = scale.float().contiguous()
    return quantized


def dequantize(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An int8 file's tensors (matrices + `<key>_scale`) as float32 matrices by PEFT key: what is served, before
    LoRA's scaling (the inverse of `quantize_int8` up to rounding)."""
    return {key: dequantize_matrix(tensor, tensors[key + INT8_SCALE], torch.float32, is_down(key))
            for key, tensor in tensors.items() if not key.endswith(INT8_SCALE)}


def _check_lora_config(folder: Path) -> None:
    """Only LoRA folders are quantized: other methods' loaders read PEFT's float file alone."""
    try:
        peft_type = json.loads((folder / PEFT_CONFIG).read_text(encoding="utf-8")).get("peft_type")
    except (OSError, ValueError, AttributeError) as exc:
        raise AdapterError(f"{folder / PEFT_CONFIG} is not a readable PEFT config ({exc}); retrain or re-download the "
                           "adapter.") from None
    if peft_type != "LORA":
        raise AdapterError(f"{folder} holds a {peft_type} adapter; only LoRA adapters are quantized.")
