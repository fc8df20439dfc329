"""`hub quantize`: a trained task's folder stored again in another dtype (adapter and head), checked and measured as
served before it replaces the old one."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from heads import Head
from heads.storage import HeadStorage, stored_storage

from .adapter_folder import AdapterFolder
from .card import rebuild_card, trained_runtime
from .data import load_split, sample_rows
from .errors import AdapterError
from .evaluation import evaluate_task
from .methods import method_for_peft_type
from .pretraining.card import CARD_FILE as PRETRAINING_CARD
from .pretraining.card import record_quantized_storage
from .registry import Registry


def quantize_task(registry: Registry, task_name: str, adapter: str, head: HeadStorage | None = None,
                  evaluate: bool = True, progress: bool = True, rank: int | None = None) -> dict[str, Any]:
    """Rewrite the task's folder with its adapter weights stored as `adapter` (at `rank`, if given; and its head as
    `head`), atomically; with `evaluate` (and dev data in the registry) the card's metrics are measured anew on what
    is stored."""
    task = registry.task(task_name)
    if task_name in registry.adapter_problems:
        raise AdapterError(registry.adapter_problems[task_name])
    folder = AdapterFolder(registry.adapter_dir(task))
    if not folder.path.is_dir():
        raise AdapterError(f"task {task_name!r} has no trained adapter at {folder.path}; train it with "
                           f"`hub train {task_name}`.")
    before = folder.nbytes()
    method = method_for_peft_type(folder.adapter_config().get("peft_type"), folder.path)
    if rank is not None and method.reduce_rank is None:
        raise AdapterError(f"task {task_name!r} holds a {method.name} adapter, which has no rank to reduce; leave "
                           "--rank out.")
    current = folder.adapter_config().get("r")
    if rank is not None and isinstance(current, int) and rank > current:  # checked here to name the task's folder
        raise AdapterError(f"task {task_name!r}: rank {rank} is not below the adapter's rank {current} in "
                           f"{folder.path}; give a rank from 1 to {current - 1}.")
    head_dtype = head or stored_storage(folder.path / AdapterFolder.HEAD_WEIGHTS)
    backbone = registry.backbone(task.backbone)
    report: dict[str, Any] = {}

    def fill(staging: Path) -> None:
        shutil.copytree(folder.path, staging, dirs_exist_ok=True)
        # refused above when the method has no rank; a folder already at `rank` stays as it is (a rerun)
        if rank is not None and method.reduce_rank is not None and current != rank:
            method.reduce_rank(staging, rank)
        method.store(staging, adapter)
        if head is not None:
            Head.load(staging).save(staging, head)

    def check(staging: Path) -> None:
        """Served as the task (a private backbone: nothing stays attached to a shared one), measured if asked."""
        from .service import Hub

        staged = registry.model_copy(update={"tasks": [task.model_copy(update={"adapter": str(staging)})]})
        served = Hub(staged, share_backbones=False, dtype=trained_runtime(folder.path))  # as the card measured it
        served.runtime(task_name)  # every load-time check, as serving runs them
        metrics = None
        if evaluate and task.data is not None:
            dev = sample_rows(load_split(registry, task, "dev"), task.train.max_eval_examples, task.train.seed)
            metrics = evaluate_task(served, task_name, dev, progress=progress)
        report["metrics"] = metrics
        storage: dict[str, Any] = {"adapter": adapter, "head": head_dtype}
        if rank is not None:
            storage["rank"] = rank
        if (staging / PRETRAINING_CARD).is_file():  # `hub pretrain`'s folder: its own card, from what it measured
            rank_option = f" --rank {rank}" if rank is not None else ""
            record_quantized_storage(staging, folder.path.name, backbone, storage, metrics,
                                     f"hub quantize {task_name} --dtype {adapter} --head {head_dtype}{rank_option}")
        elif (staging / AdapterFolder.CARD).is_file():
            text = rebuild_card(staging, task, backbone, metrics=metrics, storage=storage)
            (staging / AdapterFolder.CARD).write_text(text, encoding="utf-8")

    AdapterFolder.write(folder.path, fill, check)
    return {"task": task_name, "adapter": adapter, "head": head_dtype, "rank": rank, "bytes_before": before,
            "bytes_after": folder.nbytes(), "weights_file": folder.weights_file().name, **report}
