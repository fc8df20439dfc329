"""Class-imbalance options of the training recipe: re-sampling (p_i ∝ n_i^q) and loss class weights."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch
from torch.utils.data import WeightedRandomSampler
from transformers import Trainer

from .registry import TrainSpec

_POWERS = {"instance": 1.0, "class": 0.0, "sqrt": 0.5}


def sampling_power(recipe: TrainSpec) -> float:
    return recipe.sampling_power if recipe.sampling == "power" else _POWERS[recipe.sampling]


def example_weights(labels: Sequence[int], power: float) -> list[float]:
    """Per-example sampling weights so that class c is drawn with probability ∝ n_c^power."""
    counts = Counter(labels)
    return [counts[label] ** (power - 1.0) for label in labels]


def class_weights(recipe: TrainSpec, labels: list[str], label_ids: Sequence[int]) -> torch.Tensor | None:
    """The loss weight of each label id: 'balanced' = n / (k * n_c) over the training labels, or the registry's dict."""
    if recipe.class_weights is None:
        return None
    if recipe.class_weights == "balanced":
        counts = Counter(label_ids)
        total, present = sum(counts.values()), len(counts)
        return torch.tensor([total / (present * counts[i]) if counts[i] else 0.0 for i in range(len(labels))])
    unknown = sorted(set(recipe.class_weights) - set(labels))
    if unknown:
        raise ValueError(f"class_weights names {unknown}, which are not among the task's labels {labels}")
    return torch.tensor([float(recipe.class_weights.get(label, 1.0)) for label in labels])


class ResamplingTrainer(Trainer):
    """A Trainer that draws training examples with replacement by `example_weights` (one epoch = n draws)."""

    def __init__(self, *args, example_weights: list[float], seed: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.example_weights = example_weights
        self.sampling_seed = seed

    def _get_train_sampler(self, train_dataset=None) -> WeightedRandomSampler:
        generator = torch.Generator().manual_seed(self.sampling_seed)
        return WeightedRandomSampler(self.example_weights, num_samples=len(self.example_weights), replacement=True,
                                     generator=generator)
