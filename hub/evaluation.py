"""Dev-set evaluation through the same router that serves requests, so card metrics are what users get."""

from __future__ import annotations

from datasets import Dataset
from tqdm.auto import tqdm

from .metrics import compute_metric
from .service import Hub


def predict_dataset(hub: Hub, task: str, dataset: Dataset, chunk: int = 256, progress: bool = True) -> list:
    """Predicted label (or value) for every row of `dataset`."""
    spec = hub.registry.task(task)
    inputs = list(zip(*(dataset[name] for name in spec.inputs)))
    predictions = []
    for start in tqdm(range(0, len(inputs), chunk), desc=f"eval {task}", disable=not progress, unit="chunk"):
        results = hub.run_many([(task, row) for row in inputs[start:start + chunk]])
        predictions.extend(r["label"] if "label" in r else r["value"] for r in results)
    return predictions


def evaluate_task(hub: Hub, task: str, dataset: Dataset, progress: bool = True) -> dict[str, float]:
    """The task's official metric (primary first) on `dataset`."""
    spec = hub.registry.task(task)
    predictions = predict_dataset(hub, task, dataset, progress=progress)
    return compute_metric(spec.metric, predictions, dataset["label"], spec.labels)
