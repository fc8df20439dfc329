"""Fewer bits or a lower rank? The shipped LoRA adapters as trained (float32, r=8 on every linear layer) stored
several ways at about the same bytes, each scored on its task's dev split through the serving router.

    python benchmarks/rank_vs_bits.py                       # rte cola stsb; writes benchmarks/results/rank_vs_bits.md
    python benchmarks/rank_vs_bits.py --tasks rte --max-eval-examples 500

The float32 files come from git (storage_sizes.FLOAT_REVISION: the shipped folders hold int4 since), the storing
is the hub's own (`reduce_lora_rank`, then `quantize_lora_folder`), so each variant is what `hub quantize TASK
--dtype D [--rank K]` would ship. Run it in a full clone of the repository.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from storage_sizes import trained_file  # noqa: E402  (this folder)
from tqdm.auto import tqdm  # noqa: E402

from hub.adapter_folder import AdapterFolder  # noqa: E402
from hub.data import load_split, sample_rows  # noqa: E402
from hub.evaluation import evaluate_task  # noqa: E402
from hub.methods.lora.quantize import quantize_lora_folder, reduce_lora_rank  # noqa: E402
from hub.registry import load_registry  # noqa: E402
from hub.service import Hub  # noqa: E402

VARIANTS = (("float32", None), ("int4", None), ("int8", 4), ("int4", 4), ("int8", 3), ("int8", 2))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["rte", "cola", "stsb"])
    parser.add_argument("--max-eval-examples", type=int, default=None)
    args = parser.parse_args(argv)
    registry = load_registry(ROOT / "registry.yaml")
    lines = ["# Fewer bits or a lower rank (`python benchmarks/rank_vs_bits.py " + " ".join(argv or sys.argv[1:])
             + "`)", "", "Dev metric x100 of the shipped adapters as trained, stored each way; bytes: the adapter "
             "file + its config.", "", "| task | stored as | rank | score | adapter bytes |", "|---|---|---|---|---|"]
    cells = [(task, dtype, rank) for task in args.tasks for dtype, rank in VARIANTS]
    with tempfile.TemporaryDirectory() as scratch:
        for task, dtype, rank in tqdm(cells, desc="variants", unit="variant"):
            spec = registry.task(task)
            folder = Path(scratch) / f"{task}-{dtype}-{rank}"
            shutil.copytree(registry.adapter_dir(spec), folder)
            for stored in AdapterFolder.WEIGHTS_FILES:
                (folder / stored).unlink(missing_ok=True)
            for name in (AdapterFolder.PEFT_WEIGHTS, AdapterFolder.PEFT_CONFIG):  # the adapter as trained
                (folder / name).write_bytes(trained_file(task, name))
            if rank is not None:
                reduce_lora_rank(folder, rank)
            quantize_lora_folder(folder, dtype)
            served = registry.model_copy(update={"tasks": [spec.model_copy(update={"adapter": str(folder)})]})
            dev = sample_rows(load_split(registry, spec, "dev"), args.max_eval_examples, seed=0)
            metrics = evaluate_task(Hub(served, share_backbones=False), task, dev, progress=False)
            size = sum((folder / name).stat().st_size for name in AdapterFolder.WEIGHTS_FILES + (
                AdapterFolder.PEFT_CONFIG,) if (folder / name).is_file())
            lines.append(f"| {task} | {dtype} | {rank or 8} | {100 * next(iter(metrics.values())):.1f} | {size:,} |")
            shutil.rmtree(folder)
    text = "\n".join(lines) + "\n"
    (ROOT / "benchmarks" / "results" / "rank_vs_bits.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
