"""How an adapter's weights file is stored: float32 as trained, or float16 / bfloat16 for any method (PEFT reads
such files as they are); int8 and int4 are a method's own (LoRA's, hub/methods/lora/quantize.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..atomic import atomic_file
from ..errors import AdapterError
from .base import PEFT_CONFIG, PEFT_WEIGHTS

StorageDtype = Literal["float32", "float16", "bfloat16", "int8", "int4"]  # registry.yaml's train.storage.adapter
FLOAT_STORAGE = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def cast_floats(tensors: dict[str, torch.Tensor], dtype: str, path: Path, instead: str) -> dict[str, torch.Tensor]:
    """Every float tensor in FLOAT_STORAGE[dtype]; AdapterError naming the first one that leaves its range (and the
    storage to use `instead`)."""
    cast = {key: t.to(FLOAT_STORAGE[dtype]) if t.is_floating_point() else t for key, t in tensors.items()}
    overflow = [key for key, t in cast.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if overflow:
        raise AdapterError(f"{path}: tensor {overflow[0]} exceeds the range of {dtype}; store it as {instead} instead.")
    return cast


def cast_weights_file(folder: Path, dtype: str) -> None:
    """Rewrite the folder's adapter weights file with every float tensor in `dtype` (atomically)."""
    if dtype not in FLOAT_STORAGE:
        peft_type = _peft_type(folder)
        raise AdapterError(f"{folder}: a {peft_type} adapter is stored as float32, float16 or bfloat16, not "
                           f"{dtype!r} (int8 and int4 files are LoRA's); choose one of those.")
    path = folder / PEFT_WEIGHTS
    try:
        tensors = load_file(str(path))
    except (OSError, SafetensorError) as exc:
        raise AdapterError(f"{path} could not be read ({exc}); re-download or retrain it.") from None
    cast = cast_floats(tensors, dtype, path, "bfloat16")
    with atomic_file(path) as staging:
        save_file(cast, str(staging), metadata={"format": "pt"})  # "format": as PEFT writes it


def _peft_type(folder: Path) -> str:
    try:
        return str(json.loads((folder / PEFT_CONFIG).read_text(encoding="utf-8")).get("peft_type"))
    except (OSError, ValueError, AttributeError):
        return "non-LoRA"
