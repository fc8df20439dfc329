"""Small per-layer tensors of one adapter (IA3's scaling vectors, VeRA's lambdas): read, checked, kept in ONE buffer."""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch
from safetensors.torch import load_file

from ..errors import AdapterError
from .base import refuse_non_finite

_FLOATS = (torch.float64, torch.float32, torch.float16, torch.bfloat16)


@dataclass(eq=False, frozen=True, slots=True)
class PackedTensors:
    """Named tensors in one buffer: two objects per adapter whatever its layer count (a thousand resident adapters
    would otherwise give the garbage collector's full scans tens of tensors each to walk)."""

    buffer: torch.Tensor
    places: Mapping[str, tuple[int, tuple[int, ...]]]  # key -> (element offset, shape)

    @classmethod
    def pack(cls, tensors: Mapping[str, torch.Tensor], dtype: torch.dtype) -> PackedTensors:
        """`tensors` in one buffer, kept as stored unless `dtype` (what is served) is narrower (`kept_dtype`)."""
        stored = max((t.dtype for t in tensors.values()), key=lambda d: d.itemsize, default=dtype)
        dtype = kept_dtype(stored, dtype)
        places, start = {}, 0
        for key, tensor in tensors.items():
            places[key] = (start, tuple(tensor.shape))
            start += tensor.numel()
        flat = [t.detach().reshape(-1).to(dtype) for t in tensors.values()]
        return cls(torch.cat(flat) if flat else torch.empty(0, dtype=dtype), interned(places))

    def __getitem__(self, key: str) -> torch.Tensor:
        start, shape = self.places[key]
        return self.buffer[start:start + math.prod(shape)].view(shape)

    @property
    def nbytes(self) -> int:
        return self.buffer.numel() * self.buffer.element_size()

    def to(self, device: torch.device, dtype: torch.dtype) -> PackedTensors:
        """On `device`, for serving in `dtype` (kept as it is unless `dtype` is narrower; the hooks cast per pass)."""
        dtype = kept_dtype(self.buffer.dtype, dtype)
        if self.buffer.device == device and self.buffer.dtype == dtype:
            return self
        return PackedTensors(self.buffer.to(device, dtype), self.places)


_INTERNED: dict[object, object] = {}
Shared = TypeVar("Shared", bound=Hashable | Mapping)


def interned(value: Shared) -> Shared:
    """One object for every adapter of the same shape (its table of places, its set of paths): a thousand resident
    adapters then add no per-layer objects for the garbage collector's full scans to walk (see LoraLayout)."""
    key = tuple(sorted(value.items())) if isinstance(value, Mapping) else value
    return _INTERNED.setdefault(key, value)  # type: ignore[return-value]


def kept_dtype(stored: torch.dtype, served: torch.dtype) -> torch.dtype:
    """What a small adapter's tensors are kept in: as stored, unless serving is narrower. A float16 file served in
    float32 stays float16 in memory (its bytes on disk, not twice them); the hooks cast it in the pass."""
    return served if served.itemsize < stored.itemsize else stored


def read_float_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file, refused with AdapterError unless it is readable, non-empty, of a float type
    and finite."""
    try:
        tensors = load_file(str(path))
    except FileNotFoundError:
        raise AdapterError(f"{path} does not exist; re-download or retrain the adapter.") from None
    except Exception as exc:  # safetensors raises its own SafetensorError for malformed files
        raise AdapterError(f"{path} is not a readable safetensors file ({exc}); re-download or retrain it.") from None
    if not tensors:
        raise AdapterError(f"{path} holds no tensors; retrain the adapter.")
    for key, tensor in tensors.items():
        if tensor.dtype not in _FLOATS:
            raise AdapterError(f"{path}: tensor {key} is stored as {tensor.dtype}, not a float type; retrain the "
                               "adapter.")
    refuse_non_finite(path, tensors)
    return tensors


def refuse_options(folder: Path, config: Mapping[str, object], unserved: tuple[str, ...], method: str) -> None:
    """Options of a PEFT config that the per-row hook does not apply: refuse the folder, naming them."""
    found = [key for key in unserved if config.get(key)]
    if found:
        raise AdapterError(f"{folder}: {method} option(s) {', '.join(found)} are not served (the batched router "
                           f"applies plain {method} only); retrain without them (`hub train` does).")
