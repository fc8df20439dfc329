"""The adapter folder's model card (README.md with Hub metadata), and reading its metrics back."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, TypedDict, cast

import yaml
from huggingface_hub import ModelCard, ModelCardData
from huggingface_hub.repocard_data import EvalResult

from heads import kind

from .adapter_folder import AdapterFolder
from .data.filters import describe, note_lines
from .errors import AdapterError
from .learning_check import card_lines
from .methods import PEFT_QUANTIZED_WEIGHTS, AdapterMethod, PeftTraining, method_named
from .registry import BackboneSpec, TaskSpec

REPORT_KEYS = ("trainable_parameters", "total_parameters", "adapter_bytes", "train_examples", "eval_examples",
               "train_seconds", "command")
# rows the data section dropped, per reason (only when some were); what a model that learned nothing would score
OPTIONAL_KEYS = ("train_dropped", "eval_dropped", "train_notes", "learning_check", "train_steps", "planned_steps",
                 "stopped_by_time_budget", "processes")
RECIPE = re.compile(r"^## Recipe\n\n```yaml\n(.*?)^```", re.MULTILINE | re.DOTALL)  # build_card's recipe block


def _dropped_note(report: dict[str, Any]) -> str:
    """What the train and dev files lost (data.drop, null label_values, rows a reader left out) and how the train
    file's rows were read (a reader's notes)."""
    notes = [f"{split} file: {describe(report[key])}" for split, key in (("train", "train_dropped"),
                                                                           ("dev", "eval_dropped")) if report.get(key)]
    notes += [f"train file: {line}" for line in note_lines(report.get("train_notes") or {})]
    if report.get("stopped_by_time_budget"):
        notes.append(f"stopped at its time budget ({report['stopped_by_time_budget']:g} s) after "
                     f"{report['train_steps']:,} of {report['planned_steps']:,} steps")
    return "".join(f"\n- {note}" for note in notes)


def build_card(task: TaskSpec, backbone: BackboneSpec, report: dict[str, Any]) -> str:
    """Card text: metadata (base model, library, tags, Hub data sets, metrics) + recipe, sizes, reproduce command."""
    metrics = report["metrics"]
    method = method_named((report["train"].get("adapter") or {}).get("method", "lora"))
    storage = {"adapter": "float32", "head": "float32", **(report["train"].get("storage") or {})}
    stored = storage["adapter"] + _rank_note(storage)
    runtime = report["train"].get("runtime", "float32")  # cards from before train.runtime: float32
    data = ModelCardData(
        base_model=backbone.model_id,
        library_name="peft" if isinstance(method.training, PeftTraining) else "bert-adapter-hub",
        language=backbone.language,
        pipeline_tag=kind(task.kind).pipeline_tag,
        tags=[method.name, "bert-adapter-hub", task.kind, task.name],
        metrics=[task.metric],
        model_name=f"{task.name}-{method.name}",
        datasets=dataset_ids(task) or None,
        bert_adapter_hub={**{key: report[key] for key in REPORT_KEYS}, "task": serving_fields(task),
                          **{key: report[key] for key in OPTIONAL_KEYS if report.get(key)}},
        eval_results=[
            EvalResult(
                task_type=kind(task.kind).pipeline_tag or task.kind,
                **eval_dataset(task),
                metric_type=name,
                metric_value=round(value, 4),
            )
            for name, value in metrics.items()
        ],
    )
    recipe = yaml.safe_dump({"head": report["head"], "train": report["train"]}, sort_keys=False, allow_unicode=True)
    rows = "\n".join(f"| {name} | {value:.4f} |" for name, value in metrics.items())
    trainable = (f"{report['trainable_parameters']:,} of {report['total_parameters']:,} "
                 f"({report['trainable_share']:.3%})")
    body = f"""
# {task.name}: {method.title} adapter + {task.kind} head for `{backbone.model_id}`

{task.description or task.kind} — served by bert-adapter-hub from one frozen backbone shared by all tasks.

## Dev metrics ({report['eval_examples']} dev examples, {_runtime_note(runtime)})

| metric | value |
|---|---|
{rows}
{card_lines(report.get("learning_check"))}
## Size

- adapter method: {method.title} (`{method.name}`); weights stored as {stored}, head as {storage["head"]}
- trainable parameters: {trainable}
- bytes on disk (adapter + head files, card excluded): {report['adapter_bytes']:,}
- trained on {report['train_examples']:,} examples in {report['train_seconds']:.0f} s{_dropped_note(report)}

## Recipe

```yaml
{recipe}```

Reproduce: `{report['command']}`

## Use

```python
import hub
hub.run("{task.name}", {_example_input(task)})
```

{_home_library(method, backbone, storage["adapter"])}
the head is `head_config.json` + `head.safetensors` (see `heads/` in bert-adapter-hub).
"""
    return ModelCard.from_template(data, template_str="---\n{{ card_data }}\n---\n" + body).content


def _runtime_note(runtime: str) -> str:
    """The runtime an adapter was trained and validated for, as the card's metrics heading says it."""
    if runtime == "float32":
        return "served on the float32 backbone, as trained"
    return f"trained with and served on the {runtime} backbone: serve it with `--dtype {runtime}`"


def trained_runtime(folder: Path) -> str:
    """The backbone runtime a folder's adapter was trained and validated for (its card's recipe, train.runtime):
    'float32' for cards written before the option, or for a folder without a card."""
    path = folder / AdapterFolder.CARD
    found = RECIPE.search(ModelCard.load(path).text) if path.is_file() else None
    recipe = yaml.safe_load(found.group(1)) if found else None
    train = recipe.get("train") if isinstance(recipe, dict) else None
    return str(train.get("runtime", "float32")) if isinstance(train, dict) else "float32"


def _rank_note(storage: dict[str, Any]) -> str:
    rank = storage.get("rank")
    return "" if rank is None else f" at rank {rank} (the trained update's best rank-{rank} approximation)"


def _home_library(method: AdapterMethod, backbone: BackboneSpec, storage: str) -> str:
    """How to read the adapter part without the hub, where a library other than the hub reads it."""
    if not isinstance(method.training, PeftTraining):
        return f"The {method.title} part is served by bert-adapter-hub (`hub.methods.{method.name}`);"
    if storage in ("int8", "int4"):
        return (f"The {method.title} part is stored as {storage} (`{PEFT_QUANTIZED_WEIGHTS}`), which PEFT does not "
                "read: `hub quantize TASK --dtype float32` writes the float file plain PEFT reads;")
    load = f'PeftModel.from_pretrained(AutoModel.from_pretrained("{backbone.model_id}"), "<this folder>")'
    return f"Plain PEFT reads the {method.title} part: `{load}`;"


def serving_fields(task: TaskSpec) -> dict[str, Any]:
    """What a registry needs, beyond the folder's files, to serve the adapter (`hub pull` reads it back)."""
    return task.model_dump(include={"kind", "labels", "inputs", "metric", "description", "example", "max_length",
                                    "head"}, exclude_none=True)


def dataset_ids(task: TaskSpec) -> list[str]:
    """The Hub data sets a task trains on, for the card's `datasets` (empty when the registry names none)."""
    if task.data is None:
        return []
    hub_id = task.data.hub_id or (task.data.path if task.data.format == "hf" else None)
    return [hub_id] if hub_id else []


class EvalDataset(TypedDict):
    """The `dataset_*` arguments of an EvalResult."""

    dataset_type: str
    dataset_name: str
    dataset_config: str | None
    dataset_split: str | None


def eval_dataset(task: TaskSpec) -> EvalDataset:
    """The model-index `dataset` of the dev metrics: the Hub data set (with its config and split when the task
    loads it from the Hub), else the task's name."""
    ids = dataset_ids(task)
    data = task.data
    # config and split are only known for a task that loads this very Hub data set (format hf)
    hub_data = data if ids and data is not None and data.format == "hf" and data.path == ids[0] else None
    return {
        "dataset_type": ids[0] if ids else task.name,
        "dataset_name": task.description or task.name,
        "dataset_config": hub_data.name if hub_data is not None else None,
        # as hub/data/sources.py reads it
        "dataset_split": (hub_data.dev or "validation") if hub_data is not None else "dev",
    }


def rebuild_card(folder: Path, task: TaskSpec, backbone: BackboneSpec, metrics: dict[str, float] | None = None,
                 storage: dict[str, Any] | None = None) -> str:
    """The folder's card written again by build_card from what it records (metrics, sizes, recipe, command)
    and the task's current registry entry: new card fields for a trained adapter without retraining it. `metrics`
    replace the recorded ones if given; with `storage` (train.storage, after `hub quantize`) the card records it
    and the folder's bytes measured anew."""
    card = ModelCard.load(folder / AdapterFolder.CARD)
    found = RECIPE.search(card.text)
    if found is None:
        raise AdapterError(f"{folder / AdapterFolder.CARD} has no '## Recipe' yaml block to rebuild from; "
                           "retrain the task.")
    report = {**_report(card), **yaml.safe_load(found.group(1)), "metrics": metrics or _metrics(card)}
    report["trainable_share"] = report["trainable_parameters"] / report["total_parameters"]
    if storage is not None:
        report["train"] = {**report["train"], "storage": storage}
        report["adapter_bytes"] = AdapterFolder(folder).nbytes() - (folder / AdapterFolder.CARD).stat().st_size
    return build_card(task, backbone, report)


def card_for_upload(card_file: Path, task: TaskSpec) -> str:
    """The card at `card_file` with the task's serving fields and data set ids in its metadata (cards written
    before these existed lack them)."""
    card = ModelCard.load(card_file)
    report = _report(card)
    card.data.bert_adapter_hub = {**report, "task": serving_fields(task)}
    card.data.datasets = card.data.datasets or dataset_ids(task) or None
    return card.content


def card_serving_fields(folder: Path) -> dict[str, Any]:
    """The serving fields recorded in the metadata of a folder's card ({} when absent)."""
    return dict(card_report(folder).get("task") or {})


def _example_input(task: TaskSpec) -> str:
    if task.example_input is not None:
        return repr(task.example_input)
    return '"some text"' if len(task.inputs) == 1 else '("first text", "second text")'


def card_metrics(folder: Path) -> dict[str, float]:
    """The dev metrics recorded in an adapter folder's card, by metric name."""
    return _metrics(ModelCard.load(folder / AdapterFolder.CARD))


def card_report(folder: Path) -> dict[str, Any]:
    """The training report (sizes, example counts, reproduce command) recorded in the card's metadata."""
    return _report(ModelCard.load(folder / AdapterFolder.CARD))


def _metrics(card: ModelCard) -> dict[str, float]:
    data = cast(ModelCardData, card.data)  # a ModelCard's data is a ModelCardData; the stub says CardData
    return {r.metric_type: float(r.metric_value) for r in (data.eval_results or [])}


def _report(card: ModelCard) -> dict[str, Any]:
    return dict(card.data.to_dict().get("bert_adapter_hub") or {})
