"""One-off, kept to show how benchmarks/results/frontier.cells.jsonl was carried over (2026-12-03): cells logged
before int4 files and the single-tensor quantized file (hub/methods/lora/quantized_file.py) got

- their new fingerprint (frontier._fingerprint no longer covers the scored file kinds nor the recipe's storage), and
- their int8 variant's bytes corrected by the exact difference between the old int8 file (a tensor per matrix plus a
  `<key>_scale` tensor each) and today's, both written here with zeros of the cell's LoRA shapes. The values are the
  same quantization (per-rank absmax, 127 levels), so the scores stand.

    python benchmarks/frontier_migrate_int8_layout.py     # needs git history (the registry of OLD_REVISION)

Cells whose fingerprint matches neither rule (stale budgets, already migrated) are left as they are.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import frontier  # noqa: E402  (this folder)

from hub.backbone import resolve_source  # noqa: E402
from hub.methods.lora.quantized_file import write_quantized  # noqa: E402
from hub.registry import Registry, load_registry  # noqa: E402

OLD_REVISION = "65b0d65"  # the registry the old cells were fingerprinted with
OLD_FILES = ("float32", "float16", "int8")  # LoRA's scored files before int4


def _old_fingerprint(registry: Registry, task: str, setting: frontier.Setting, budget: frontier.Budget) -> str:
    described = dict(setting.__dict__)
    if "int8" in described["dtypes"]:
        described["dtypes"] = OLD_FILES
    spec = registry.task(task).model_dump(mode="json")
    spec["train"]["storage"].pop("rank")  # a field added since
    parts = [spec, described, budget.of(task)]
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _lora_shapes(registry: Registry, language: str, adapter: dict) -> dict[str, tuple[int, ...]]:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel

    spec = next(b for b in registry.backbones if b.language == language)
    model = AutoModel.from_pretrained(resolve_source(spec, registry))
    config = LoraConfig(r=adapter["r"], target_modules=adapter["target_modules"], exclude_modules=["pooler.dense"])
    return {key.replace(".default", ""): tuple(value.shape)
            for key, value in get_peft_model(model, config).state_dict().items() if "lora_" in key}


def _int8_file_sizes(shapes: dict[str, tuple[int, ...]]) -> tuple[int, int]:
    """(old layout, today's) bytes of an int8 file of these LoRA shapes."""
    with tempfile.TemporaryDirectory() as scratch:
        old, pairs = {}, {}
        for key, shape in shapes.items():
            old[key] = torch.zeros(shape, dtype=torch.int8)
            old[key + "_scale"] = torch.zeros(shape[0] if ".lora_A." in key else shape[1])
            if ".lora_A." in key:
                path = key.removeprefix("base_model.model.").split(".lora_A")[0]
                pairs[path] = (torch.zeros(shape), torch.zeros(shapes[key.replace("lora_A", "lora_B")]))
        save_file(old, f"{scratch}/old", metadata={"format": "pt", "quantization": "int8-per-rank-absmax"})
        write_quantized(Path(f"{scratch}/new"), pairs, "int8")
        return Path(f"{scratch}/old").stat().st_size, Path(f"{scratch}/new").stat().st_size


def main() -> None:
    current = load_registry(ROOT / "registry.yaml", strict_adapters=False)
    text = subprocess.run(["git", "-C", str(ROOT), "show", f"{OLD_REVISION}:registry.yaml"], capture_output=True,
                          check=True, text=True).stdout
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", dir=ROOT) as old_file:  # its paths are relative to ROOT
        old_file.write(text)
        old_file.flush()
        old = load_registry(Path(old_file.name), strict_adapters=False)
    settings = frontier.grid()
    budget = frontier.Budget(2000, 2000, tuple(sorted(frontier.TASK_TRAIN_EXAMPLES.items())))
    log = frontier.RESULTS / "frontier.cells.jsonl"
    lines, shapes = [], {}
    for line in log.read_text(encoding="utf-8").splitlines():
        cell = json.loads(line)
        setting = settings[cell["setting"]]
        if cell.get("fingerprint") == _old_fingerprint(old, cell["task"], setting, budget):
            cell["fingerprint"] = frontier._fingerprint(current, cell["task"], setting, budget)
            if "int8" in cell["variants"]:
                key = (cell["language"], cell["setting"])
                if key not in shapes:
                    shapes[key] = _int8_file_sizes(_lora_shapes(current, cell["language"], setting.adapter))
                before, after = shapes[key]
                cell["variants"]["int8"]["bytes"] += after - before
            print(f"migrated {cell['task']} {cell['setting']}")
        lines.append(json.dumps(cell, ensure_ascii=False))
    log.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
