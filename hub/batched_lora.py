"""Per-row LoRA for mixed-task batches: every row of ONE backbone pass gets its own task's adapter.

Our own code rather than PEFT at serving time, for two measured reasons (benchmarks/serving.py):
PEFT's `adapter_names=` loops over the distinct adapters inside every LoRA layer, and its
`load_adapter` re-walks and re-wraps the model, so the n-th adapter loads slower as adapters accumulate
(PEFT issue #981). Here an adapter is only its matrices, read from the PEFT folder with the scaling
folded into B; forward hooks on the frozen backbone's target linear layers add each row's update with
one batched matmul pair per layer (stack each row's own A and B, two bmm).
Loading is a file read whatever the number of resident adapters, and the backbone's own modules are
never replaced or copied (PEFT can still wrap the same model: the hooks sit on the base linear layers
and act only inside `BatchedLora.rows`).
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Iterator, KeysView, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors import safe_open
from torch import nn

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

    name: str
    buffer: torch.Tensor
    layout: LoraLayout

    @property
    def paths(self) -> KeysView[str]:
        """The backbone module paths this adapter updates."""
        return self.layout.slots.keys()

    def down(self, path: str) -> torch.Tensor:
        slot = self.layout.slots[path]
        return self.buffer.as_strided((slot.rank, slot.in_features), (slot.in_features, 1), self.buffer.storage_offset() + slot.down_start)

    def up(self, path: str) -> torch.Tensor:
        slot = self.layout.slots[path]
        return self.buffer.as_strided((slot.out_features, slot.rank), (slot.rank, 1), self.buffer.storage_offset() + slot.up_start)

    @property
    def nbytes(self) -> int:
        return self.buffer.numel() * self.buffer.element_size()

    def to(self, device: torch.device) -> "LoraWeights":
        """The same adapter with its buffer on `device` (one copy of one buffer; itself if already there)."""
        return self if self.buffer.device == device else LoraWeights(self.name, self.buffer.to(device), self.layout)


def lora_weights_from_matrices(name: str, matrices: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> LoraWeights:
    """An adapter from in-memory matrices by module path: (A [r, in], B already scaled [out, r]), copied into one buffer."""
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
    """The tensor table of a .safetensors file (8-byte length, JSON header, raw data); ValueError if malformed.

    Our own small reader because safetensors' API gives shapes but not byte offsets, and the offsets let
    an adapter load with one read into one buffer (`read_lora_weights`).
    """
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


def read_lora_weights(name: str, weights_file: Path, config: dict[str, Any], dtype: torch.dtype,
                      header: SafetensorsHeader) -> LoraWeights:
    """The matrices of a checked PEFT LoRA file (see hub.adapters.check_lora), ready to serve.

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
            if handle.readinto(buffer.view(torch.uint8).numpy()) != buffer.numel() * width:
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
        path, which = LORA_KEY.fullmatch(key).groups()
        halves.setdefault(path, {})[which] = (starts[key], entry.shape)
    slots = {}
    for path, half in halves.items():
        (down_start, (rank, in_features)), (up_start, (out_features, _)) = half["A"], half["B"]
        slots[path] = LoraSlot(down_start, up_start, rank, in_features, out_features)
        buffer[up_start:up_start + out_features * rank].mul_(lora_scaling(config, path, rank))
    return LoraWeights(name, buffer, _shared_layout(slots))


class _Plan:
    """One forward pass: the batch's distinct adapters and, per row, the position of its own."""

    def __init__(self, adapters: list[LoraWeights | None], positions: list[int], gather: bool | None = None):
        """`gather`: stack + index_select (see below); None chooses by device."""
        self.adapters = adapters
        self.positions = positions  # row -> position in `adapters`
        # Off the CPU, adapters of one shape are stacked once per pass and each layer gathers its rows'
        # matrices with one index_select: a few kernels per layer instead of a Python view per adapter,
        # which made the LoRA step host-bound on a GPU (benchmarks/serving.py --device cuda). On the CPU
        # the per-row stack below stays: it copies each row's matrices right before use, while they are
        # in cache, and stacking every adapter's whole buffer first is an extra copy the CPU pays for.
        first = adapters[0]
        self.stacked: torch.Tensor | None = None
        if gather is None:
            gather = first is not None and first.buffer.device.type != "cpu"
        if gather and all(a is not None and a.layout is first.layout for a in adapters):
            self.stacked = torch.stack([a.buffer for a in adapters])
            self.index = torch.tensor(positions, device=first.buffer.device)

    def matrices(self, path: str, layer: nn.Linear) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Each row's own [rows, r, in] and [rows, out, r] for this layer (zeros where its adapter has no
        such layer); None if no adapter in the pass has it. On the CPU, stacked straight from the rows'
        adapters: one copy per row, never a copy of every distinct adapter first."""
        if self.stacked is not None:
            return self._gathered(path)
        slots = [a.layout.slots.get(path) if a is not None else None for a in self.adapters]
        if not any(slots):
            return None
        rank = max(slot.rank for slot in slots if slot)
        downs, ups = [], []
        for adapter, slot in zip(self.adapters, slots):
            if slot is None:
                downs.append(layer.weight.new_zeros(rank, layer.in_features))
                ups.append(layer.weight.new_zeros(layer.out_features, rank))
                continue
            down, up, pad = adapter.down(path), adapter.up(path), rank - slot.rank  # mixed ranks: zero rows/columns add nothing
            downs.append(nn.functional.pad(down, (0, 0, 0, pad)) if pad else down)
            ups.append(nn.functional.pad(up, (0, pad)) if pad else up)
        return torch.stack([downs[i] for i in self.positions]), torch.stack([ups[i] for i in self.positions])

    def _gathered(self, path: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        """`matrices` when every adapter of the pass has the same layout and sits in `self.stacked`."""
        slot = self.adapters[0].layout.slots.get(path)
        if slot is None:
            return None
        count, width = self.stacked.shape
        offset = self.stacked.storage_offset()
        down = self.stacked.as_strided((count, slot.rank, slot.in_features), (width, slot.in_features, 1), offset + slot.down_start)
        up = self.stacked.as_strided((count, slot.out_features, slot.rank), (width, slot.rank, 1), offset + slot.up_start)
        return down.index_select(0, self.index), up.index_select(0, self.index)


class BatchedLora:
    """Forward hooks on one backbone's LoRA-targeted linear layers; active only inside `rows(...)`.

    The caller serializes passes (Backbone.lock): the plan of the running pass is an attribute.
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self._hooks: dict[str, Any] = {}
        self._layers: dict[str, nn.Linear | None] = {}  # path -> layer, looked up once
        self.hooked_paths: frozenset[str] = frozenset()  # replaced, never mutated: safe to read without the lock
        self._plan: _Plan | None = None

    def target_layer(self, path: str) -> nn.Linear | None:
        """The linear layer at `path` (inside a PEFT wrapper if the model has one), or None."""
        if path not in self._layers:
            try:
                layer = self.model.get_submodule(path)
            except AttributeError:
                return None
            layer = getattr(layer, "base_layer", layer)
            self._layers[path] = layer if isinstance(layer, nn.Linear) else None
        return self._layers[path]

    def prepare(self, adapter: LoraWeights) -> None:
        """Hook the layers `adapter` needs that no earlier adapter did (the caller holds Backbone.lock)."""
        for path in adapter.paths - self.hooked_paths:
            self._hooks[path] = self.target_layer(path).register_forward_hook(self._hook(path))
        self.hooked_paths = frozenset(self._hooks)

    def _hook(self, path: str):
        def add_row_updates(layer: nn.Linear, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
            plan = self._plan
            if plan is None:
                return None
            matrices = plan.matrices(path, layer)
            if matrices is None:
                return None
            down, up = matrices
            x = args[0]
            rows = x.shape[0]
            if rows != len(plan.positions):
                raise RuntimeError(f"BatchedLora: a pass over {rows} rows inside rows() for {len(plan.positions)}")
            # Measured on CPU: batched matmuls over per-row matrices beat a loop over adapters, and even a
            # plain addmm when one adapter serves every row; accumulating into the layer's output in place
            # saves a full pass over it. The down-projection runs as A @ x^T ([r, in] x [in, tokens]): on
            # this CPU 1.5-2x faster than x @ A^T for 16+ tokens (an 8-column output is MKL's worst case)
            # and no slower below.
            low = torch.bmm(down, x.reshape(rows, -1, x.shape[-1]).transpose(1, 2)).transpose(1, 2)
            output.view(rows, -1, output.shape[-1]).baddbmm_(low, up.transpose(1, 2))
            return output

        return add_row_updates

    @contextmanager
    def rows(self, adapters: Sequence[LoraWeights | None]) -> Iterator[None]:
        """Within this block, a pass over len(adapters) rows gives row i the update of adapters[i]."""
        distinct: dict[int, int] = {}
        order: list[LoraWeights | None] = []
        positions = []
        for adapter in adapters:
            key = id(adapter)
            if key not in distinct:
                distinct[key] = len(order)
                order.append(adapter)
            positions.append(distinct[key])
        if all(a is None for a in order):
            yield
            return
        if torch.is_grad_enabled():
            raise RuntimeError("BatchedLora.rows serves inference only (updates are added in place); use torch.inference_mode()")
        self._plan = _Plan(order, positions)
        try:
            yield
        finally:
            self._plan = None
