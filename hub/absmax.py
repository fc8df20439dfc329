"""Symmetric absmax quantization with a float32 scale per row or per column: the one integer layout of the project's
files (LoRA: int8 / int4 per rank channel, hub/methods/lora/quantized_file.py; heads: int8 per output row,
heads/storage.py). Own code: torch's quantized tensors do not serialise to safetensors, and no library offers this
per-channel layout for arbitrary small tensors on the CPU."""

from __future__ import annotations

import torch


def quantize_absmax(matrix: torch.Tensor, levels: int, rows: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """int8 values in -levels..levels and a float32 scale per row (`rows`) or per column of `matrix` [R, C], so that
    matrix ~= values * scale; an all-zero channel keeps scale 0 and stays exactly zero."""
    scale = matrix.abs().amax(dim=1 if rows else 0).float() / levels
    divisor = torch.where(scale > 0, scale, 1.0).unsqueeze(1 if rows else 0)
    values = torch.round(matrix.float() / divisor).clamp(-levels, levels).to(torch.int8)
    return values, scale.contiguous()


def dequantize_absmax(matrix: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype, rows: bool) -> torch.Tensor:
    """Integer (or narrow float) `matrix` [..., R, C] times its `scales` [..., R] (`rows`) or [..., C], computed in
    the scales' dtype, returned as `dtype`."""
    return (matrix.to(scales.dtype) * scales.unsqueeze(-1 if rows else -2)).to(dtype)
