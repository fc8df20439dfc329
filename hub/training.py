"""`hub train TASK`: fine-tune only an adapter (the recipe's method: LoRA, ...) + the task head on the frozen backbone.

Uses transformers' Trainer (progress, logging, device placement, multi-process runs) with a small
nn.Module that joins the PEFT-wrapped backbone and the head; the optimizer is built here only to give
the head its own learning rate. `fit_task` also trains the two baselines the benchmark compares LoRA
with (`method`): full fine-tuning of a private backbone copy, and a linear probe (head only); those
are evaluated in memory and never written as adapter folders.
"""

from __future__ import annotations

import json
import shlex
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from datasets import Dataset
from pydantic import ValidationError
from torch import nn
from transformers import ProgressCallback, Trainer

from heads import Codec, ExampleCodec, Head, Row, kind
from heads.codec import collate_extras, pad_lists

from .adapter_folder import AdapterFolder
from .backbone import Backbone, load_backbone
from .card import build_card
from .data import read_split, sample_rows
from .devices import DTYPES
from .distributed import is_main_process, per_process_batch, world_size
from .errors import DataError, HubError
from .evaluation import score_runtime
from .imbalance import ResamplingTrainer, class_weights, example_weights, sampling_power
from .learning_check import check_learning, shown_answers
from .methods import method_named
from .registry import Registry, TaskSpec, TrainSpec
from .router import TaskRuntime
from .service import Hub
from .trainer_setup import adamw_with_warmup, optimizer_steps, quiet_transformers, trainer_arguments
from .training_clock import EstimatingProgress, TrainingClock

Method = Literal["lora", "full", "probe"]
METHODS: tuple[str, ...] = get_args(Method)


class TaskModel(nn.Module):
    """Backbone (with its adapter injected) + head, with the forward/loss signature Trainer expects."""

    def __init__(self, backbone: Backbone, encoder: nn.Module, head: Head):
        super().__init__()
        self.backbone = backbone  # encodes through `encoder`'s modules: the method injects them into backbone.model
        self.encoder = encoder  # the trained parameters (the method's wrapper, or the model itself)
        self.head = head

    def forward(self, rows: list[Row], labels: torch.Tensor | None = None,
                **extras: torch.Tensor) -> dict[str, torch.Tensor]:
        width = max(len(row.input_ids) for row in rows)
        additions = self.head.embedding_additions(extras, width)
        features = {**self.backbone.encode(rows, None, self.head.needs_all_layers, additions), **extras}
        outputs = self.head(features)
        if labels is not None:
            outputs["loss"] = self.head.loss(outputs, labels)
        return outputs


def _recipe(task: TaskSpec, overrides: dict[str, Any]) -> TrainSpec:
    given = {k: v for k, v in overrides.items() if v is not None}
    named = "lora" if "lora" in given else "adapter"  # TrainSpec reads `lora` as the adapter; errors say what was given
    unknown = sorted(set(given) - set(TrainSpec.model_fields) - {"lora"})
    if unknown:
        raise HubError(f"unknown training option(s) {unknown}; use: {', '.join(sorted(TrainSpec.model_fields))}.")
    recipe = task.train.model_dump(exclude={"adapter"} if named == "lora" else set())
    try:
        return TrainSpec.model_validate({**recipe, **given})
    except ValidationError as exc:
        where = [(named, *e["loc"][1:]) if e["loc"][:1] == ("adapter",) else e["loc"] for e in exc.errors()]
        problems = "; ".join(f"{'.'.join(map(str, loc))}={e['input']!r}: {e['msg'].lower()}"
                             for loc, e in zip(where, exc.errors()))
        raise HubError(f"task {task.name!r}: invalid training option(s): {problems}.") from None


def _tokenize(dataset: Dataset, task: TaskSpec, examples: ExampleCodec) -> Dataset:
    """Training rows through the task's codec (the same one that serves it); an example may give several."""

    def encode(batch: dict[str, list]) -> dict[str, list]:
        count = len(batch[next(iter(batch))])
        rows = [row for i in range(count) for row in examples.features({k: v[i] for k, v in batch.items()})]
        return {key: [row[key] for row in rows] for key in (rows[0] if rows else {"input_ids": None})}

    try:
        return dataset.map(encode, batched=True, remove_columns=dataset.column_names, desc=f"tokenize {task.name}")
    except ValueError as exc:
        raise DataError(f"task {task.name!r}: {exc}") from None


class _Collator:
    """Backbone rows (padded by Backbone.encode), the head's extra inputs and the labels (lists padded with -100)."""

    def __init__(self, head: Head):
        self.inputs = head.extra_inputs()

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        rows = [Row(e["input_ids"], e["token_type_ids"], {i.name: e[i.name] for i in self.inputs},
                    blocks=e.get("blocks")) for e in examples]
        batch: dict[str, Any] = collate_extras(self.inputs, [r.extras for r in rows],
                                               max(len(r.input_ids) for r in rows))
        labels = [e["labels"] for e in examples]
        batch["labels"] = pad_lists(labels, -100) if isinstance(labels[0], list) else torch.tensor(labels)
        batch["rows"] = rows
        return batch


def _command(task: str, registry: Registry, overrides: dict[str, Any]) -> str:
    parts = ["hub", "train", task, "--registry", str(registry.path.name)]
    for key, value in overrides.items():
        if value is not None:  # a mapping (the adapter) as JSON, which the CLI reads as YAML
            parts += [f"--{key.replace('_', '-')}", json.dumps(value) if isinstance(value, dict) else str(value)]
    return shlex.join(parts)


def _build_model(registry: Registry, task: TaskSpec, recipe: TrainSpec,
                 method: Method = "lora") -> tuple[TaskModel, Backbone]:
    """A private copy of the backbone and a fresh head; `method` says what else trains: a fresh adapter of the
    recipe's adapter method (lora), every backbone weight (full), or nothing but the head (probe)."""
    if method not in METHODS:
        raise HubError(f"training method {method!r} is unknown; use one of {', '.join(METHODS)}.")
    if method == "full" and recipe.runtime != "float32":
        raise HubError(f"full fine-tuning trains the backbone's float weights; runtime {recipe.runtime!r} has none to "
                       "train: use runtime float32, or train an adapter.")
    # a private backbone (adapters inject into it), in the runtime the adapter is trained for
    backbone = load_backbone(registry.backbone(task.backbone), registry, shared=False, dtype=DTYPES[recipe.runtime])
    options = dict(task.head)
    read_types = kind(task.kind).read_types
    if task.data and task.data.types and read_types:
        options.update(read_types(registry.resolve(task.data.types), task))
    try:
        head = kind(task.kind).head.from_options(options, backbone.hidden_size, task.labels,
                                                 backbone.model.config.num_hidden_layers)
    except ValueError as exc:
        raise HubError(f"task {task.name!r}: head options do not fit backbone {task.backbone!r}: {exc}") from None
    if method == "full":
        return TaskModel(backbone, backbone.model.requires_grad_(True), head), backbone
    if method == "probe":
        return TaskModel(backbone, backbone.model, head), backbone
    wrapped = method_named(recipe.adapter.method).training.wrap(backbone.model, recipe.adapter)
    if recipe.init_from:
        from .pretraining.start import start_from_domain_adapter

        base_model_id = registry.backbone(task.backbone).model_id
        start_from_domain_adapter(wrapped, registry.resolve(recipe.init_from), base_model_id)
    return TaskModel(backbone, wrapped, head), backbone


def _imbalance(head: Head, recipe: TrainSpec, train_set: Dataset) -> list[float] | None:
    """Apply the recipe's loss options to the head; return per-example sampling weights (None: no re-sampling)."""
    labels = train_set["labels"]
    per_example = bool(labels) and not isinstance(labels[0], list)
    flat = labels if per_example else [i for row in labels for i in row if i >= 0]
    if not head.config.labels and recipe.class_weights is not None:
        raise HubError("training option: class_weights weigh labels; a regression task has none")
    try:
        head.configure_loss(class_weights(recipe, head.config.labels, flat) if head.config.labels else None,
                            recipe.focal_gamma)
    except ValueError as exc:
        raise HubError(f"training option: {exc}") from None
    power = sampling_power(recipe)
    if power == 1.0:
        return None
    if not per_example or not head.config.labels:
        raise HubError(
            f"sampling {recipe.sampling!r} re-samples examples by their one label; it needs a classification task")
    return example_weights(labels, power)


def _fit(model: TaskModel, train_set: Dataset, recipe: TrainSpec, collator: _Collator, progress: bool,
         task: str) -> tuple[float, dict[str, Any]]:
    """Run transformers' Trainer over the adapter + head parameters; returns seconds spent and the clock's report
    (steps done and planned, the estimate, whether the time budget stopped it)."""
    weights = _imbalance(model.head, recipe, train_set)
    steps = optimizer_steps(len(train_set), recipe.batch_size, recipe.epochs)
    optimizer, scheduler = adamw_with_warmup(
        [([p for p in model.encoder.parameters() if p.requires_grad], recipe.learning_rate),
         (list(model.head.parameters()), recipe.head_learning_rate or recipe.learning_rate)],
        recipe.weight_decay, recipe.warmup_ratio, steps)
    clock = TrainingClock(task, steps, recipe.max_train_seconds, progress)
    started = time.time()
    with tempfile.TemporaryDirectory() as scratch:
        args = trainer_arguments(scratch, recipe.epochs, per_process_batch(recipe.batch_size), recipe.learning_rate,
                                 recipe.seed, progress and is_main_process(), max(1, steps // 10),
                                 train_sampling_strategy="group_by_length")
        with quiet_transformers():
            common = {"model": model, "args": args, "train_dataset": train_set, "optimizers": (optimizer, scheduler),
                      "data_collator": collator, "callbacks": [clock]}
            trainer = (Trainer(**common) if weights is None
                       else ResamplingTrainer(**common, example_weights=weights, seed=recipe.seed))
            if progress:  # the same bar, with the clock's estimate in it
                trainer.remove_callback(ProgressCallback)
                trainer.add_callback(EstimatingProgress(clock))
            trainer.train()
    model.eval()
    return time.time() - started, clock.report()


def _save(model: TaskModel, registry: Registry, task: TaskSpec, recipe: TrainSpec, dev_rows: Dataset,
          report: dict[str, Any], target: Path, progress: bool) -> None:
    """Write adapter + head into a staging folder, evaluate it as served, write the card, then swap it in."""
    spec = registry.backbone(task.backbone)

    def write(staging: Path) -> None:
        method = method_named(recipe.adapter.method)
        method.training.save(model.encoder, staging, spec.model_id)
        if recipe.storage.rank is not None and method.reduce_rank is not None:  # TrainSpec refused it otherwise
            method.reduce_rank(staging, recipe.storage.rank)
        if recipe.storage.adapter != "float32":
            method.store(staging, recipe.storage.adapter)
        model.head.save(staging, recipe.storage.head)

    def check(staging: Path) -> None:
        """Load the staged folder the way serving does and measure dev through the router."""
        staged = registry.model_copy(update={"tasks": [task.model_copy(update={"adapter": str(staging)})]})
        # A private backbone: the staged adapter must not stay attached to the process's shared one. Measured in the
        # runtime it was trained for: the card's metrics are what `hub serve --dtype <runtime>` answers.
        served = Hub(staged, share_backbones=False, dtype=recipe.runtime)
        metrics, predictions, references = score_runtime(served.runtime(task.name), dev_rows, served.max_batch_size,
                                                         progress)
        report["metrics"] = metrics
        check = check_learning(task, predictions, references, metrics)
        if check is not None:
            report["learning_check"] = check
        report["adapter_bytes"] = AdapterFolder(staging).nbytes()  # PEFT + head files; the card is written next
        (staging / AdapterFolder.CARD).write_text(build_card(task, spec, report), encoding="utf-8")

    AdapterFolder.write(target, write, check)


@dataclass(eq=False)
class FittedTask:
    """A trained model still in memory, with what evaluating or saving it needs."""

    task: TaskSpec
    method: str
    model: TaskModel
    backbone: Backbone
    codec: Codec
    recipe: TrainSpec
    report: dict[str, Any]

    def runtime(self) -> TaskRuntime:
        """The trained model as a router task, so it is evaluated by the same code that serves adapters."""
        self.model.eval()  # the private backbone carries the trained weights (the adapter's layers)
        return TaskRuntime(spec=self.task, backbone=self.backbone, adapter=None, head=self.model.head, codec=self.codec)


def fit_task(registry: Registry, task_name: str, method: Method = "lora", progress: bool = True,
             **overrides: Any) -> FittedTask:
    """Train `task_name` with `method` on its train split (recipe: the registry's, with `overrides`)."""
    task = registry.task(task_name)
    recipe = _recipe(task, overrides)
    torch.manual_seed(recipe.seed)
    train_split = read_split(registry, task, "train")
    train_rows = sample_rows(train_split.examples, recipe.max_train_examples, recipe.seed)
    model, backbone = _build_model(registry, task, recipe, method)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    trained = recipe.adapter.method if method == "lora" else method  # "lora": an adapter of the recipe's method
    processes = world_size()
    print(f"[{task.name}] {trained}: trainable parameters {trainable:,} / {total:,} ({trainable / total:.3%}); "
          f"{len(train_rows):,} train examples" + (f"; {train_split.dropped_note()}" if train_split.dropped else "")
          + (f"; {processes} processes" if processes > 1 else ""))
    if train_split.notes:
        print(f"[{task.name}] train file: {train_split.notes_line()}")
    spec = registry.backbone(task.backbone)
    found = kind(task.kind)
    codec = found.codec(task, model.head, backbone.tokenizer, backbone.max_length(spec, task.max_length), spec.language)
    examples = found.examples(codec)
    mismatch = examples.serving_mismatch(train_rows)  # training must see what serving will
    if mismatch:
        raise DataError(f"task {task.name!r}: {mismatch}")
    train_set = _tokenize(train_rows, task, examples)
    seconds, clock = _fit(model, train_set, recipe, _Collator(model.head), progress, task.name)
    if "stopped_by_time_budget" in clock:
        print(f"[{task.name}] stopped at the time budget ({recipe.max_train_seconds:g} s) after "
              f"{clock['train_steps']:,} of {clock['planned_steps']:,} steps; the folder is written and evaluated as "
              "trained so far")
    report: dict[str, Any] = {
        "task": task.name, "dataset": (task.data.corpus or task.data.path or task.name) if task.data else task.name,
        "trainable_parameters": trainable, "total_parameters": total, "trainable_share": trainable / total,
        "train_examples": len(train_rows), "train_seconds": round(seconds, 1), **clock,
        **({"train_dropped": dict(train_split.dropped)} if train_split.dropped else {}),
        **({"train_notes": dict(train_split.notes)} if train_split.notes else {}),
        "head": model.head.config.model_dump(exclude={"kind", "hidden_size", "labels"}),
        "train": recipe.model_dump(), "command": _command(task.name, registry, overrides),
        **({"processes": processes} if processes > 1 else {}),
    }
    if processes > 1:
        report["command"] += f" --processes {processes}"
    return FittedTask(task, method, model, backbone, codec, recipe, report)


def train_task(registry: Registry, task_name: str, output: str | Path | None = None, progress: bool = True,
               **overrides: Any) -> dict[str, Any]:
    """Train, evaluate on dev, and atomically write the adapter folder; returns the report written to its card."""
    fitted = fit_task(registry, task_name, "lora", progress, **overrides)
    task, report = fitted.task, fitted.report
    if not is_main_process():  # data-parallel: the main process evaluates and writes the folder, once
        return report
    dev_split = read_split(registry, task, "dev")
    dev_rows = sample_rows(dev_split.examples, fitted.recipe.max_eval_examples, fitted.recipe.seed)
    report["eval_examples"] = len(dev_rows)
    if dev_split.dropped:
        report["eval_dropped"] = dict(dev_split.dropped)
        print(f"[{task.name}] dev: {dev_split.dropped_note()}")
    target = Path(output) if output else registry.adapter_dir(task)
    if output:  # the card's reproduce command writes where this run wrote
        report["command"] += f" --output {shlex.quote(str(output))}"
    _save(fitted.model, registry, task, fitted.recipe, dev_rows, report, target, progress)
    report["folder"] = str(target)
    print(f"[{task.name}] dev {task.metric}: " + ", ".join(f"{k}={v:.4f}" for k, v in report["metrics"].items())
          + f"; adapter folder {target} ({report['adapter_bytes']:,} bytes)")
    check = report.get("learning_check") or {}
    if "majority_label" in check:
        (name, value), = check["majority_baseline"].items()
        majority, top = shown_answers(check)
        print(f"[{task.name}] always answering {majority} would score {name}={value:.4f}; the model "
              f"answers {top} for {check['top_prediction_share']:.0%} of the dev {check['unit']}")
    if "warning" in check:
        print(f"[{task.name}] WARNING: {check['warning']}")
    return report
