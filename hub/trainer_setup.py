"""What `hub train` (hub/training.py) and `hub pretrain` (hub/pretraining/train.py) share around transformers'
Trainer: its arguments, AdamW over an adapter and heads with a learning rate each and a linear warmup, and
transformers' logging kept to errors while it runs."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from transformers import TrainingArguments, get_linear_schedule_with_warmup
from transformers.utils import logging as hf_logging

from .distributed import world_size


def optimizer_steps(examples: int, batch_size: int, epochs: float) -> int:
    return math.ceil(math.ceil(examples / batch_size) * epochs)


def adamw_with_warmup(groups: list[tuple[list[nn.Parameter], float]], weight_decay: float, warmup_ratio: float,
                      steps: int) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over (parameters, learning rate) groups (empty ones left out), its rate warmed up linearly over
    `warmup_ratio` of `steps`, then decayed linearly to 0."""
    optimizer = torch.optim.AdamW([{"params": params, "lr": lr} for params, lr in groups if params],
                                  weight_decay=weight_decay)
    return optimizer, get_linear_schedule_with_warmup(optimizer, int(warmup_ratio * steps), steps)


def trainer_arguments(scratch: str, epochs: float, batch_size: int, learning_rate: float, seed: int, progress: bool,
                      logging_steps: int, **extra: Any) -> TrainingArguments:
    """A Trainer that saves and evaluates nothing on its own (the caller writes the folder), reports nowhere, and
    passes every batch column to the model."""
    return TrainingArguments(
        output_dir=scratch, num_train_epochs=epochs, per_device_train_batch_size=batch_size,
        learning_rate=learning_rate, save_strategy="no", eval_strategy="no", report_to=[], logging_steps=logging_steps,
        seed=seed, disable_tqdm=not progress, dataloader_num_workers=0, remove_unused_columns=False,
        dataloader_pin_memory=torch.cuda.is_available(),  # pinned pages only help a copy to a GPU (CPU: a warning)
        # several processes without a GPU: accelerate's multi-CPU mode (gloo) needs use_cpu (hub/distributed.py)
        use_cpu=world_size() > 1 and not torch.cuda.is_available(),
        **extra)


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers' logging at errors only within the block (its Trainer warns about every model it does not know)."""
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
