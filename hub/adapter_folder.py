"""`AdapterFolder`: one task's adapter folder, its file names, its checks and its atomic write.

A folder holds PEFT's files (`adapter_config.json`, `adapter_model.safetensors`, readable by plain
`peft.PeftModel.from_pretrained`; or, for LoRA quantized by `hub quantize`, `adapter_model.quantized.safetensors`
in place of the latter), the head (`head_config.json`, `head.safetensors`, written by `Head.save` and read by
`Head.load`) and a model card (`README.md`). Only safetensors are ever read.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from heads import Head, HeadLoadError
from heads.base import CONFIG_FILE as HEAD_CONFIG
from heads.base import WEIGHTS_FILE as HEAD_WEIGHTS

from .atomic import atomic_folder
from .errors import AdapterError
from .methods import (
    PEFT_CONFIG,
    PEFT_QUANTIZED_WEIGHTS,
    PEFT_WEIGHTS,
    AdapterWeights,
    method_for_peft_type,
)

if TYPE_CHECKING:
    from .backbone import Backbone
    from .registry import TaskSpec


class EntryMismatch(AdapterError):
    """A folder that does not fit its registry entry; `field` names the entry's field to fix."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class AdapterFolder:
    path: Path

    PEFT_CONFIG: ClassVar[str] = PEFT_CONFIG
    PEFT_WEIGHTS: ClassVar[str] = PEFT_WEIGHTS
    HEAD_CONFIG: ClassVar[str] = HEAD_CONFIG
    HEAD_WEIGHTS: ClassVar[str] = HEAD_WEIGHTS
    CARD: ClassVar[str] = "README.md"
    WEIGHTS_FILES: ClassVar[tuple[str, ...]] = (PEFT_WEIGHTS, PEFT_QUANTIZED_WEIGHTS)  # a folder holds exactly one
    FILES: ClassVar[tuple[str, ...]] = (PEFT_CONFIG, PEFT_WEIGHTS, HEAD_CONFIG, HEAD_WEIGHTS)  # serving reads these,
    # PEFT_QUANTIZED_WEIGHTS in place of PEFT_WEIGHTS in a quantized folder (`files`)
    UNSAFE_WEIGHTS: ClassVar[tuple[str, ...]] = ("adapter_model.bin", "head.bin", "pytorch_model.bin")

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @classmethod
    def files_among(cls, names: Collection[str], where: object) -> tuple[str, ...]:
        """FILES with the weights file among `names` (the files of folder or repo `where`); AdapterError if both
        are there."""
        if set(cls.WEIGHTS_FILES) <= set(names):
            raise AdapterError(f"{where} holds both {' and '.join(cls.WEIGHTS_FILES)}, so which adapter weights to "
                               "serve is ambiguous; delete one of them (`hub quantize` leaves exactly one).")
        weights = PEFT_QUANTIZED_WEIGHTS if PEFT_QUANTIZED_WEIGHTS in names else PEFT_WEIGHTS
        return tuple(weights if name == PEFT_WEIGHTS else name for name in cls.FILES)

    def files(self) -> tuple[str, ...]:
        """What serving reads from this folder: FILES with the weights file it holds; AdapterError if it holds both."""
        return self.files_among([name for name in self.WEIGHTS_FILES if (self.path / name).is_file()], self.path)

    def weights_file(self) -> Path:
        """The adapter weights file serving reads (it may not exist yet); AdapterError if the folder holds both."""
        return self.path / next(name for name in self.files() if name in self.WEIGHTS_FILES)

    def missing(self) -> list[str]:
        return [name for name in self.files() if not (self.path / name).is_file()]

    def nbytes(self) -> int:
        """Bytes on disk of every file in the folder."""
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())

    def adapter_name(self, task: str) -> str:
        """A name unique per (task, folder), so two registries never collide on one backbone."""
        digest = hashlib.sha1(str(self.path.resolve()).encode()).hexdigest()[:8]
        return re.sub(r"[^A-Za-z0-9_]", "_", task) + "_" + digest

    def check_entry(self, task: TaskSpec) -> None:
        """The registry's check, without loading anything: complete, and its head's kind and labels are the entry's.
        EntryMismatch names the entry field to fix."""
        try:
            missing = self.missing()
        except AdapterError as exc:
            raise EntryMismatch("adapter", str(exc)) from None
        if missing:
            raise EntryMismatch("adapter", f"adapter folder {self.path} lacks {', '.join(missing)}; retrain it with "
                                f"`hub train {task.name}` or point 'adapter' at a complete folder.")
        try:
            head_config = json.loads((self.path / self.HEAD_CONFIG).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise EntryMismatch("adapter", f"{self.path}/{self.HEAD_CONFIG} is not valid JSON ({exc}); "
                                "retrain the task.") from None
        if not isinstance(head_config, dict):
            raise EntryMismatch("adapter", f"{self.path}/{self.HEAD_CONFIG} is not a JSON object; retrain the task.")
        if head_config.get("kind") != task.kind:
            raise EntryMismatch("adapter", f"the adapter's head is of kind {head_config.get('kind')!r} but the entry "
                                f"says kind {task.kind!r}; fix 'kind' or retrain the task.")
        stored = head_config.get("labels")
        if task.labels is not None and stored != task.labels:
            raise EntryMismatch("labels", f"{task.labels} do not match the adapter head's {len(stored or [])} labels "
                                f"{stored}; use the head's labels (same order) or retrain with "
                                f"`hub train {task.name}`.")

    def load(self, task: TaskSpec, backbone: Backbone, base_model_id: str) -> tuple[AdapterWeights, Head]:
        """The folder's adapter (attached to `backbone`, ready for per-row serving) and head, each checked once
        against the backbone and the task's entry; AdapterError says what is wrong and the fix."""
        if not self.path.is_dir():
            raise AdapterError(f"adapter folder {self.path} does not exist; train it with `hub train` or fix the "
                               "registry's 'adapter'.")
        missing = self.missing()
        if missing:
            unsafe = [name for name in self.UNSAFE_WEIGHTS if (self.path / name).exists()]
            extra = f" (found pickled {', '.join(unsafe)}: only safetensors are read)" if unsafe else ""
            raise AdapterError(
                f"adapter folder {self.path} lacks {', '.join(missing)}{extra}; retrain or re-download it.")
        head = self.load_head(task, backbone)
        return self.load_adapter(self.adapter_name(task.name), backbone, base_model_id), head

    def load_adapter(self, name: str, backbone: Backbone, base_model_id: str) -> AdapterWeights:
        """The PEFT part: its method's weights, checked against the backbone and attached to it for serving."""
        config = self.adapter_config()
        method = method_for_peft_type(config.get("peft_type"), self.path)
        base = config.get("base_model_name_or_path")
        if base != base_model_id:
            raise AdapterError(
                f"{self.path}: adapter was trained on {base!r} but the registry's backbone is {base_model_id!r}; "
                "use the matching backbone or retrain the adapter on this one."
            )
        weights = method.load(name, self.path, config, backbone).to(backbone.device)
        backbone.attach(weights)
        return weights

    def adapter_config(self) -> dict[str, Any]:
        """adapter_config.json as a dict; AdapterError when it is absent or not a JSON object."""
        path = self.path / self.PEFT_CONFIG
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise AdapterError(f"{self.path} has no {self.PEFT_CONFIG}; it is not a PEFT adapter folder.") from None
        except ValueError as exc:
            raise AdapterError(f"{path} is not valid JSON ({exc}); retrain or re-download the adapter.") from None
        if not isinstance(config, dict):
            raise AdapterError(f"{path} is not a JSON object; retrain or re-download the adapter.")
        return config

    def load_head(self, task: TaskSpec, backbone: Backbone) -> Head:
        """The task's head (`Head.load`, kept in memory as stored), checked against the backbone's width and layers and
        the entry's labels."""
        try:
            head = Head.load(self.path, resident=True)
        except HeadLoadError as exc:
            raise AdapterError(f"{exc}; retrain the task with `hub train {task.name}`.") from None
        layers = backbone.model.config.num_hidden_layers
        if (head.config.hidden_size != backbone.hidden_size
                or (head.needs_all_layers and head.config.num_layers != layers)):
            raise AdapterError(
                f"{self.path}: head expects hidden size {head.config.hidden_size} and {head.config.num_layers} "
                f"layers, backbone {task.backbone!r} has {backbone.hidden_size} and {layers}; retrain the task on this "
                "backbone."
            )
        if head.kind != task.kind or head.config.labels != task.labels:
            raise AdapterError(
                f"{self.path}: head is a {head.kind} head with labels {head.config.labels}; registry entry "
                f"{task.name!r} says {task.kind} with {task.labels}. Fix the entry or retrain."
            )
        try:
            head.bind(backbone.model, backbone.tokenizer.all_special_ids)
        except ValueError as exc:
            raise AdapterError(f"{self.path}: {exc}") from None
        return head.to(backbone.device)

    @staticmethod
    def write(target: Path, fill: Callable[[Path], None], check: Callable[[Path], None]) -> None:
        """`fill(staging)` writes a temp folder beside `target`, `check(staging)` must pass, then it replaces `target`
        in one step; on any failure `target` is left as it was."""
        with atomic_folder(Path(target)) as staging:
            fill(staging)
            check(staging)
