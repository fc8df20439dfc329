"""`Hub`: owns the registry, the shared backbones, the loaded adapters and heads; answers requests."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import torch

from heads import kind

from .adapter_folder import AdapterFolder
from .backbone import Backbone, load_backbone
from .card import trained_runtime
from .devices import resolve_device, resolve_dtype
from .embeddings import (
    EmbeddingCodec,
    EmbeddingHead,
    EmbeddingRequest,
    Layers,
    embedding_spec,
    embedding_task_name,
    is_embedding_name,
    parse_embedding_name,
)
from .errors import AdapterError, HubError, InputError, TaskUnavailableError
from .methods import method_for_peft_type
from .registry import Registry, TaskSpec, load_registry
from .router import TaskRuntime, run_batch
from .runtime_cache import RuntimeCache
from .text_checks import check_text


class Hub:
    """Serves every task of a registry. Backbones and adapters load lazily, on a task's first request."""

    def __init__(self, registry: Registry, max_batch_size: int = 64, share_backbones: bool = True,
                 max_tasks: int | None = None, max_bytes: int | None = None, device: str | torch.device | None = None,
                 dtype: str | torch.dtype | None = None, allow_fetch: bool = True, compile: bool = False):
        """`max_tasks` / `max_bytes` bound the loaded tasks (adapter weights + heads; least recently used go first).
        `device`: where backbones, adapters and heads live ('cpu' by default, 'cuda', 'cuda:1', 'auto', ...).
        `dtype`: the precision of backbones and adapters ('float32' by default, 'bfloat16', 'float16').
        `allow_fetch`: a `hub:` entry without its folder is downloaded on first use (False: it is unavailable).
        `compile`: every backbone's forward through torch.compile (hub.compiled: the int8 CPU runtime's fastest form;
        loading a backbone then takes the compile, and answers may differ from the eager ones in the last bits)."""
        if max_batch_size < 1:
            raise HubError(f"max_batch_size={max_batch_size}: a batch needs at least one row.")
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.registry = registry
        self.share_backbones = share_backbones
        self.max_batch_size = max_batch_size
        self.allow_fetch = allow_fetch
        self.compile = compile
        self.cache = RuntimeCache(self._load, max_tasks=max_tasks, max_bytes=max_bytes)
        # task -> (its folder's state, why it failed to load)
        self._failures: dict[str, tuple[tuple, AdapterError]] = {}
        self._specs = {task.name: task for task in registry.tasks}  # thousands of tasks: a dict, not a scan
        self._backbones: dict[str, Backbone] = {}
        self._backbones_lock = threading.Lock()

    @classmethod
    def load(cls, path: str | Path, **kwargs: Any) -> Hub:
        """A Hub over a registry file; a task whose adapter folder is broken is unavailable, the others serve."""
        return cls(load_registry(path, strict_adapters=False), **kwargs)

    def unavailable(self) -> dict[str, str]:
        """Tasks that cannot be served now, with the reason: broken folders, and loads that failed."""
        problems = dict(self.registry.adapter_problems)
        for task, (_, error) in list(self._failures.items()):
            problems.setdefault(task, str(error))
        return problems

    def tasks(self) -> list[dict[str, Any]]:
        """What the registry serves: name, kind, language, backbone, inputs, labels, metric, trained, its adapter's
        method, bytes on disk and validated runtime when trained (and `unavailable`: the reason, for a task that
        cannot be served)."""
        problems = self.unavailable()
        return [
            {
                "task": t.name,
                "kind": t.kind,
                "language": self.registry.backbone(t.backbone).language,
                "backbone": t.backbone,
                "inputs": list(t.inputs),
                "labels": t.labels,
                "metric": t.metric,
                "trained": self.registry.adapter_dir(t).is_dir(),
                **_adapter_summary(self.registry.adapter_dir(t)),
                "description": t.description,
                **({"unavailable": problems[t.name]} if t.name in problems else {}),
            }
            for t in self.registry.tasks
        ]

    def runtime(self, task_name: str) -> TaskRuntime:
        """The loaded task (backbone, adapter, head), loading it on first use; for an embedding request's name
        (hub.embeddings), the backbone or task it names with an embedding head."""
        if is_embedding_name(task_name):
            return self._embedding_runtime(parse_embedding_name(task_name))
        return self.cache.get(task_name)

    def _embedding_runtime(self, request: EmbeddingRequest) -> TaskRuntime:
        """Built per request (no weights of its own): a backbone's name embeds with the backbone alone, a task's
        name through the task's adapter (its runtime is the cached one)."""
        names = {spec.name for spec in self.registry.backbones}
        if request.target in names:
            backbone_name, adapter, mix = request.target, None, None
        else:
            if request.target not in self._specs:
                raise InputError(f"{request.target!r} to embed with is neither a backbone ({', '.join(sorted(names))}) "
                                 "nor a task of the registry (`hub list` lists them).")
            task = self.cache.get(request.target)
            backbone_name, adapter, mix = task.spec.backbone, task.adapter, task.head
        backbone = self._backbone(backbone_name)
        backbone_spec = self.registry.backbone(backbone_name)
        head = EmbeddingHead(request, backbone.hidden_size, backbone.model.config.num_hidden_layers, mix)
        spec = embedding_spec(request, backbone_name)
        codec = EmbeddingCodec(spec, head, backbone.tokenizer, backbone.max_length(backbone_spec, None),
                               backbone_spec.language)
        return TaskRuntime(spec=spec, backbone=backbone, adapter=adapter, head=head.to(backbone.device), codec=codec)

    def embed(self, texts: str | list[str], target: str | None = None, layers: Layers | str = "last",
              pooling: str = "mean", unit: bool = False) -> dict[str, Any] | list[dict[str, Any]]:
        """Contextual embeddings of `texts` (one text: one result) from `target`: a backbone name, or a task name to
        embed through its adapter (default: the registry's only backbone). `layers`: last, last4 (their mean), mix (the
        task head's learned mix) or a layer number; `pooling`: tokens (a vector per token with character offsets),
        mean or cls; `unit`: pooled vectors of length 1. Batched with any other requests in flight."""
        if target is None:
            if len(self.registry.backbones) != 1:
                raise InputError("name what to embed with: a backbone ("
                                 f"{', '.join(spec.name for spec in self.registry.backbones)}) or a task")
            target = self.registry.backbones[0].name
        name = embedding_task_name(target, layers, pooling, unit)
        return self.run(name, texts)

    def _load(self, task_name: str) -> TaskRuntime:
        spec = self._specs.get(task_name) or self.registry.task(task_name)  # the registry names what is unknown
        if spec.name in self.registry.adapter_problems:
            raise TaskUnavailableError(
                f"task {spec.name!r} is unavailable: {self.registry.adapter_problems[spec.name]}")
        folder = self.registry.adapter_dir(spec)
        state = _folder_state(folder)
        failed = self._failures.get(spec.name)
        if failed is not None and failed[0] == state:  # the same broken folder: no re-read per request
            raise failed[1]
        try:
            runtime = self._load_folder(spec, folder)
        except AdapterError as exc:
            error = (exc if isinstance(exc, TaskUnavailableError)
                     else TaskUnavailableError(f"task {spec.name!r} is unavailable: {exc}"))
            self._failures[spec.name] = (state, error)
            raise error from None
        self._failures.pop(spec.name, None)
        return runtime

    def _load_folder(self, spec: TaskSpec, folder: Path) -> TaskRuntime:
        if not folder.is_dir() and spec.hub:
            if not self.allow_fetch:
                raise TaskUnavailableError(
                    f"task {spec.name!r} is on the Hugging Face Hub ({spec.hub}) but not downloaded, and this server "
                    f"does not download: run `hub fetch {spec.name}` first, or start it with `hub serve --fetch`.")
            from .remote import fetch  # huggingface_hub's upload/download machinery only when an entry needs it

            fetch(self.registry, spec)
        if not folder.is_dir():
            raise AdapterError(
                f"task {spec.name!r} has no trained adapter at {folder}; train it with `hub train {spec.name}`."
            )
        backbone_spec = self.registry.backbone(spec.backbone)
        backbone = self._backbone(spec.backbone)
        adapter, head = AdapterFolder(folder).load(spec, backbone, backbone_spec.model_id)
        codec = kind(spec.kind).codec(spec, head, backbone.tokenizer,
                                      backbone.max_length(backbone_spec, spec.max_length), backbone_spec.language)
        return TaskRuntime(spec=spec, backbone=backbone, adapter=adapter, head=head, codec=codec)

    def _backbone(self, name: str) -> Backbone:
        """The process-wide shared backbone, or (share_backbones=False) one owned by this Hub alone."""
        with self._backbones_lock:
            if name not in self._backbones:
                self._backbones[name] = load_backbone(self.registry.backbone(name), self.registry,
                                                      shared=self.share_backbones, device=self.device, dtype=self.dtype,
                                                      compile=self.compile)
            return self._backbones[name]

    def run(self, task: str, inputs: Any) -> dict[str, Any] | list[dict[str, Any]]:
        """One input -> one result; a list of inputs -> a list of results (batched)."""
        if isinstance(inputs, list):
            return self.run_many([(task, item) for item in inputs])
        return self.run_many([(task, inputs)])[0]

    def run_many(self, requests: list[tuple[str, Any]]) -> list[dict[str, Any]]:
        """Mixed requests `[(task, input), ...]`, answered in order, sharing backbone passes."""
        return run_batch(self.prepare(requests), self.max_batch_size)

    def prepare(self, requests: list[tuple[str, Any]]) -> list[tuple[TaskRuntime, Any]]:
        """Each request's loaded task and checked input (tasks load here); InputError names the bad request."""
        items = []
        for i, request in enumerate(requests):
            if not (isinstance(request, tuple) and len(request) == 2):
                raise InputError(f"request #{i} must be a (task, input) tuple; got {type(request).__name__}.")
            if not isinstance(request[0], str):
                raise InputError(f"request #{i}: the task must be a task name (str); got {type(request[0]).__name__}.")
            runtime = self.runtime(request[0])
            try:
                check_text(request[1], f"task {runtime.spec.name!r}: input")  # once, for every kind, before tokenizing
                checked = runtime.codec.normalize(request[1])
            except InputError as exc:
                raise InputError(f"request #{i}: {exc}" if len(requests) > 1 else str(exc)) from None
            items.append((runtime, checked))
        return items


def _folder_state(folder: Path) -> tuple:
    """What changes when a folder is fixed or replaced: its files' names, sizes and modification times."""
    try:
        return tuple(sorted((p.name, stat.st_size, stat.st_mtime_ns) for p in folder.iterdir() for stat in [p.stat()]))
    except OSError:
        return ()


def _adapter_summary(folder: Path) -> dict[str, Any]:
    """A trained folder's adapter method, bytes on disk and the backbone runtime it was trained and validated for
    (its card; `dtype` to serve it with), nothing when it has no readable adapter config: read from its files, no
    weights loaded."""
    if not folder.is_dir():
        return {}
    adapter = AdapterFolder(folder)
    try:
        method = method_for_peft_type(adapter.adapter_config().get("peft_type"), folder)
    except AdapterError:
        return {}
    return {"method": method.name, "bytes": adapter.nbytes(), "runtime": trained_runtime(folder)}
