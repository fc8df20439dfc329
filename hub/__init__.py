"""One frozen BERT per language, many small task adapters and heads beside it.

    import hub
    hub.run("sst2", "This movie was amazing!")
    hub.run("mrpc", ("He said hi.", "He greeted us."))
    hub.tasks()
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import (
    AdapterError,
    BackboneError,
    DataError,
    DeadlineExceededError,
    HubError,
    InputError,
    RegistryError,
    RequestTooLargeError,
    TaskUnavailableError,
    UnknownTaskError,
)

if TYPE_CHECKING:
    from .service import Hub

_default: Hub | None = None
_default_lock = threading.Lock()


def default_registry_path() -> Path:
    """`$HUB_REGISTRY`, else the registry.yaml shipped beside the package (serves the shipped adapters)."""
    return Path(os.environ.get("HUB_REGISTRY") or Path(__file__).resolve().parent.parent / "registry.yaml")


def __getattr__(name: str) -> Any:
    """`hub.Hub` on first use: the task kinds in `heads/` import `hub.errors`, which must not load the whole hub."""
    if name == "Hub":
        from .service import Hub

        return Hub
    raise AttributeError(f"module 'hub' has no attribute {name!r}")


def load(registry: str | Path | None = None, **kwargs: Any) -> Hub:
    """Load a registry (default: the shipped one) and make it the one `hub.run` uses."""
    global _default
    from .service import Hub

    loaded = Hub.load(registry or default_registry_path(), **kwargs)
    with _default_lock:
        _default = loaded
    return loaded


def _hub() -> Hub:
    with _default_lock:
        current = _default
    return current if current is not None else load()


def run(task: str, inputs: Any) -> dict[str, Any] | list[dict[str, Any]]:
    """Answer one input (str, pair tuple, dict) or a list of them for `task`."""
    return _hub().run(task, inputs)


def run_many(requests: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    """Answer mixed `(task, input)` requests in order, sharing backbone passes."""
    return _hub().run_many(requests)


def embed(texts: str | list[str], target: str | None = None, layers: str | int = "last", pooling: str = "mean",
          unit: bool = False) -> dict[str, Any] | list[dict[str, Any]]:
    """Contextual embeddings (see Hub.embed): per-token vectors with offsets, or one vector per text."""
    return _hub().embed(texts, target, layers, pooling, unit)


def tasks() -> list[dict[str, Any]]:
    """The tasks the current registry serves, with kind and language."""
    return _hub().tasks()


def train(task: str, registry: str | Path | None = None, **overrides: Any):
    """Train `task`'s adapter + head (see hub.training.train_task)."""
    from .registry import load_registry
    from .training import train_task

    return train_task(load_registry(registry or default_registry_path(), strict_adapters=False), task, **overrides)


__all__ = [
    "AdapterError", "BackboneError", "DataError", "DeadlineExceededError", "Hub", "HubError", "InputError",
    "RegistryError", "RequestTooLargeError", "TaskUnavailableError", "UnknownTaskError", "default_registry_path",
    "embed", "load", "run", "run_many", "tasks", "train",
]
