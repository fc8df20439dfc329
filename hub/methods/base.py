"""The record of an adapter method (LoRA, later IA3, bottleneck adapters, ...): what the hub needs to serve and
train it, registered once from the method's own folder:

    register_method(name="lora", peft_type="LORA", options=LoraOptions, load=load_lora, row_hook=BatchedLora,
                    training=PeftTraining(lora_peft_config))

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

    def rows(self, adapters: Sequence[Any], every_layer: bool = False) -> AbstractContextManager[None]: ...

    traced: bool  # the hooks are traced inside a compiled backbone (else each is a graph break)

    def untrace(self) -> None: ...  # make them graph breaks (under the backbone's lock)


class AdapterOptions(BaseModel):
    """registry.yaml's `train.adapter`: the method's name and its options (each method extends this)."""

    model_config = ConfigDict(extra="forbid")
    method: str


PEFT_CONFIG = "adapter_config.json"  # the two files PEFT's save_pretrained writes, read by every method
PEFT_WEIGHTS = "adapter_model.safetensors"
PEFT_QUANTIZED_WEIGHTS = "adapter_model.quantized.safetensors"  # LoRA as int8 / int4 (`hub quantize`): not PEFT's

LoadWeights = Callable[[str, Path, dict[str, Any], "Backbone"], AdapterWeights]


class AdapterTraining(Protocol):
    """How `hub train` gives a backbone a fresh trainable adapter of a method, and writes it as a folder."""

    def wrap(self, model: nn.Module, options: Any) -> nn.Module: ...  # the model with the adapter injected

    def save(self, wrapped: nn.Module, folder: Path, base_model_id: str) -> None: ...  # adapter_config.json + weights


@dataclass(frozen=True)
class PeftTraining:
    """AdapterTraining for methods PEFT implements: PEFT injects and saves them (its folders load in PEFT as is)."""

    config: Callable[[Any], PeftConfig]  # the PEFT config for the method's options

    def wrap(self, model: nn.Module, options: Any) -> nn.Module:
        from peft import get_peft_model  # imported by training only: it takes seconds

        return get_peft_model(model, self.config(options))

    def save(self, wrapped: nn.Module, folder: Path, base_model_id: str) -> None:
        from peft import PeftModel

        if not isinstance(wrapped, PeftModel):
            raise TypeError(f"PeftTraining.save needs the PeftModel its wrap made, not {type(wrapped).__name__}")
        wrapped.peft_config["default"].base_model_name_or_path = base_model_id
        wrapped.save_pretrained(str(folder), save_embedding_layers=False)
        (folder / "README.md").unlink(missing_ok=True)  # PEFT's generic card; the hub writes its own


@dataclass(frozen=True)
class AdapterMethod:
    name: str  # what registry.yaml's `train.adapter.method` says
    peft_type: str  # adapter_config.json's `peft_type` for the folders it serves
    options: type[AdapterOptions]
    load: LoadWeights  # (name, folder, adapter_config, backbone) -> checked weights, or AdapterError with the fix
    row_hook: Callable[[nn.Module], RowHook]  # built once per backbone that serves the method
    training: AdapterTraining  # `hub train`: inject a fresh adapter, save the trained one
    title: str  # how cards and tables name it ("LoRA", "(IA)3", ...)
    store: Callable[[Path, str], None]  # (folder, storage dtype): rewrite the folder's weights file so stored
    storage_dtypes: tuple[str, ...]  # what `store` takes (train.storage.adapter is checked against it)
    reduce_rank: Callable[[Path, int], None] | None = None  # (folder, rank): store the trained update at a lower rank


METHODS: dict[str, AdapterMethod] = {}


def register_method(*, name: str, peft_type: str | None = None, options: type[AdapterOptions] | None = None,
                    load: LoadWeights | None = None, row_hook: Callable[[nn.Module], RowHook] | None = None,
                    training: AdapterTraining | None = None, title: str | None = None,
                    store: Callable[[Path, str], None] | None = None,
                    storage_dtypes: tuple[str, ...] | None = None,
                    reduce_rank: Callable[[Path, int], None] | None = None) -> AdapterMethod:
    """Add a method to METHODS; a missing part is refused here, naming it. `store` defaults to a float32 / float16 /
    bfloat16 cast of the weights file (hub.methods.storage), `storage_dtypes` to those three."""
    from .storage import FLOAT_STORAGE, cast_weights_file

    parts = {"peft_type": peft_type, "options": options, "load": load, "row_hook": row_hook, "training": training}
    for part, value in parts.items():
        if value is None:
            raise TypeError(f"adapter method {name!r} lacks {part}: pass {part}= to register_method.")
    if not (isinstance(options, type) and issubclass(options, AdapterOptions)):
        raise TypeError(f"adapter method {name!r}: options={options!r} is not an AdapterOptions subclass.")
    if name in METHODS or any(m.peft_type == peft_type for m in METHODS.values()):
        raise TypeError(f"adapter method {name!r} (peft_type {peft_type!r}) is registered twice.")
    # checked above
    assert peft_type is not None and load is not None and row_hook is not None and training is not None
    record = AdapterMethod(name, peft_type, options, load, row_hook, training, title or name,
                           store or cast_weights_file, storage_dtypes or tuple(FLOAT_STORAGE), reduce_rank)
    METHODS[name] = record
    return record


def method_named(name: str) -> AdapterMethod:
    found = METHODS.get(name)
    if found is None:
        raise ValueError(f"unknown adapter method {name!r}; use one of: {', '.join(sorted(METHODS))}")
    return found


def adapter_options(raw: dict[str, Any]) -> AdapterOptions:
    """The options of the method `raw` names (`method`, default lora), validated by that method's options class
    (ValueError, pydantic's ValidationError among them, when they are not)."""
    name = raw.get("method", "lora")
    return method_named(name).options.model_validate({**raw, "method": name})


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
