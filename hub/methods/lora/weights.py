"""One LoRA adapter's matrices as served: all in one buffer, the scaling folded into B."""

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

from ...safetensors_header import SAFETENSORS_DTYPES, SafetensorsHeader

LORA_KEY = re.compile(r"base_model\.model\.(.+)\.lora_([AB])\.weight")


class LoraSlot(NamedTuple):
    """Where one layer's matrices lie in an adapter's buffer (element offsets): A [rank, in], B [out, rank]."""

    down_start: int
    up_start: int
    rank: int
    in_features: int
    out_features: int


@dataclass(eq=False, frozen=True, slots=True)
class LoraLayout:
    """The slots of every layer an adapter targets; adapters of the same shape share one (see `_shared_layout`)."""

    slots: dict[str, LoraSlot]  # backbone module path -> slot


_LAYOUTS: dict[tuple, LoraLayout] = {}


def _shared_layout(slots: dict[str, LoraSlot]) -> LoraLayout:
    """One LoraLayout object per distinct shape, whatever the number of adapters having it."""
    return _LAYOUTS.setdefault(tuple(sorted(slots.items())), LoraLayout(slots))


@dataclass(eq=False, frozen=True, slots=True)
class LoraWeights:
    """One adapter's LoRA matrices, all in ONE buffer: down = A [r, in], up = B x scaling [out, r] per layer.

    Only two objects per adapter (this and the buffer; the layout is shared), not a tensor per matrix:
    with a thousand resident adapters, the garbage collector's full scans would otherwise walk ~70
    tensors per adapter (every linear layer targeted), and those pauses landed in loads and requests.
    The matrices are views made when a pass needs them.
    """

    method: ClassVar[str] = "lora"
    name: str
    buffer: torch.Tensor
    layout: LoraLayout

    @property
    def paths(self) -> KeysView[str]:
        """The backbone module paths this adapter updates."""
        return self.layout.slots.keys()

    def down(self, path: str) -> torch.Tensor:
        slot = self.layout.slots[path]
        return self.buffer.as_strided((slot.rank, slot.in_features), (slot.in_features, 1),
                                      self.buffer.storage_offset() + slot.down_start)

    def up(self, path: str) -> torch.Tensor:
        slot = self.layout.slots[path]
        return self.buffer.as_strided((slot.out_features, slot.rank), (slot.rank, 1),
                                      self.buffer.storage_offset() + slot.up_start)

    @property
    def nbytes(self) -> int:
        return self.buffer.numel() * self.buffer.element_size()

    def to(self, device: torch.device, dtype: torch.dtype | None = None) -> LoraWeights:
        """The same adapter with its buffer on `device` in `dtype` (one copy of one buffer; itself if already so)."""
        dtype = dtype or self.buffer.dtype
        if self.buffer.device == device and self.buffer.dtype == dtype:
            return self
        return LoraWeights(self.name, self.buffer.to(device, dtype), self.layout)


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
    buffer in one call instead of tensor by tensor (one copy, no per-tensor allocations).
    """
    entries = sorted(header.tensors.items(), key=lambda item: item[1].begin)
    width = dtype.itemsize
    buffer = torch.empty(sum(math.prod(e.shape) for _, e in entries), dtype=dtype)
    packed = (sys.byteorder == "little" and all(SAFETENSORS_DTYPES.get(e.dtype) == dtype for _, e in entries)
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
    halves: dict[str, dict[str, tuple[int, tuple[int, ...]]]] = {}
    for key, entry in entries:
        match = LORA_KEY.fullmatch(key)
        assert match is not None  # check_lora refused every other key
        path, which = match.groups()
        halves.setdefault(path, {})[which] = (starts[key], entry.shape)
    slots = {}
    for path, half in halves.items():
        (down_start, (rank, in_features)), (up_start, (out_features, _)) = half["A"], half["B"]
        slots[path] = LoraSlot(down_start, up_start, rank, in_features, out_features)
        buffer[up_start:up_start + out_features * rank].mul_(lora_scaling(config, path, rank))
    return LoraWeights(name, buffer, _shared_layout(slots))
