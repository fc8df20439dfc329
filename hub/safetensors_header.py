"""The tensor table of a .safetensors file with byte offsets, so an adapter method can read its tensors in one call.

Our own small reader because safetensors' API gives shapes but not byte offsets.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a .safetensors file: dtype name, shape, byte range within the data section."""

    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


@dataclass(frozen=True)
class SafetensorsHeader:
    tensors: dict[str, TensorEntry]
    data_start: int  # file offset of the data section


def read_safetensors_header(path: Path) -> SafetensorsHeader:
    """The tensor table of a .safetensors file (8-byte length, JSON header, raw data); ValueError if malformed."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        length = int.from_bytes(prefix, "little") if len(prefix) == 8 else -1
        if not 0 < length <= size - 8:
            raise ValueError("the header length does not fit the file")
        header = json.loads(handle.read(length))
    if not isinstance(header, dict):
        raise ValueError("the header is not a JSON object")
    tensors = {}
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = entry["dtype"], tuple(int(d) for d in entry["shape"]), entry["data_offsets"]
        except (TypeError, KeyError, ValueError):
            raise ValueError(f"tensor {key}: malformed header entry") from None
        width = SAFETENSORS_DTYPES[dtype].itemsize if dtype in SAFETENSORS_DTYPES else None
        if not (isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end <= size - 8 - length):
            raise ValueError(f"tensor {key}: its data lies outside the file")
        if width is not None and end - begin != math.prod(shape) * width:
            raise ValueError(f"tensor {key}: {end - begin} bytes for shape {list(shape)} of {dtype}")
        tensors[key] = TensorEntry(dtype, shape, begin, end)
    return SafetensorsHeader(tensors, 8 + length)
