"""What a served head keeps in memory: its Linear weights as its file stores them, widened inside each pass.

A head file stored as float16 or int8 (heads/storage.py) is half or a quarter of its float32 bytes; holding the
loaded head in float32 would make a resident task cost up to four times its bytes on disk (Chinese POS: a 177 x
512 output layer, 91 KB as int8, 362 KB as float32; its CRF's 8,097 transitions, 8 KB as int8). A served head's
Linear layers and CRF transitions therefore keep the stored tensor and widen it in the pass, to exactly the float32
values `Head.load` gives, so answers do not change. Training and `hub quantize` load heads in float32 (`Head.load`
without `resident`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .storage import SCALE_SUFFIX, widened


class StoredLinear(nn.Module):
    """A Linear whose weight stays as stored (float16, or int8 with a float32 scale per output row); `weight` is the
    float32 matrix, computed on each read (a [tags x hidden] widening costs microseconds next to a backbone pass)."""

    stored: torch.Tensor
    scale: torch.Tensor | None
    bias: torch.Tensor | None

    def __init__(self, stored: torch.Tensor, scale: torch.Tensor | None, bias: torch.Tensor | None):
        super().__init__()
        self.out_features, self.in_features = stored.shape
        self.register_buffer("stored", stored)
        self.register_buffer("scale", scale)
        self.register_buffer("bias", None if bias is None else bias.detach())

    @property
    def weight(self) -> torch.Tensor:
        return widened(self.stored, self.scale)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return F.linear(inputs, self.weight, self.bias)

    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        """The state of the Linear it stands for (`weight` widened, `bias`): a served head saves as a loaded one."""
        destination[prefix + "weight"] = self.weight
        if self.bias is not None:
            destination[prefix + "bias"] = self.bias if keep_vars else self.bias.detach()

    def extra_repr(self) -> str:
        kept = str(self.stored.dtype).removeprefix("torch.")
        return f"in_features={self.in_features}, out_features={self.out_features}, kept as {kept}"


class KeepsParametersAsStored(nn.Module):
    """A module some of whose own parameters (`kept_as_stored`: the CRF's transitions, the fill-mask head's vocabulary
    bias) a served head keeps as its file stores them, widened on each read through `parameter_value`; its state
    dict is that of the module that does not (the parameters by name, float32)."""

    kept_as_stored: tuple[str, ...] = ()

    def keep_as_stored(self, narrow: dict[str, tuple[torch.Tensor, torch.Tensor | None]]) -> None:
        """Swap each of `kept_as_stored` that `narrow` holds for its stored values (and int8 scale) as buffers."""
        for name in self.kept_as_stored:
            if name in narrow:
                delattr(self, name)
                values, scale = narrow[name]
                self.register_buffer(f"{name}_stored", values)
                self.register_buffer(f"{name}_scale", scale)

    def parameter_value(self, name: str) -> torch.Tensor:
        """Parameter `name` in float32, whether it is kept as stored or not."""
        stored = self._buffers.get(f"{name}_stored")
        return getattr(self, name) if stored is None else widened(stored, self._buffers.get(f"{name}_scale"))

    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        for name in self.kept_as_stored:
            if destination.pop(f"{prefix}{name}_stored", None) is not None:
                destination.pop(f"{prefix}{name}_scale", None)
                destination[prefix + name] = self.parameter_value(name)


def keep_as_stored(head: nn.Module, stored: dict[str, torch.Tensor]) -> None:
    """Keep what the file `stored` holds narrower than float32 as stored: each Linear's weight (swapped for a
    StoredLinear) and the parameters a KeepsParametersAsStored module names (the CRF's transitions).
    Call after the head loaded and checked these tensors; a tensor an older layout stored in another shape stays
    float32."""
    for name, module in list(head.named_modules()):
        prefix = f"{name}." if name else ""
        narrow = {local: kept for local, tensor in module.named_parameters(recurse=False)
                  if (kept := _narrow(stored, prefix + local, tensor.shape)) is not None}
        if isinstance(module, nn.Linear) and "weight" in narrow:
            parent, _, child = name.rpartition(".")
            head.get_submodule(parent).register_module(child, StoredLinear(*narrow["weight"], module.bias))
        elif narrow and isinstance(module, KeepsParametersAsStored):
            module.keep_as_stored(narrow)


def _narrow(stored: dict[str, torch.Tensor], key: str,
            shape: torch.Size) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """The file's (values, int8 scale or None) for `key` when it is float16 or int8 in the loaded shape."""
    values = stored.get(key)
    if values is None or values.shape != shape or values.dtype not in (torch.float16, torch.int8):
        return None
    return values, stored.get(key + SCALE_SUFFIX) if values.dtype == torch.int8 else None
