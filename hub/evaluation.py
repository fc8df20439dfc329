"""Dev-set evaluation through the same router that serves requests, so card metrics are what users get."""

from __future__ import annotations

from datasets import Dataset
from tqdm.auto import tqdm

from .metrics import compute_metric
from .service import Hub


def predict_dataset(hub: Hub, task: str, dataset: Dataset, chunk: int = 256, progress: bool = True) -> list:
    """The prediction (label, value, tags, ...) the served task gives for every row of `dataset`."""
    codec = hub.runtime(task).codec
    requests = [codec.request(example) for example in dataset]
    predictions = []
    for start in tqdm(range(0, len(requests), chunk), desc=f"eval {task}", disable=not progress, unit="chunk"):
        results = hub.run_many([(task, request) for request in requests[start:start + chunk]])
        predictions.extend(codec.prediction(result) for result in results)
    return predictions


def evaluate_task(hub: Hub, task: str, dataset: Dataset, progress: bool = True) -> dict[str, float]:
    """The task's official metric (primary first) on `dataset`."""
    spec = hub.registry.task(task)
    predictions = predict_dataset(hub, task, dataset, progress=progress)
    codec = hub.runtime(task).codec
    return compute_metric(spec.metric, predictions, [codec.reference(example) for example in dataset], spec.labels)
