"""Where a Hub's backbones, adapters and heads live, and in what precision: a checked `torch.device` and
`torch.dtype` from what a user typed."""

from __future__ import annotations

import torch

from .errors import HubError

DEVICE_CHOICES = "'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'"
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16, "int8": torch.int8}
DTYPE_CHOICES = "'float32' (default), 'bfloat16', 'float16' (or 'fp32', 'bf16', 'fp16') or 'int8' (CPU)"


def resolve_device(name: str | torch.device | None) -> torch.device:
    """`None` or 'cpu' -> CPU; 'auto' -> the first CUDA GPU if PyTorch sees one, else CPU.

    A device this PyTorch cannot use fails here with the fix, not at the first request deep inside torch.
    """
    if name is None or name == "auto":
        return torch.device("cuda" if name == "auto" and torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise HubError(f"device {name!r} is not a device; use {DEVICE_CHOICES}.") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise HubError(f"device {name!r}: this PyTorch sees no CUDA GPU (torch {torch.__version__}); "
                           "use 'cpu', or install a CUDA build of torch on a machine with a GPU.")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise HubError(f"device {name!r}: there {'is' if count == 1 else 'are'} {count} CUDA GPU(s), "
                           "numbered from 0.")
        return torch.device("cuda", device.index if device.index is not None else torch.cuda.current_device())
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise HubError(f"device {name!r}: MPS (Apple GPU) is not available here; use 'cpu'.")
    if device.type not in ("cpu", "mps"):
        raise HubError(f"device {name!r}: the hub serves on {DEVICE_CHOICES}, not {device.type!r}.")
    return device


def resolve_dtype(name: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """The precision backbones and adapters serve in on `device`: `None` -> float32. int8 (CPU only) is the backbone's
    linear layers as int8 (hub/int8.py); its other weights, the adapters and the heads stay float32.

    Heads always compute in float32 on the backbone's output (hub.codecs.head_features): they are tiny,
    and their scores then read the same whatever the backbone's precision.
    """
    if name is None:
        return torch.float32
    dtype = name if isinstance(name, torch.dtype) else DTYPES.get(str(name).lower().removeprefix("torch."))
    if dtype is None or dtype not in DTYPES.values():
        raise HubError(f"dtype {name!r}: the hub serves in {DTYPE_CHOICES}.")
    if dtype == torch.int8 and device.type != "cpu":
        raise HubError(f"dtype 'int8' is the CPU runtime (hub/int8.py: integer matmuls on the CPU); on {device.type} "
                       "use 'bfloat16' or 'float16'.")
    if dtype == torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise HubError(f"dtype 'bfloat16': GPU {torch.cuda.get_device_name(device)} has no bfloat16 support; "
                       "use 'float16'.")
    return dtype


def dtype_name(dtype: torch.dtype) -> str:
    """The name `resolve_dtype` takes back and reports show: 'float32', 'bfloat16', 'float16', 'int8'."""
    return str(dtype).removeprefix("torch.")
