"""An (IA)3 folder's scaling vectors, checked against the backbone and kept in one buffer."""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from ...errors import AdapterError
from ..base import PEFT_WEIGHTS
from ..packed import PackedTensors, interned, read_float_tensors, refuse_options

if TYPE_CHECKING:
    from ...backbone import Backbone

IA3_KEY = re.compile(r"base_model\.model\.(.+)\.ia3_l")
UNSERVED_OPTIONS = ("fan_in_fan_out", "modules_to_save")


@dataclass(eq=False, frozen=True, slots=True)
class IA3Weights:
    """One (IA)3 adapter: per targeted layer a vector scaling its input (feed-forward layers) or its output."""

    method: ClassVar[str] = "ia3"
    name: str
    vectors: PackedTensors  # module path -> [in] or [out]
    feedforward: frozenset[str]  # the paths scaled at their input

    @property
    def paths(self) -> Collection[str]:
        return self.vectors.places.keys()

    @property
    def nbytes(self) -> int:
        return self.vectors.nbytes

    def to(self, device: torch.device, dtype: torch.dtype | None = None) -> IA3Weights:
        moved = self.vectors.to(device, dtype or self.vectors.buffer.dtype)
        return self if moved is self.vectors else IA3Weights(self.name, moved, self.feedforward)


def load_ia3(name: str, folder: Path, config: dict[str, Any], backbone: Backbone) -> IA3Weights:
    """The folder's vectors, once each is a (IA)3 vector of a linear layer of `backbone` with its shape."""
    refuse_options(folder, config, UNSERVED_OPTIONS, "(IA)3")
    vectors: dict[str, torch.Tensor] = {}
    feedforward = set()
    for key, tensor in read_float_tensors(folder / PEFT_WEIGHTS).items():
        match = IA3_KEY.fullmatch(key)
        if not match:
            raise AdapterError(f"{folder}: tensor {key} is not an (IA)3 vector of a linear layer (ia3_l), which is all "
                               "the router applies; retrain the adapter with `hub train`.")
        path = match.group(1)
        layer = backbone.linear_layer(path)
        if layer is None:
            raise AdapterError(f"{folder}: tensor {key} targets {path!r}, which is not a linear layer of this "
                               "backbone.")
        # PEFT's shapes say where the vector applies: [1, in] scales the input (feed-forward), [out, 1] the output
        if tuple(tensor.shape) == (1, layer.in_features):
            feedforward.add(path)
        elif tuple(tensor.shape) != (layer.out_features, 1):
            raise AdapterError(f"{folder}: tensor {key} has shape {list(tensor.shape)}, this backbone needs "
                               f"[{layer.out_features}, 1] or [1, {layer.in_features}]; the adapter was made for "
                               "another model size. Retrain it on this backbone.")
        vectors[path] = tensor.reshape(-1)
    return IA3Weights(name, PackedTensors.pack(vectors, backbone.dtype), interned(frozenset(feedforward)))
