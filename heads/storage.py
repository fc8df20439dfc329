"""How a head's weights file stores its tensors: float32, float16, or int8 with a float32 absmax scale per row.

int8 is for heads whose output layer is most of a task's bytes (Chinese POS: 177 tags x 512 hidden). Each float
tensor is stored as int8 values plus a scale per row (dim 0: one per output unit of a Linear weight, one for a
vector), named `<tensor>` + SCALE_SUFFIX; the file's metadata names the layout. Per row, not per tensor: output
units of a trained head differ in norm by an order of magnitude, and one scale would round the small ones away.
The integers are hub/absmax.py's, the layout LoRA files use (bitsandbytes, the library one would reach for, needs
a GPU for int8 matmuls).
`Head.load` dequantizes to float32, so what is served is exactly what `dequantized` returns; a served head keeps
its Linear weights as stored and widens them in each pass (heads/resident.py), to the same values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch

from hub.absmax import dequantize_absmax, quantize_absmax

HeadStorage = Literal["float32", "float16", "int8"]
HEAD_STORAGE: tuple[HeadStorage, ...] = ("float32", "float16", "int8")
INT8_LAYOUT = "int8-per-row-absmax"  # the weights file's `storage` metadata when it holds int8 tensors
SCALE_SUFFIX = ".int8_scale"


class HeadStorageError(ValueError):
    """A head weights file whose int8 tensors and scales do not fit together (the message names the tensor)."""


def stored_tensors(state: dict[str, torch.Tensor],
                   storage: HeadStorage) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and metadata a weights file holds for `state` in `storage` (integer tensors stay as they are)."""
    tensors: dict[str, torch.Tensor] = {}
    for name, value in state.items():
        value = value.detach().cpu()
        if not value.is_floating_point() or storage == "float32":
            tensors[name] = value.float() if value.is_floating_point() else value
        elif storage == "float16":
            tensors[name] = value.to(torch.float16)
        else:
            tensors[name], tensors[name + SCALE_SUFFIX] = quantize_rows(value.float())
    metadata = {"storage": INT8_LAYOUT} if storage == "int8" else {}
    return {name: tensor.contiguous() for name, tensor in tensors.items()}, metadata


def quantize_rows(value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """int8 values and a float32 scale per row (a vector is one row): value ~= int8 * scale; an all-zero row keeps
    scale 0."""
    values, scale = quantize_absmax(value.reshape(_rows(value), -1), 127, rows=True)
    return values.reshape(value.shape), scale


def _rows(value: torch.Tensor) -> int:
    return value.shape[0] if value.dim() > 1 else 1


def dequantized(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None) -> dict[str, torch.Tensor]:
    """The float32 state a weights file holds (int8 tensors times their row scales); a layout that does not fit
    together raises HeadStorageError naming the tensor."""
    layout = (metadata or {}).get("storage")
    int8 = {name for name, tensor in tensors.items() if tensor.dtype == torch.int8}
    scales = {name[: -len(SCALE_SUFFIX)] for name in tensors if name.endswith(SCALE_SUFFIX)}
    if (int8 or scales) and layout != INT8_LAYOUT:
        raise HeadStorageError(f"int8 tensors without the file's storage metadata {INT8_LAYOUT!r}: "
                               f"{sorted(int8 | scales)[:3]}")
    if int8 != scales:
        raise HeadStorageError(f"int8 tensors and scales do not pair up: {sorted(int8 ^ scales)[:3]}")
    state = {name: tensor.float() if tensor.is_floating_point() else tensor
             for name, tensor in tensors.items() if name not in int8 and not name.endswith(SCALE_SUFFIX)}
    for name in sorted(int8):
        values, scale = tensors[name], tensors[name + SCALE_SUFFIX]
        rows = _rows(values)
        if scale.dtype != torch.float32 or scale.shape != (rows,):
            raise HeadStorageError(f"{name!r}: its scale must be float32 of shape ({rows},), one per row; it is "
                                   f"{str(scale.dtype).removeprefix('torch.')} {tuple(scale.shape)}")
        if not torch.isfinite(scale).all() or (scale < 0).any():
            raise HeadStorageError(f"{name!r}: its scales must be finite and not negative")
        state[name] = widened(values, scale)
    return state


def widened(values: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
    """The float32 tensor stored as `values` (float16, or int8 times `scale`, one per row): what `Head.load` holds
    and what a served head's kept-as-stored weight (heads/resident.py) computes in each pass, bit for bit."""
    if scale is None:
        return values.float()
    return dequantize_absmax(values.reshape(_rows(values), -1), scale, torch.float32, rows=True).reshape(values.shape)


def stored_storage(path: Path) -> HeadStorage:
    """How a head weights file is stored: int8 by its metadata, float16 when every tensor is, else float32."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as weights:
        if (weights.metadata() or {}).get("storage") == INT8_LAYOUT:
            return "int8"
        dtypes = {str(weights.get_slice(key).get_dtype()) for key in weights.keys()}
    return "float16" if dtypes == {"F16"} else "float32"
