"""Dev-set evaluation through the same router that serves requests, so card metrics are what users get."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from datasets import Dataset
from tqdm.auto import tqdm

from .metrics import compute_metric
from .router import TaskRuntime, run_batch
from .service import Hub

Scorer = Callable[[str, Sequence, Sequence, Sequence[str] | None], dict[str, float]]


def predict_runtime(runtime: TaskRuntime, dataset: Dataset, max_batch_size: int = 64, chunk: int = 256,
                    progress: bool = True) -> list:
    """The prediction (label, value, tags, ...) a loaded task gives for every row of `dataset`."""
    codec, examples = runtime.codec, runtime.examples
    requests = [codec.normalize(examples.request(example)) for example in dataset]
    predictions: list[Any] = []
    for start in tqdm(range(0, len(requests), chunk), desc=f"eval {runtime.spec.name}", disable=not progress,
                      unit="chunk"):
        results = run_batch([(runtime, request) for request in requests[start:start + chunk]], max_batch_size)
        predictions.extend(examples.prediction(result) for result in results)
    return predictions


def score_runtime(runtime: TaskRuntime, dataset: Dataset, max_batch_size: int = 64, progress: bool = True,
                  scorer: Scorer = compute_metric) -> tuple[dict[str, float], list, list]:
    """(the task's official metric on `dataset`, primary first; the predictions; the references)."""
    predictions = predict_runtime(runtime, dataset, max_batch_size, progress=progress)
    references = [runtime.examples.reference(example) for example in dataset]
    return scorer(runtime.spec.metric, predictions, references, runtime.spec.labels), predictions, references


def evaluate_runtime(runtime: TaskRuntime, dataset: Dataset, max_batch_size: int = 64, progress: bool = True,
                     scorer: Scorer = compute_metric) -> dict[str, float]:
    """The task's official metric (primary first) on `dataset`; `scorer` computes it (default: hub.metrics)."""
    return score_runtime(runtime, dataset, max_batch_size, progress, scorer)[0]


def evaluate_task(hub: Hub, task: str, dataset: Dataset, progress: bool = True) -> dict[str, float]:
    """A served task's official metric (primary first) on `dataset`."""
    return evaluate_runtime(hub.runtime(task), dataset, hub.max_batch_size, progress)
