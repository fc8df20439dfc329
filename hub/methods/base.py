"""The record of an adapter method (LoRA, later IA3, bottleneck adapters, ...): what the hub needs to serve and
train it, registered once from the method's own folder:

    register_method(name="lora", peft_type="LORA", options=LoraOptions, load=load_lora, row_hook=BatchedLora,
                    peft_config=lora_peft_config)

`hub/methods/__init__.py` imports every folder under `hub/methods/`, so a new method is one new folder.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from ..errors import AdapterError

if TYPE_CHECKING:
    from peft import PeftConfig

    from ..backbone import Backbone


class AdapterWeights(Protocol):
    """One loaded adapter, ready to serve beside a frozen backbone."""

    @property
    def method(self) -> str: ...  # the name of the method that serves it

    @property
    def name(self) -> str: ...

    @property
    def nbytes(self) -> int: ...  # memory it holds

    @property
    def paths(self) -> Collection[str]: ...  # the backbone module paths it changes

    def to(self, device: torch.device, dtype: torch.dtype | None = None) -> AdapterWeights: ...


class RowHook(Protocol):
    """A method's per-row serving on one backbone: in `rows(adapters)`, row i of a pass gets adapters[i]."""

    def needs_prepare(self, weights: Any) -> bool: ...  # whether `prepare` must run (under the backbone's lock)

    def prepare(self, weights: Any) -> None: ...

    def rows(self, adapters: Sequence[Any]) -> AbstractContextManager[None]: ...


class AdapterOptions(BaseModel):
    """registry.yaml's `train.adapter`: the method's name and its options (each method extends this)."""

    model_config = ConfigDict(extra="forbid")
    method: str


PEFT_CONFIG = "adapter_config.json"  # the two files PEFT's save_pretrained writes, read by every method
PEFT_WEIGHTS = "adapter_model.safetensors"

LoadWeights = Callable[[str, Path, dict[str, Any], "Backbone"], AdapterWeights]


@dataclass(frozen=True)
class AdapterMethod:
    name: str  # what registry.yaml's `train.adapter.method` says
    peft_type: str  # adapter_config.json's `peft_type` for the folders it serves
    options: type[AdapterOptions]
    load: LoadWeights  # (name, folder, adapter_config, backbone) -> checked weights, or AdapterError with the fix
    row_hook: Callable[[nn.Module], RowHook]  # built once per backbone that serves the method
    peft_config: Callable[[Any], PeftConfig]  # training: the PEFT config for these options


METHODS: dict[str, AdapterMethod] = {}


def register_method(*, name: str, peft_type: str | None = None, options: type[AdapterOptions] | None = None,
                    load: LoadWeights | None = None, row_hook: Callable[[nn.Module], RowHook] | None = None,
                    peft_config: Callable[[Any], PeftConfig] | None = None) -> AdapterMethod:
    """Add a method to METHODS; a missing part is refused here, naming it."""
    parts = {"peft_type": peft_type, "options": options, "load": load, "row_hook": row_hook, "peft_config": peft_config}
    for part, value in parts.items():
        if value is None:
            raise TypeError(f"adapter method {name!r} lacks {part}: pass {part}= to register_method.")
    if not (isinstance(options, type) and issubclass(options, AdapterOptions)):
        raise TypeError(f"adapter method {name!r}: options={options!r} is not an AdapterOptions subclass.")
    if name in METHODS or any(m.peft_type == peft_type for m in METHODS.values()):
        raise TypeError(f"adapter method {name!r} (peft_type {peft_type!r}) is registered twice.")
    # checked above
    assert peft_type is not None and load is not None and row_hook is not None and peft_config is not None
    record = AdapterMethod(name, peft_type, options, load, row_hook, peft_config)
    METHODS[name] = record
    return record


def method_named(name: str) -> AdapterMethod:
    found = METHODS.get(name)
    if found is None:
        raise ValueError(f"unknown adapter method {name!r}; use one of: {', '.join(sorted(METHODS))}")
    return found


def method_for_peft_type(peft_type: Any, folder: Path) -> AdapterMethod:
    """The method that serves adapter folders of this PEFT type; AdapterError names the types served."""
    for method in METHODS.values():
        if method.peft_type == peft_type:
            return method
    served = ", ".join(sorted(m.peft_type for m in METHODS.values()))
    raise AdapterError(f"{folder}: peft_type {peft_type!r} is not served yet; only {served} adapters are.")


def linear_layer(model: nn.Module, path: str) -> nn.Linear | None:
    """The linear layer at module `path` (inside a PEFT wrapper if the model has one), or None."""
    try:
        layer = model.get_submodule(path)
    except AttributeError:
        return None
    layer = getattr(layer, "base_layer", layer)
    return layer if isinstance(layer, nn.Linear) else None


def refuse_non_finite(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """NaN or inf weights would be served as `score: nan`: refuse the file, naming the first such tensor."""
    for key, tensor in tensors.items():
        finite = torch.isfinite(tensor)
        if not finite.all():
            raise AdapterError(f"{path}: tensor {key} holds {finite.numel() - int(finite.sum())} NaN/inf values; "
                               "retrain or re-download the adapter.")
