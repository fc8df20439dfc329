"""Class-imbalance options: what the sampler draws and what the loss weighs, as specified."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from heads import KINDS
from heads.losses import classification_loss
from hub.errors import HubError
from hub.imbalance import ResamplingTrainer, class_weights, example_weights, sampling_power
from hub.registry import TrainSpec
from hub.training import _imbalance

LABELS = [0] * 90 + [1] * 10


@pytest.mark.parametrize(("options", "share_of_rare"), [
    ({"sampling": "instance"}, 0.10), ({"sampling": "class"}, 0.50),
    ({"sampling": "sqrt"}, 10 ** 0.5 / (90 ** 0.5 + 10 ** 0.5)), ({"sampling": "power", "sampling_power": 0.25}, 10 ** 0.25 / (90 ** 0.25 + 10 ** 0.25)),
])
def test_resampling_draws_class_c_with_probability_n_c_to_the_q(options, share_of_rare):
    weights = torch.tensor(example_weights(LABELS, sampling_power(TrainSpec(**options))))
    assert (weights[90:].sum() / weights.sum()).item() == pytest.approx(share_of_rare, rel=1e-6)
    sampler = torch.utils.data.WeightedRandomSampler(weights, 20000, generator=torch.Generator().manual_seed(0))
    drawn = torch.tensor([LABELS[i] for i in sampler]).float().mean().item()
    assert drawn == pytest.approx(share_of_rare, abs=0.015)


def test_balanced_and_explicit_class_weights():
    balanced = class_weights(TrainSpec(class_weights="balanced"), ["a", "b"], LABELS)
    assert balanced.tolist() == pytest.approx([100 / (2 * 90), 100 / (2 * 10)])
    explicit = class_weights(TrainSpec(class_weights={"b": 3.0}), ["a", "b"], LABELS)
    assert explicit.tolist() == [1.0, 3.0]
    with pytest.raises(ValueError, match="not among the task's labels"):
        class_weights(TrainSpec(class_weights={"zzz": 2.0}), ["a", "b"], LABELS)
    assert class_weights(TrainSpec(), ["a", "b"], LABELS) is None


def test_weighted_and_focal_losses():
    torch.manual_seed(0)
    logits, targets = torch.randn(8, 3), torch.tensor([0, 1, 2, 2, 1, 0, 0, -100])
    weights = torch.tensor([0.5, 2.0, 1.0])
    assert classification_loss(logits, targets, weights) == pytest.approx(F.cross_entropy(logits, targets, weight=weights).item(), rel=1e-5)
    assert classification_loss(logits, targets) == pytest.approx(F.cross_entropy(logits, targets).item(), rel=1e-5)
    p_t = logits.softmax(-1)[torch.arange(7), targets[:7]]
    expected = (-(1 - p_t) ** 2 * p_t.log()).mean()
    focal = classification_loss(logits, targets, focal_gamma=2.0)
    assert focal.item() == pytest.approx(expected.item(), rel=1e-5)
    assert focal < classification_loss(logits, targets)  # easy examples count less


def test_trainer_gets_the_options_or_a_clear_refusal():
    from datasets import Dataset

    head = KINDS["classification"].head.from_options({}, hidden_size=4, labels=["a", "b"])
    rows = Dataset.from_dict({"labels": LABELS})
    weights = _imbalance(head, TrainSpec(sampling="class", class_weights="balanced", focal_gamma=1.0), rows)
    assert weights is not None and head.focal_gamma == 1.0 and head.class_weights.tolist() == pytest.approx([100 / 180, 100 / 20])
    assert _imbalance(head, TrainSpec(), rows) is None
    regression = KINDS["regression"].head.from_options({}, hidden_size=4, labels=None)
    with pytest.raises(HubError, match="regression task has none"):
        _imbalance(regression, TrainSpec(class_weights="balanced"), Dataset.from_dict({"labels": [1.0, 2.0]}))
    with pytest.raises(HubError, match="not to 'regression'"):
        _imbalance(regression, TrainSpec(focal_gamma=2.0), Dataset.from_dict({"labels": [1.0, 2.0]}))
    crf = KINDS["tagging"].head.from_options({"crf": True}, hidden_size=4, labels=["O", "B-X", "I-X"])
    tags = Dataset.from_dict({"labels": [[0, 1, 2, -100]]})
    with pytest.raises(HubError, match="not to 'tagging'"):
        _imbalance(crf, TrainSpec(focal_gamma=2.0), tags)
    with pytest.raises(HubError, match="needs a classification task"):
        _imbalance(KINDS["tagging"].head.from_options({}, hidden_size=4, labels=["O", "B-X", "I-X"]), TrainSpec(sampling="class"), tags)


def test_resampling_trainer_uses_the_weighted_sampler(tmp_path):
    from datasets import Dataset
    from transformers import TrainingArguments

    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    trainer = ResamplingTrainer(model=torch.nn.Linear(1, 1), args=args, train_dataset=Dataset.from_dict({"labels": LABELS}),
                                example_weights=example_weights(LABELS, 0.0), seed=3)
    sampler = trainer._get_train_sampler()
    assert isinstance(sampler, torch.utils.data.WeightedRandomSampler) and sampler.num_samples == 100
    assert sampler.weights[0].item() == pytest.approx(1 / 90) and sampler.weights[-1].item() == pytest.approx(1 / 10)
