"""The quantized LoRA file (`hub quantize --dtype int8|int4`): every matrix in ONE values tensor, every rank scale in
ONE scales tensor, and the layers listed once in the metadata.

Why not PEFT's layout (a tensor per matrix, plus one per scale)? A safetensors header entry costs ~130 bytes, and
LoRA on every linear layer of a 6-layer BERT has 72 matrices and 72 scale vectors: ~18 KB of header, a tenth of
what a task may store (0.2% of the backbone). Listed once, the layers cost ~2 KB. PEFT reads neither layout's
integers as weights, so nothing is lost: `hub quantize TASK --dtype float32` writes the file PEFT reads.

Layout (`quantization` and `lora_layers` in the safetensors metadata):
- `lora_layers`: JSON list of [module path, rank, in_features, out_features], in storage order;
- `values`: per layer A [rank, in] then B [out, rank], row-major, each quantized to a symmetric integer
  `round(w / scale)`; int8 as I8, int4 as U8 holding two values per byte (low nibble first, two's complement),
  every matrix padded to an even count so that each starts on a byte;
- `scales`: float32, per layer A's rank channels (its rows) then B's (its columns): w = value x scale.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ...absmax import dequantize_absmax, quantize_absmax
from ...atomic import atomic_file
from ...errors import AdapterError
from ...safetensors_header import SafetensorsHeader

QUANTIZATIONS = {"int8": "int8-per-rank-absmax", "int4": "int4-per-rank-absmax"}  # storage dtype -> metadata
LEVELS = {"int8": 127, "int4": 7}  # symmetric: -LEVELS..LEVELS (int4 never uses -8, so 0 stays exact)
VALUES_DTYPE = {"int8": ("I8", torch.int8), "int4": ("U8", torch.uint8)}
REQUANTIZE = "re-quantize it from the float adapter with `hub quantize TASK --dtype int8` (or int4), or retrain it"


@dataclass(frozen=True)
class LoraLayer:
    """One targeted layer: A is [rank, in_features], B [out_features, rank]."""

    path: str
    rank: int
    in_features: int
    out_features: int


@dataclass(frozen=True)
class QuantizedLayout:
    """Where every layer's values and rank scales lie in a quantized file's two tensors (element offsets; an int4
    element is half a byte)."""

    dtype: str  # "int8" or "int4"
    layers: tuple[LoraLayer, ...]

    def offsets(self) -> Iterator[tuple[LoraLayer, int, int, int]]:
        """(layer, A's value offset, B's value offset, A's scale offset; B's scales follow A's)."""
        value = scale = 0
        for layer in self.layers:
            down = value
            value += self.padded(layer.rank * layer.in_features)
            up = value
            value += self.padded(layer.out_features * layer.rank)
            yield layer, down, up, scale
            scale += 2 * layer.rank

    @property
    def value_count(self) -> int:
        return sum(self.padded(la.rank * la.in_features) + self.padded(la.out_features * la.rank)
                   for la in self.layers)

    @property
    def scale_count(self) -> int:
        return sum(2 * layer.rank for layer in self.layers)

    def padded(self, count: int) -> int:
        return count + count % 2 if self.dtype == "int4" else count


def pack_int4(values: torch.Tensor) -> torch.Tensor:
    """Integers in [-8, 7] (even count) as bytes, two per byte, low nibble first."""
    nibbles = values.to(torch.uint8).bitwise_and(0xF).reshape(-1, 2)
    return nibbles[:, 0].bitwise_or(nibbles[:, 1].bitwise_left_shift(4))


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """`pack_int4`'s bytes [..., n] back as int8 values [..., 2n] (arithmetic shifts restore the sign)."""
    signed = packed.view(torch.int8)
    low = signed.bitwise_left_shift(4).bitwise_right_shift(4)
    high = signed.bitwise_right_shift(4)
    return torch.stack((low, high), dim=-1).flatten(-2)


def matrix_at(buffer: torch.Tensor, start: int, rows: int, columns: int) -> torch.Tensor:
    """The [..., rows, columns] matrix at element offset `start` of `buffer`'s last dimension (one adapter's buffer,
    or several stacked): a view, except for an int4 buffer (uint8, two per byte), whose values come back as int8."""
    count = rows * columns
    if buffer.dtype == torch.uint8:
        flat = unpack_int4(buffer[..., start // 2:(start + count + 1) // 2])[..., :count]
    else:
        flat = buffer[..., start:start + count]
    return flat.reshape(*buffer.shape[:-1], rows, columns)


def write_quantized(path: Path, matrices: dict[str, tuple[torch.Tensor, torch.Tensor]], dtype: str) -> None:
    """Write float matrices by module path, (A [r, in], B [out, r]), as a quantized file (atomically)."""
    layers = tuple(LoraLayer(path, down.shape[0], down.shape[1], up.shape[0])
                   for path, (down, up) in sorted(matrices.items()))
    layout = QuantizedLayout(dtype, layers)
    values, scales = [], []
    for layer in layers:
        for matrix, rows in zip(matrices[layer.path], (True, False)):
            quantized, scale = quantize_absmax(matrix, LEVELS[dtype], rows)
            flat = quantized.reshape(-1)
            if layout.padded(flat.numel()) != flat.numel():
                flat = torch.cat((flat, flat.new_zeros(1)))
            values.append(flat)
            scales.append(scale)
    stored = torch.cat(values)
    tensors = {"values": pack_int4(stored) if dtype == "int4" else stored, "scales": torch.cat(scales)}
    metadata = {"format": "pt", "quantization": QUANTIZATIONS[dtype],
                "lora_layers": json.dumps([[la.path, la.rank, la.in_features, la.out_features] for la in layers],
                                          separators=(",", ":"))}
    with atomic_file(path) as staging:
        save_file(tensors, str(staging), metadata=metadata)


def read_layout(path: Path, header: SafetensorsHeader) -> QuantizedLayout:
    """A quantized file's layout, once its metadata and both tensors are checked against each other."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (OSError, SafetensorError) as exc:
        raise AdapterError(f"{path} is not a readable safetensors file ({exc}); re-download or retrain it.") from None
    dtype = next((name for name, value in QUANTIZATIONS.items() if metadata.get("quantization") == value), None)
    if dtype is None:
        raise AdapterError(f"{path}: its metadata records quantization {metadata.get('quantization')!r}, but this hub "
                           f"reads {' or '.join(map(repr, QUANTIZATIONS.values()))} only; {REQUANTIZE}.")
    try:
        raw = json.loads(metadata.get("lora_layers", ""))
        layers = tuple(LoraLayer(str(p), int(r), int(i), int(o)) for p, r, i, o in raw)
    except (ValueError, TypeError):
        raise AdapterError(f"{path}: its metadata's lora_layers is not a list of [module path, rank, in_features, "
                           f"out_features]; {REQUANTIZE}.") from None
    if not layers or any(min(la.rank, la.in_features, la.out_features) < 1 for la in layers):
        raise AdapterError(f"{path}: its metadata's lora_layers lists no layer or a size below 1; {REQUANTIZE}.")
    if len({la.path for la in layers}) != len(layers):
        raise AdapterError(f"{path}: its metadata's lora_layers lists a layer twice; {REQUANTIZE}.")
    layout = QuantizedLayout(dtype, layers)
    name, _ = VALUES_DTYPE[dtype]
    count = layout.value_count // 2 if dtype == "int4" else layout.value_count
    expected = {"values": (name, (count,)), "scales": ("F32", (layout.scale_count,))}
    if set(header.tensors) != set(expected):
        raise AdapterError(f"{path}: holds tensors {sorted(header.tensors)}, a quantized LoRA file holds exactly "
                           f"'scales' and 'values'; {REQUANTIZE}.")
    for key, (want_dtype, want_shape) in expected.items():
        entry = header.tensors[key]
        if (entry.dtype, entry.shape) != (want_dtype, want_shape):
            raise AdapterError(f"{path}: tensor {key} is {entry.dtype} of shape {list(entry.shape)}, but its "
                               f"lora_layers need {want_dtype} of shape {list(want_shape)}; {REQUANTIZE}.")
    return layout


def read_quantized(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """A checked quantized file's values (as stored: int8, or int4 packed in uint8) and float32 scales."""
    with safe_open(str(path), framework="pt") as handle:
        return handle.get_tensor("values"), handle.get_tensor("scales")


def dequantized_matrices(path: Path, layout: QuantizedLayout) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Every layer's float32 (A, B) as stored (before LoRA's scaling), by module path."""
    values, scales = read_quantized(path)
    matrices = {}
    for layer, down, up, scale in layout.offsets():
        r = layer.rank
        a = matrix_at(values, down, r, layer.in_features)
        b = matrix_at(values, up, layer.out_features, r)
        matrices[layer.path] = (dequantize_absmax(a, scales[scale:scale + r], torch.float32, rows=True),
                                dequantize_absmax(b, scales[scale + r:scale + 2 * r], torch.float32, rows=False))
    return matrices
