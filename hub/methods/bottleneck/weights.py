"""A bottleneck adapter folder's down/up projections, checked against the backbone and kept in one buffer."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from ...errors import AdapterError
from ..base import PEFT_WEIGHTS
from ..packed import PackedTensors, interned, read_float_tensors, refuse_options
from .options import ACTIVATIONS, CONFIGS
from .training import KEY_PREFIX

if TYPE_CHECKING:
    from ...backbone import Backbone

ADAPTER_KEY = re.compile(re.escape(KEY_PREFIX) + r"(.+)\.adapter_(down|up)\.(weight|bias)")
PARTS = ("down.weight", "down.bias", "up.weight", "up.bias")
UNSERVED_OPTIONS = ("modules_to_save",)


@dataclass(eq=False, frozen=True, slots=True)
class BottleneckWeights:
    """One bottleneck adapter: per targeted layer `<path>.down.weight` [width, hidden], `.down.bias` [width],
    `.up.weight` [hidden, width], `.up.bias` [hidden]."""

    method: ClassVar[str] = "bottleneck"
    name: str
    tensors: PackedTensors
    paths: frozenset[str]
    width: int  # the bottleneck size
    non_linearity: str  # a key of ACTIVATIONS

    @property
    def nbytes(self) -> int:
        return self.tensors.nbytes

    def to(self, device: torch.device, dtype: torch.dtype | None = None) -> BottleneckWeights:
        moved = self.tensors.to(device, dtype or self.tensors.buffer.dtype)
        if moved is self.tensors:
            return self
        return BottleneckWeights(self.name, moved, self.paths, self.width, self.non_linearity)


def load_bottleneck(name: str, folder: Path, config: dict[str, Any], backbone: Backbone) -> BottleneckWeights:
    """The folder's adapters, once its config is one the hub serves and every tensor fits a targeted linear layer of
    `backbone` and the config's bottleneck_size."""
    refuse_options(folder, config, UNSERVED_OPTIONS, "bottleneck adapter")
    pattern, width, non_linearity = _checked_config(folder, config)
    tensors: dict[str, torch.Tensor] = {}
    for key, tensor in read_float_tensors(folder / PEFT_WEIGHTS).items():
        match = ADAPTER_KEY.fullmatch(key)
        if not match:
            raise AdapterError(f"{folder}: tensor {key} is not a bottleneck adapter weight (adapter_down / adapter_up "
                               ".weight / .bias), which is all the router applies; retrain it with `hub train`.")
        path, part, kind = match.groups()
        if not pattern.fullmatch(path):
            raise AdapterError(f"{folder}: tensor {key} targets {path!r}, which config {config['config']!r} does not "
                               "adapt; fix 'config' in adapter_config.json or retrain the adapter.")
        layer = backbone.linear_layer(path)
        if layer is None:
            raise AdapterError(f"{folder}: tensor {key} targets {path!r}, which is not a linear layer of this "
                               "backbone.")
        hidden = layer.out_features
        expected = {"down.weight": (width, hidden), "down.bias": (width,), "up.weight": (hidden, width),
                    "up.bias": (hidden,)}[f"{part}.{kind}"]
        if tuple(tensor.shape) != expected:
            raise AdapterError(f"{folder}: tensor {key} has shape {list(tensor.shape)}, this backbone and "
                               f"bottleneck_size={width} need {list(expected)}; retrain the adapter on this backbone.")
        tensors[f"{path}.{part}.{kind}"] = tensor
    paths = {key.rsplit(".", 2)[0] for key in tensors}
    incomplete = sorted(path for path in paths if any(f"{path}.{part}" not in tensors for part in PARTS))
    if incomplete:
        raise AdapterError(f"{folder}: layer(s) {', '.join(incomplete)} lack some of adapter_down / adapter_up "
                           ".weight / .bias; the file is incomplete. Retrain or re-download it.")
    listed = config.get("target_modules")
    if not isinstance(listed, list) or set(listed) != paths:
        raise AdapterError(f"{folder}: adapter_config.json's target_modules ({listed!r}) are not the layers "
                           f"adapter_model.safetensors holds ({sorted(paths)}); the folder is inconsistent. Retrain or "
                           "re-download it.")
    ordered = {f"{path}.{part}": tensors[f"{path}.{part}"] for path in sorted(paths) for part in PARTS}
    return BottleneckWeights(name, PackedTensors.pack(ordered, backbone.dtype), interned(frozenset(paths)), width,
                             non_linearity)


def _checked_config(folder: Path, config: dict[str, Any]) -> tuple[re.Pattern[str], int, str]:
    """The config's target pattern, bottleneck size and non-linearity; AdapterError names a field that is wrong."""
    name = config.get("config")
    if name not in CONFIGS:
        raise AdapterError(f"{folder}: adapter_config.json's config={name!r} is not a bottleneck config the router "
                           f"serves; use one of {', '.join(CONFIGS)} (retrain with `hub train`).")
    width = config.get("bottleneck_size")
    if not isinstance(width, int) or isinstance(width, bool) or width < 1:
        raise AdapterError(f"{folder}: adapter_config.json needs an integer bottleneck_size >= 1, found {width!r}; "
                           "retrain or re-download the adapter.")
    non_linearity = config.get("non_linearity")
    if non_linearity not in ACTIVATIONS:
        raise AdapterError(f"{folder}: adapter_config.json's non_linearity={non_linearity!r} is not served; use one of "
                           f"{', '.join(ACTIVATIONS)} and retrain the adapter.")
    return CONFIGS[name], width, non_linearity
