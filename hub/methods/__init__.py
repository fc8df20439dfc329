"""Adapter methods: one folder each (config check, weights reader, per-row serving hook, training config),
registered into `METHODS` by PEFT's `peft_type`. Every sub-folder is imported here, so a method is one folder."""

import importlib
import pkgutil

from .base import (
    METHODS,
    PEFT_CONFIG,
    PEFT_QUANTIZED_WEIGHTS,
    PEFT_WEIGHTS,
    AdapterMethod,
    AdapterOptions,
    AdapterTraining,
    AdapterWeights,
    PeftTraining,
    RowHook,
    adapter_options,
    linear_layer,
    method_for_peft_type,
    method_named,
    refuse_non_finite,
    register_method,
)

for _found in pkgutil.iter_modules(__path__):
    if _found.ispkg:
        importlib.import_module(f"{__name__}.{_found.name}")

__all__ = [
    "METHODS", "PEFT_CONFIG", "PEFT_QUANTIZED_WEIGHTS", "PEFT_WEIGHTS", "AdapterMethod", "AdapterOptions",
    "AdapterTraining", "AdapterWeights", "PeftTraining", "RowHook", "linear_layer", "method_for_peft_type",
    "method_named", "refuse_non_finite", "register_method", "adapter_options",
]
