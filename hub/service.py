"""`Hub`: owns the registry, the shared backbones, the loaded adapters and heads; answers requests."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from .adapters import adapter_name, attach_adapter, load_task_head
from .backbone import Backbone, load_backbone
from .codecs import make_codec
from .errors import AdapterError, InputError
from .registry import Registry, TaskSpec, load_registry
from .router import TaskRuntime, run_batch


class Hub:
    """Serves every task of a registry. Backbones and adapters load lazily, on a task's first request."""

    def __init__(self, registry: Registry, max_batch_size: int = 64, share_backbones: bool = True):
        self.registry = registry
        self.share_backbones = share_backbones
        self.max_batch_size = max_batch_size
        self._runtimes: dict[str, TaskRuntime] = {}
        self._private: dict[str, Backbone] = {}
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: str | Path, **kwargs: Any) -> "Hub":
        return cls(load_registry(path), **kwargs)

    def tasks(self) -> list[dict[str, Any]]:
        """What the registry serves: name, kind, language, backbone, inputs, labels, metric, trained."""
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
                "description": t.description,
            }
            for t in self.registry.tasks
        ]

    def runtime(self, task_name: str) -> TaskRuntime:
        """The loaded task (backbone, adapter, head), loading it on first use."""
        with self._lock:
            if task_name in self._runtimes:
                return self._runtimes[task_name]
            spec = self.registry.task(task_name)
            runtime = self._load(spec)
            self._runtimes[task_name] = runtime
            return runtime

    def _load(self, spec: TaskSpec) -> TaskRuntime:
        folder = self.registry.adapter_dir(spec)
        if not folder.is_dir() and spec.hub:
            from .remote import fetch  # huggingface_hub's upload/download machinery only when an entry needs it

            fetch(self.registry, spec)
        if not folder.is_dir():
            raise AdapterError(
                f"task {spec.name!r} has no trained adapter at {folder}; train it with `hub train {spec.name}`."
            )
        backbone_spec = self.registry.backbone(spec.backbone)
        backbone = self._backbone(spec.backbone)
        head = load_task_head(folder, spec, backbone)
        name = adapter_name(spec.name, folder)
        attach_adapter(backbone, name, folder, backbone_spec.model_id)
        codec = make_codec(spec, head, backbone.tokenizer, backbone.max_length(backbone_spec, spec.max_length), backbone_spec.language)
        return TaskRuntime(spec=spec, backbone=backbone, adapter_name=name, head=head, codec=codec)

    def _backbone(self, name: str) -> Backbone:
        """The process-wide shared backbone, or (share_backbones=False) one owned by this Hub alone."""
        if self.share_backbones:
            return load_backbone(self.registry.backbone(name), self.registry)
        if name not in self._private:
            self._private[name] = load_backbone(self.registry.backbone(name), self.registry, shared=False)
        return self._private[name]

    def run(self, task: str, inputs: Any) -> dict[str, Any] | list[dict[str, Any]]:
        """One input -> one result; a list of inputs -> a list of results (batched)."""
        if isinstance(inputs, list):
            return self.run_many([(task, item) for item in inputs])
        return self.run_many([(task, inputs)])[0]

    def run_many(self, requests: list[tuple[str, Any]]) -> list[dict[str, Any]]:
        """Mixed requests `[(task, input), ...]`, answered in order, sharing backbone passes."""
        items = []
        for i, request in enumerate(requests):
            if not (isinstance(request, tuple) and len(request) == 2):
                raise InputError(f"request #{i} must be a (task, input) tuple; got {type(request).__name__}.")
            runtime = self.runtime(request[0])
            try:
                checked = runtime.codec.normalize(request[1])
            except InputError as exc:
                raise InputError(f"request #{i}: {exc}" if len(requests) > 1 else str(exc)) from None
            items.append((runtime, checked))
        return run_batch(items, self.max_batch_size)
