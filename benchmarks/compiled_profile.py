"""Where the compiled int8 hub's time goes, against the compiled int8 backbone alone (issue 19: what bounds B/A).

The serving benchmark's setting (256 GLUE dev texts, length-sorted batches of 64, max length 128, 16 tasks of one
LoRA shape stored as int4), each side once under torch.profiler after two warm-up passes: A is the backbone alone,
compiled without hooks; B is the hub serving the 16 tasks mixed, end to end from text. Writes the time per operator
kind of each to benchmarks/results/compiled_profile_<targets>.md.

    python benchmarks/compiled_profile.py                 # LoRA on every linear layer (the shipped shape)
    python benchmarks/compiled_profile.py --targets qv
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving import sorted_batches  # noqa: E402
from serving_setup import english_backbone, glue_texts, mixed_requests, task_name, write_registry  # noqa: E402

import hub  # noqa: E402
from hub.atomic import atomic_file  # noqa: E402
from hub.backbone import load_backbone  # noqa: E402
from hub.compiled import limits  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
ROWS = 12  # operator kinds listed per side


def profiled(run: Callable[[], object]) -> tuple[float, list[tuple[str, float, int]]]:
    """Total self CPU ms of one run, and its operator kinds by self CPU ms (name, ms, calls), largest first."""
    for _ in range(2):
        run()
    with profile(activities=[ProfilerActivity.CPU]) as trace:
        run()
    kinds = sorted(((e.key, e.self_cpu_time_total / 1e3, e.count) for e in trace.key_averages()),
                   key=lambda kind: -kind[1])
    return sum(ms for _, ms, _ in kinds), kinds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", choices=["qv", "all"], default="all")
    args = parser.parse_args()
    torch.set_num_threads(2)
    backbone, entry = english_backbone()
    texts = glue_texts(256, seed=0)
    with tempfile.TemporaryDirectory() as work:
        registry = write_registry(Path(work), entry, 16, args.targets, backbone=backbone, storage="int4")
        served = hub.Hub.load(registry, dtype="int8", compile=True)
        for i in range(16):
            served.runtime(task_name(i))
        requests = mixed_requests(texts, 16)
        alone = load_backbone(served.registry.backbone("en"), served.registry, shared=False, dtype=served.dtype,
                              compile=True)

        def backbone_alone() -> None:
            with torch.inference_mode(), limits():
                for _, inputs in sorted_batches(alone.tokenizer, texts, alone.device):
                    alone.compiled(**inputs)

        sides = {"A: compiled int8 backbone alone": profiled(backbone_alone),
                 "B: compiled int8 hub, 16 tasks mixed": profiled(lambda: served.run_many(requests))}
    lines = [f"# Where the compiled int8 time goes ({args.targets}: LoRA r=8, int4 files)", "",
             f"`python benchmarks/compiled_profile.py --targets {args.targets}`: 256 GLUE dev texts, batches of 64, "
             "2 CPU threads, one profiled run of each side after two warm-up runs (self CPU time per operator kind).",
             ""]
    for side, (total, kinds) in sides.items():
        lines += [f"## {side}: {total:.0f} ms", "", "| operator | ms | calls |", "|---|---|---|"]
        lines += [f"| {name[:70]} | {ms:.1f} | {calls} |" for name, ms, calls in kinds[:ROWS]]
        lines.append("")
    out = RESULTS / f"compiled_profile_{args.targets}.md"
    with atomic_file(out) as staging:
        staging.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
