"""`hub train TASK --processes N`: data-parallel training of adapter + head in N processes.

The command starts itself again under torch's launcher (`torch.distributed.run`, what `torchrun` and `accelerate
launch` run); in each process transformers' Trainer, through accelerate, finds the launcher's environment (RANK,
WORLD_SIZE, ...) and wraps the model in DistributedDataParallel: gloo on CPUs, NCCL on GPUs. Each process reads
its share of every global batch (the same examples once per epoch overall; per-process batch = the recipe's batch /
N, so the optimizer steps and the learning-rate schedule are one process's), gradients of the trainable parameters
are averaged, and only the main process evaluates and writes the folder (atomically, once). Launching by hand works
too: `torchrun --nproc-per-node 2 -m hub train TASK` or `accelerate launch --num_processes 2 -m hub train TASK`.
"""

from __future__ import annotations

import os
import subprocess
import sys

from .errors import HubError


def world_size() -> int:
    """Processes in this run (1 outside a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def per_process_batch(batch_size: int) -> int:
    """The recipe's batch split over the processes; HubError when it does not split evenly."""
    processes = world_size()
    if batch_size % processes:
        raise HubError(f"batch_size {batch_size} does not split over {processes} processes; give a batch size that "
                       f"is a multiple of {processes} (--batch-size), so each step sees the recipe's batch.")
    return batch_size // processes


def launch(arguments: list[str], processes: int) -> int:
    """Run `python -m hub <arguments>` in `processes` processes on this machine; the launcher's exit code. Each
    process gets its share of the cores as torch threads unless OMP_NUM_THREADS is set."""
    if world_size() > 1:
        raise HubError("--processes inside a launched run: already one of several processes; drop --processes.")
    environment = dict(os.environ)
    environment.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // processes)))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
               "-m", "hub", *arguments]
    return subprocess.call(command, env=environment)


def without_option(arguments: list[str], option: str) -> list[str]:
    """`arguments` without `option VALUE` / `option=VALUE` (the launched processes must not launch again)."""
    kept, skip = [], False
    for argument in arguments:
        if skip:
            skip = False
        elif argument == option:
            skip = True
        elif not argument.startswith(option + "="):
            kept.append(argument)
    return kept
