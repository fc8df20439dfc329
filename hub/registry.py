"""registry.yaml: the validated list of backbones and tasks the hub serves.

Paths in a registry are relative to the registry file. Every error names the file, the entry, the
field and the fix (spaCy-style config errors).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from heads import KINDS
from heads.storage import HeadStorage

from .adapter_folder import AdapterFolder, EntryMismatch
from .errors import RegistryError
from .methods import METHODS, AdapterOptions, adapter_options, method_named
from .methods.storage import StorageDtype
from .metrics import METRICS
from .yaml_loading import load_yaml

if TYPE_CHECKING:
    from pydantic_core import ErrorDetails


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BackboneSpec(_Strict):
    """One frozen encoder shared by all tasks that name it."""

    name: str
    source: str = Field(
        description="'pkg:<module>/<folder>' (model inside a PyPI package), a local folder, or a Hub id")
    id: str | None = Field(None, description="canonical model id recorded in adapters; defaults to source")
    revision: str | None = None
    language: str
    max_length: int = Field(128, ge=8, le=4096)

    @property
    def model_id(self) -> str:
        return self.id or self.source


class StorageSpec(_Strict):
    """How `hub train` stores the trained weights (the card's metrics are measured on what is stored)."""

    adapter: StorageDtype = Field(
        default="float32", description="the adapter's weights file: int8 or int4 (LoRA only: a float32 scale per "
                                       "rank channel), float16 or bfloat16 (any method; PEFT reads them as they are)")
    rank: int | None = Field(default=None, ge=1, description="LoRA only: store each layer's trained update at this "
                             "lower rank (its best approximation, by SVD); None keeps the trained rank")
    head: HeadStorage = Field(default="float32", description="the head's weights file: float32, float16, or int8 (a "
                                                             "float32 scale per row: heads/storage.py)")


class TrainSpec(_Strict):
    """The training recipe; recorded in the adapter's card."""

    epochs: float = Field(default=3.0, gt=0)
    learning_rate: float = Field(default=1e-3, gt=0)
    head_learning_rate: float | None = Field(default=None, gt=0)
    batch_size: int = Field(default=32, ge=1)
    max_train_examples: int | None = Field(default=None, ge=1)
    max_eval_examples: int | None = Field(default=None, ge=1)
    max_train_seconds: float | None = Field(
        default=None, gt=0, description="a time budget: training stops after this many seconds and the folder is "
                                        "still evaluated and written (the card says so)")
    warmup_ratio: float = Field(default=0.06, ge=0, lt=1)
    weight_decay: float = Field(default=0.01, ge=0)
    seed: int = 42
    adapter: SerializeAsAny[AdapterOptions] = Field(
        default_factory=lambda: METHODS["lora"].options(method="lora"),
        description="the adapter method and its options, e.g. {method: lora, r: 8} (`lora: {r: 8}` also works)")
    storage: StorageSpec = Field(default_factory=StorageSpec)
    init_from: str | None = Field(
        default=None, description="a domain adapter folder (`hub pretrain` wrote it; relative to the registry) the "
                                  "task's adapter starts from instead of from scratch: same method and options")
    runtime: Literal["float32", "int8"] = Field(
        default="float32", description="the backbone runtime the adapter trains against and its card's dev metrics are "
        "measured in: float32, or int8 for serving with `--dtype int8` (hub/int8.py: the int8 backbone in the loop, "
        "gradients passed straight through its rounding)")
    # class imbalance (classification; class weights and focal loss also for softmax tagging)
    sampling: Literal["instance", "class", "sqrt", "power"] = Field(
        default="instance", description="re-sampling: p(example of class c) ∝ n_c^q, q = 1 (instance), 0 (class), "
                                        "0.5 (sqrt), sampling_power")
    sampling_power: float = Field(default=0.5, ge=0.0, le=1.0, description="q for sampling: power")
    class_weights: Literal["balanced"] | dict[str, float] | None = Field(
        default=None, description="loss weight per label: 'balanced' (n / (k * n_c)) or {label: weight}")
    focal_gamma: float = Field(default=0.0, ge=0.0, description="focal loss (1 - p_t)^gamma; 0 = cross entropy")

    @model_validator(mode="before")
    @classmethod
    def _lora_alias(cls, raw: Any) -> Any:
        """`lora: {...}`, as registries wrote the adapter before there were methods, is
        `adapter: {method: lora, ...}`."""
        if isinstance(raw, dict) and "lora" in raw:
            if "adapter" in raw:
                raise ValueError("give the adapter's options once: 'adapter' ({method: lora, ...}) or 'lora', not both")
            raw = {**{k: v for k, v in raw.items() if k != "lora"},
                   "adapter": {"method": "lora", **(raw["lora"] or {})}}
        return raw

    @field_validator("adapter", mode="before")
    @classmethod
    def _method_options(cls, raw: Any) -> Any:
        """The options of the method named by `method` (default lora), validated by that method's options class."""
        if isinstance(raw, AdapterOptions):
            return raw
        if not isinstance(raw, dict):
            raise ValueError("give the adapter as a mapping, e.g. {method: lora, r: 8}")
        return adapter_options(raw)

    @model_validator(mode="after")
    def _storage_fits_method(self) -> TrainSpec:
        """A storage the adapter's method cannot write is refused here, not after hours of training."""
        stored = method_named(self.adapter.method).storage_dtypes
        if self.storage.adapter not in stored:
            raise ValueError(f"storage.adapter {self.storage.adapter!r} is not how {self.adapter.method} adapters are "
                             f"stored; use one of: {', '.join(stored)}")
        rank, trained = self.storage.rank, getattr(self.adapter, "r", None)
        if rank is not None and method_named(self.adapter.method).reduce_rank is None:
            raise ValueError(f"storage.rank: {self.adapter.method} adapters have no rank to reduce; leave it out")
        if rank is not None and isinstance(trained, int) and rank >= trained:
            raise ValueError(f"storage.rank {rank} is not below the trained rank r={trained}; give a lower one or "
                             "leave it out")
        return self


class DataSpec(_Strict):
    """Where a task's train/dev examples come from; see hub/data/__init__.py for the formats."""

    format: Literal["tsv", "csv", "jsonl", "conll", "squad", "semeval", "spert", "hf", "package"]
    train: str | None = None
    dev: str | None = None
    header: bool = True
    columns: dict[str, str | int] = {}
    label_values: dict[str, str | None] | None = Field(
        None, description="raw label value -> the task's label name; null drops the rows with that raw value")
    drop: dict[str, list[str]] = Field(
        {}, description="field (an input or `label`) -> raw values whose rows are dropped, e.g. {label: ['-']}")
    token_pattern: str | None = Field(
        None, description="tagging: a regular expression each token must match; its first group (or the whole match) "
                          "is the token, e.g. '^(.)' keeps the character of a 'character+digit' column")

    @field_validator("token_pattern")
    @classmethod
    def _compiles(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"token_pattern {pattern!r} is not a regular expression ({exc})") from None
        return pattern
    path: str | None = Field(None, description="Hub data set id (format: hf)")
    name: str | None = Field(None, description="Hub data set config (format: hf)")
    corpus: str | None = Field(None, description="package corpus name (format: package)")
    dev_every: int | None = Field(None, ge=2,
                                  description="train and dev from one file: every n-th article (squad) is dev")
    hub_id: str | None = Field(None, description="the Hub data set these files are (e.g. nyu-mll/glue), for the card's "
                                                 "`datasets`")
    types: str | None = Field(None, description="the data's types file (SpERT's types.json for `spert`): the task's "
                                                "types are checked against it and head options read from it (symmetric "
                                                "relation types)")


class TaskSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    backbone: str
    kind: str = Field(description="a task kind (a folder of heads/): classification, regression, tagging, ...")
    adapter: str | None = None
    hub: str | None = Field(None, description="a Hub adapter, owner/name[@revision]: fetched into `adapter` on first "
                                              "use (`hub pull` sets it, pinned to the commit it downloaded)")
    labels: list[str] | None = None
    inputs: list[str] = ["text"]
    metric: str = Field("", description="a metric of hub.metrics (default: the kind's)")
    description: str = ""
    example: str | list[str] | dict[str, Any] | None = Field(
        None, description="a sample input in any form `hub.run` takes (a list of two for pairs, a dict for QA, {text, "
                          "head: [start, end], tail: [start, end]} for relations), used by `hub demo` and the card")
    max_length: int | None = Field(None, ge=8, le=4096,
                                   description="tokens per row for this task (default: the backbone's)")
    head: dict[str, Any] = {}
    data: DataSpec | None = None
    train: TrainSpec = TrainSpec()

    @field_validator("kind", "metric")
    @classmethod
    def _known_name(cls, value: str, info: ValidationInfo) -> str:
        known = KINDS if info.field_name == "kind" else METRICS
        if value not in known and not (info.field_name == "metric" and value == ""):  # "": the kind's default
            raise ValueError(f"unknown {info.field_name} {value!r}; use one of: {', '.join(sorted(known))}")
        return value

    @field_validator("inputs")
    @classmethod
    def _one_or_two_inputs(cls, inputs: list[str]) -> list[str]:
        if not 1 <= len(inputs) <= 2 or len(set(inputs)) != len(inputs):
            raise ValueError("give one input field (single text) or two distinct ones (a text pair)")
        return inputs

    @model_validator(mode="after")
    def _labels_fit_kind(self) -> TaskSpec:
        self.metric = self.metric or KINDS[self.kind].default_metric
        head_class = KINDS[self.kind].head
        if head_class.needs_labels:
            if not self.labels or len(self.labels) < 2:
                raise ValueError(f"kind {self.kind!r} needs 'labels': a list of at least two label names")
            if len(set(self.labels)) != len(self.labels):
                raise ValueError("'labels' has duplicates; list each label once")
        elif self.labels:
            raise ValueError(f"kind {self.kind!r} predicts a value, not labels; remove 'labels'")
        head_class.options_class.model_validate(self.head)  # unknown or bad head options fail here
        if self.head.get("pair") == "siamese" and len(self.inputs) != 2:
            raise ValueError("head.pair: siamese compares two texts; this task has one input field")
        if self.data and self.data.types and KINDS[self.kind].read_types is None:
            raise ValueError(f"data.types: kind {self.kind!r} reads no types file; remove it")
        self.labels = head_class.expand_labels(self.labels, self.head)
        head_class.config_class.model_validate(
            {**self.head, "kind": self.kind, "hidden_size": 1, "labels": self.labels})
        if (isinstance(self.example, list) and len(self.example) != len(self.inputs)
                or isinstance(self.example, str) and len(self.inputs) != 1):
            raise ValueError(f"'example' must give {len(self.inputs)} text(s), one per input field {self.inputs}")
        return self

    @property
    def example_input(self) -> str | tuple[str, ...] | dict[str, Any] | None:
        """`example` in the form `hub.run` takes (a tuple for pairs)."""
        return tuple(self.example) if isinstance(self.example, list) else self.example


class Registry(_Strict):
    backbones: list[BackboneSpec]
    tasks: list[TaskSpec] = []
    path: Path = Field(Path("registry.yaml"), exclude=True)
    # task -> why its adapter folder cannot be used (only when loaded with strict_adapters=False)
    adapter_problems: dict[str, str] = Field(default_factory=dict, exclude=True)

    def backbone(self, name: str) -> BackboneSpec:
        return next(b for b in self.backbones if b.name == name)

    def task(self, name: str) -> TaskSpec:
        from .errors import UnknownTaskError

        for task in self.tasks:
            if task.name == name:
                return task
        raise UnknownTaskError(name, [t.name for t in self.tasks])

    def resolve(self, relative: str) -> Path:
        """A path from the registry, made absolute against the registry file's folder."""
        path = Path(relative).expanduser()
        return path if path.is_absolute() else (self.path.parent / path).resolve()

    def adapter_dir(self, task: TaskSpec) -> Path:
        return self.resolve(task.adapter or f"adapters/{task.name}")


def _where(path: Path, raw: Any, loc: tuple) -> str:
    """'file: tasks entry 'sst2' (#3), field 'kind'' from a pydantic error location."""
    parts = [str(path)]
    if len(loc) >= 2 and loc[0] in ("tasks", "backbones") and isinstance(loc[1], int):
        entries = raw.get(loc[0]) if isinstance(raw, dict) else None
        entry = entries[loc[1]] if isinstance(entries, list) and loc[1] < len(entries) else None
        name = entry.get("name") if isinstance(entry, dict) else None
        parts.append(f"{loc[0]} entry {name!r} (#{loc[1] + 1})" if name else f"{loc[0]} entry #{loc[1] + 1}")
        loc = loc[2:]
        train = entry.get("train") if isinstance(entry, dict) else None
        if loc[:2] == ("train", "adapter") and isinstance(train, dict) and "lora" in train:
            loc = ("train", "lora", *loc[2:])  # the entry wrote the adapter's options under their old name
    if loc:
        parts.append("field '" + ".".join(str(p) for p in loc) + "'")
    return ": ".join(parts)


def _fix_for(error: ErrorDetails) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "remove this key (check its spelling against the registry schema in README.md)"
    if kind == "missing":
        return "add this field"
    return "correct the value"


def _entry(path: Path, group: str, index: int, name: str, field: str) -> str:
    return f"{path}: {group} entry {name!r} (#{index + 1}), field '{field}'"


def parse_registry(raw: Any, path: Path, strict_adapters: bool = True) -> Registry:
    """Validate a parsed registry document; raise RegistryError on the first problems found.

    `strict_adapters=False`: a broken adapter folder does not fail the registry; its task is recorded in
    `adapter_problems` with the reason (a server serves the other tasks and answers that one with a 503).
    """
    if not isinstance(raw, dict):
        raise RegistryError(f"{path}: a registry is a mapping with 'backbones' and 'tasks' lists.")
    try:
        registry = Registry.model_validate({**raw, "path": path.resolve()})
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{_where(path, raw, tuple(err['loc']))}: {msg}; {_fix_for(err)}.")
        raise RegistryError("invalid registry:\n  " + "\n  ".join(lines)) from None
    _check_references(registry, path, strict_adapters)
    return registry


def with_adapter(registry: Registry, task_name: str, folder: Path) -> Registry:
    """The registry with task `task_name` served from the adapter folder `folder` (e.g. one `hub train --output`
    wrote), checked against the task's entry as the registry's own folders are."""
    task = registry.task(task_name)
    folder = Path(folder).expanduser().resolve()
    if not folder.is_dir():
        raise RegistryError(f"--adapter {folder}: no such folder; give the folder `hub train --output` wrote.")
    index = registry.tasks.index(task)
    tasks = [*registry.tasks[:index], task.model_copy(update={"adapter": str(folder)}), *registry.tasks[index + 1:]]
    copied = registry.model_copy(update={"tasks": tasks, "adapter_problems": {
        name: problem for name, problem in registry.adapter_problems.items() if name != task_name}})
    _check_adapter_folder(copied, index, tasks[index], registry.path)
    return copied


def _check_references(registry: Registry, path: Path, strict_adapters: bool = True) -> None:
    groups = (("backbones", [b.name for b in registry.backbones]), ("tasks", [t.name for t in registry.tasks]))
    for group, names in groups:
        seen: set[str] = set()
        for i, name in enumerate(names):
            if name in seen:
                raise RegistryError(
                    f"{_entry(path, group, i, name, 'name')}: duplicate name; rename or remove one of them.")
            seen.add(name)
    backbones = {b.name for b in registry.backbones}
    for i, task in enumerate(registry.tasks):
        if task.backbone not in backbones:
            raise RegistryError(
                f"{_entry(path, 'tasks', i, task.name, 'backbone')}: unknown backbone {task.backbone!r}; "
                f"use one of: {', '.join(sorted(backbones))}."
            )
        try:
            _check_adapter_folder(registry, i, task, path)
        except RegistryError as exc:
            if strict_adapters:
                raise
            registry.adapter_problems[task.name] = str(exc)


def _check_adapter_folder(registry: Registry, index: int, task: TaskSpec, path: Path) -> None:
    """An absent folder means 'not trained yet'; a present one must be complete and fit the entry."""
    folder = AdapterFolder(registry.adapter_dir(task))
    if not folder.path.exists():
        return
    try:
        folder.check_entry(task)
    except EntryMismatch as exc:
        raise RegistryError(f"{_entry(path, 'tasks', index, task.name, exc.field)}: {exc}") from None


def load_registry(path: str | Path, strict_adapters: bool = True) -> Registry:
    """Read and validate a registry YAML file (see parse_registry for `strict_adapters`)."""
    path = Path(path)
    return parse_registry(load_yaml(path), path, strict_adapters)
