"""One LoRA adapter's matrices as served: all in one buffer, the scaling folded into B (or into B's rank scales)."""

from __future__ import annotations

import math
import re
import sys
from collections.abc import KeysView
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import torch
from safetensors import safe_open

from ...absmax import dequantize_absmax
from ...safetensors_header import SAFETENSORS_DTYPES, SafetensorsHeader, TensorEntry
from ..packed import kept_dtype
from .quantized_file import QuantizedLayout, matrix_at, read_quantized, unpack_int4

LORA_KEY = re.compile(r"base_model\.model\.(.+)\.lora_([AB])\.weight")


def lora_key(path: str, which: str) -> str:
    """PEFT's tensor key of a module's A or B matrix (what LORA_KEY reads back)."""
    return f"base_model.model.{path}.lora_{which}.weight"



class LoraSlot(NamedTuple):
    """Where one layer's matrices lie in an adapter's buffer (element offsets): A [rank, in], B [out, rank]."""

    down_start: int
    up_start: int
    rank: int
    in_features: int
    out_features: int
    down_scale_start: int = -1  # quantized / narrow adapters: where A's rank scales, then B's, start in `scales`
    up_scale_start: int = -1


@dataclass(eq=False, frozen=True, slots=True)
class LoraLayout:
    """The slots of every layer an adapter targets; adapters of the same shape share one (see `_shared_layout`)."""

    slots: dict[str, LoraSlot]  # backbone module path -> slot


_LAYOUTS: dict[tuple, LoraLayout] = {}


def _shared_layout(slots: dict[str, LoraSlot]) -> LoraLayout:
    """One LoraLayout object per distinct shape, whatever the number of adapters having it."""
    return _LAYOUTS.setdefault(tuple(sorted(slots.items())), LoraLayout(slots))


_SCALE_INDEX: dict[tuple[LoraLayout, int, torch.device], torch.Tensor] = {}


def _scale_index(layout: LoraLayout, count: int, device: torch.device) -> torch.Tensor:
    """For each of the `count` values of an adapter's buffer with this layout, the position of its rank scale in
    `scales` (A: its row's, B: its column's; padding: 0). One per layout and device, shared by every adapter of that
    shape (int32: 4 bytes per value, once, not per adapter)."""
    key = (layout, count, device)
    index = _SCALE_INDEX.get(key)
    if index is None:
        index = torch.zeros(count, dtype=torch.int32)
        for slot in layout.slots.values():
            rank = torch.arange(slot.rank, dtype=torch.int32)
            down = rank.repeat_interleave(slot.in_features) + slot.down_scale_start
            up = rank.repeat(slot.out_features) + slot.up_scale_start
            index[slot.down_start:slot.down_start + down.numel()] = down
            index[slot.up_start:slot.up_start + up.numel()] = up
        index = _SCALE_INDEX.setdefault(key, index.to(device))
    return index


@dataclass(eq=False, frozen=True, slots=True)
class LoraWeights:
    """One adapter's LoRA matrices, all in ONE buffer: down = A [r, in], up = B x scaling [out, r] per layer.

    Only two objects per adapter (this and the buffer; the layout is shared), not a tensor per matrix:
    with a thousand resident adapters, the garbage collector's full scans would otherwise walk ~70
    tensors per adapter (every linear layer targeted), and those pauses landed in loads and requests.
    The matrices are views made when a pass needs them.

    An int8 or int4 adapter (`hub quantize`), or a float16 / bfloat16 file served in float32, stays as stored in
    memory, at its bytes on disk: `scales` holds a float32 scale per rank channel of each matrix (A's rows, B's
    columns; B's with the scaling folded in), and `down`/`up` widen into `served_dtype` on each call. An int4 buffer
    is uint8, two values per byte (quantized_file.py), every matrix starting on a byte.
    """

    method: ClassVar[str] = "lora"
    name: str
    buffer: torch.Tensor
    layout: LoraLayout
    scales: torch.Tensor | None = None
    served_dtype: torch.dtype | None = None  # with scales: what down/up return (else the buffer's dtype)

    @property
    def paths(self) -> KeysView[str]:
        """The backbone module paths this adapter updates."""
        return self.layout.slots.keys()

    @property
    def dtype(self) -> torch.dtype:
        """What `down` and `up` return."""
        return self.served_dtype or self.buffer.dtype

    def down(self, path: str) -> torch.Tensor:
        slot = self.layout.slots[path]
        matrix = matrix_at(self.buffer, slot.down_start, slot.rank, slot.in_features)
        return self._served(matrix, slot.down_scale_start, rows=True)

    def up(self, path: str) -> torch.Tensor:
        slot = self.layout.slots[path]
        matrix = matrix_at(self.buffer, slot.up_start, slot.out_features, slot.rank)
        return self._served(matrix, slot.up_scale_start, rows=False)

    def _served(self, matrix: torch.Tensor, scale_start: int, rows: bool) -> torch.Tensor:
        if self.scales is None:
            return matrix
        rank = matrix.shape[0 if rows else 1]
        return dequantize_absmax(matrix, self.scales[scale_start:scale_start + rank], self.dtype, rows)

    def widened(self) -> LoraWeights:
        """This adapter with every matrix dequantized into `dtype` in one float buffer (itself when not narrow): the
        same values `down`/`up` return, in a handful of whole-buffer operations instead of about ten small ones per
        matrix (72 matrices for every linear layer of MiniLM). A pass's working copy, dropped after the pass."""
        if self.scales is None:
            return self
        values = unpack_int4(self.buffer) if self.buffer.dtype == torch.uint8 else self.buffer
        index = _scale_index(self.layout, values.numel(), values.device)
        buffer = (values.to(self.scales.dtype) * self.scales.index_select(0, index)).to(self.dtype)
        return LoraWeights(self.name, buffer, self.layout)

    @property
    def nbytes(self) -> int:
        scales = 0 if self.scales is None else self.scales.numel() * self.scales.element_size()
        return self.buffer.numel() * self.buffer.element_size() + scales

    def to(self, device: torch.device, dtype: torch.dtype | None = None) -> LoraWeights:
        """The same adapter on `device`, served in `dtype` (one copy of one buffer; itself if already so). A
        quantized buffer stays so: `dtype` is what its matrices dequantize into."""
        dtype = dtype or self.dtype
        if self.buffer.device == device and self.dtype == dtype:
            return self
        if self.scales is None:
            return LoraWeights(self.name, self.buffer.to(device, dtype), self.layout)
        return LoraWeights(self.name, self.buffer.to(device), self.layout, self.scales.to(device), dtype)


def is_down(key: str) -> bool:
    """Whether a LoRA tensor key names an A (down) matrix, whose rank channels are its rows (B's are its columns)."""
    return ".lora_A." in key


def lora_weights_from_matrices(name: str, matrices: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> LoraWeights:
    """An adapter from in-memory matrices by module path: (A [r, in], B already scaled [out, r]), copied into one
    buffer."""
    flat = [t.detach().reshape(-1) for pair in matrices.values() for t in pair]
    buffer = torch.cat(flat) if flat else torch.empty(0)
    slots, start = {}, 0
    for path, (down, up) in matrices.items():
        slots[path] = LoraSlot(start, start + down.numel(), down.shape[0], down.shape[1], up.shape[0])
        start += down.numel() + up.numel()
    return LoraWeights(name, buffer, _shared_layout(slots))


def pattern_value(patterns: dict[str, Any], module_path: str, default: Any) -> Any:
    """PEFT's rank_pattern / alpha_pattern rule: the first key that matches the end of the module path."""
    for key, value in patterns.items():
        if re.fullmatch(rf"(.*\.)?{key}", module_path):
            return value
    return default


def lora_scaling(config: dict[str, Any], module_path: str, rank: int) -> float:
    """alpha / r (or alpha / sqrt(r) with rsLoRA), with the config's per-module alpha if it has one."""
    alpha = pattern_value(config.get("alpha_pattern") or {}, module_path, config.get("lora_alpha", 8))
    return alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank


def read_lora_weights(name: str, weights_file: Path, config: dict[str, Any], dtype: torch.dtype,
                      header: SafetensorsHeader) -> LoraWeights:
    """The matrices of a checked PEFT LoRA file (see config.check_lora), ready to serve.

    All of them live in ONE buffer (LoraWeights): a resident adapter costs its bytes on disk and one
    allocation, which goes back to the system whole when the adapter is evicted. When the file already
    holds `dtype`, little-endian and packed (as PEFT writes it), the data section is read into the
    buffer in one call instead of tensor by tensor (one copy, no per-tensor allocations). A file narrower than
    `dtype` (float16 served in float32) stays as stored, its scaling in a scale per rank channel, as a quantized
    file's: in memory it costs its bytes on disk, not twice them, and the pass widens what it uses.
    """
    entries = sorted(header.tensors.items(), key=lambda item: item[1].begin)
    stored = {SAFETENSORS_DTYPES[e.dtype] for _, e in entries}
    kept = kept_dtype(stored.pop(), dtype) if len(stored) == 1 else dtype
    width = kept.itemsize
    buffer = torch.empty(sum(math.prod(e.shape) for _, e in entries), dtype=kept)
    packed = (sys.byteorder == "little" and all(SAFETENSORS_DTYPES.get(e.dtype) == kept for _, e in entries)
              and [e.begin for _, e in entries] == [0, *(e.end for _, e in entries[:-1])])
    starts: dict[str, int] = {}  # tensor key -> element offset in the buffer
    if packed:
        with open(weights_file, "rb") as handle:
            handle.seek(header.data_start)
            # numpy's stubs give ndarray its buffer protocol only from Python 3.12
            if handle.readinto(buffer.view(torch.uint8).numpy()) != buffer.numel() * width:  # type: ignore[arg-type]
                raise ValueError(f"{weights_file} is shorter than its header says")
        starts = {key: entry.begin // width for key, entry in entries}
    else:  # another dtype or layout: tensor by tensor through safetensors, converted into the buffer
        offset = 0
        with safe_open(str(weights_file), framework="pt") as weights:
            for key, entry in entries:
                size = math.prod(entry.shape)
                buffer[offset:offset + size].copy_(weights.get_tensor(key).reshape(-1))
                starts[key] = offset
                offset += size
    if kept != dtype:
        return _with_rank_scales(name, buffer, entries, starts, config, dtype)
    slots = _slots(entries, starts)
    for path, slot in slots.items():
        buffer[slot.up_start:slot.up_start + slot.out_features * slot.rank].mul_(lora_scaling(config, path, slot.rank))
    return LoraWeights(name, buffer, _shared_layout(slots))


def _with_rank_scales(name: str, buffer: torch.Tensor, entries: list[tuple[str, TensorEntry]], starts: dict[str, int],
                      config: dict[str, Any], dtype: torch.dtype) -> LoraWeights:
    """A float buffer narrower than `dtype`, kept so: A's rank scales are 1, B's LoRA's scaling (rounding the
    scaling into float16 values would change what is served)."""
    scale_starts, offset = {}, 0
    for key, entry in entries:
        scale_starts[key] = offset
        offset += rank_of(key, entry.shape)
    slots = _slots(entries, starts, scale_starts)
    scales = torch.ones(offset, dtype=torch.float32)
    for path, slot in slots.items():
        scales[slot.up_scale_start:slot.up_scale_start + slot.rank] = lora_scaling(config, path, slot.rank)
    return LoraWeights(name, buffer, _shared_layout(slots), scales, dtype)


def read_quantized_lora_weights(name: str, weights_file: Path, config: dict[str, Any], dtype: torch.dtype,
                                layout: QuantizedLayout) -> LoraWeights:
    """The matrices of a checked quantized LoRA file (config.check_lora), kept as stored: its values tensor is the
    buffer, its scales tensor the rank scales (B's with LoRA's scaling folded in), served in `dtype`."""
    buffer, scales = read_quantized(weights_file)
    slots = {layer.path: LoraSlot(down, up, layer.rank, layer.in_features, layer.out_features, scale,
                                  scale + layer.rank) for layer, down, up, scale in layout.offsets()}
    for path, slot in slots.items():
        scales[slot.up_scale_start:slot.up_scale_start + slot.rank].mul_(lora_scaling(config, path, slot.rank))
    return LoraWeights(name, buffer, _shared_layout(slots), scales, dtype)


def rank_of(key: str, shape: tuple[int, ...]) -> int:
    """The LoRA rank of a matrix: A's rows, B's columns."""
    return shape[0] if is_down(key) else shape[1]


def _slots(entries: list[tuple[str, TensorEntry]], starts: dict[str, int],
           scale_starts: dict[str, int] | None = None) -> dict[str, LoraSlot]:
    """Each layer's slot from its two matrices' keys and element offsets (and their rank-scale offsets)."""
    halves: dict[str, dict[str, tuple[str, tuple[int, ...]]]] = {}
    for key, entry in entries:
        match = LORA_KEY.fullmatch(key)
        assert match is not None  # check_lora refused every other key
        path, which = match.groups()
        halves.setdefault(path, {})[which] = (key, entry.shape)
    slots = {}
    for path, half in halves.items():
        (down, (rank, in_features)), (up, (out_features, _)) = half["A"], half["B"]
        scaled = () if scale_starts is None else (scale_starts[down], scale_starts[up])
        slots[path] = LoraSlot(starts[down], starts[up], rank, in_features, out_features, *scaled)
    return slots
