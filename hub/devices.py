"""Where a Hub's backbones, adapters and heads live: a checked `torch.device` from what a user typed."""

from __future__ import annotations

import torch

from .errors import HubError

DEVICE_CHOICES = "'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'"


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
            raise HubError(f"device {name!r}: there {'is' if count == 1 else 'are'} {count} CUDA GPU(s), numbered from 0.")
        return torch.device("cuda", device.index if device.index is not None else torch.cuda.current_device())
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise HubError(f"device {name!r}: MPS (Apple GPU) is not available here; use 'cpu'.")
    if device.type not in ("cpu", "mps"):
        raise HubError(f"device {name!r}: the hub serves on {DEVICE_CHOICES}, not {device.type!r}.")
    return device
