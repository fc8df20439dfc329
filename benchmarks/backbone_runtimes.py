"""The backbone alone in every PyTorch runtime this CPU offers, side by side: speed, closeness to float32, and
whether a row's output depends on the other rows of its batch (issue 19's first measurement).

Each runtime runs the same GLUE dev sentences (SST-2, length-sorted batches, max length 128) through the embedded
English backbone in interleaved rounds; speed is the median of within-round ratios to eager float32 (this machine
is shared and noisy). Closeness is the mean cosine of every real token's last hidden state to float32's.
Batch dependence: each probe sentence is encoded alone and inside a batch of other sentences; reported is the
largest change of its hidden states (max |difference|) between the two. A hub serving many tasks in one batch
needs it ~0: a row's answer must not depend on its neighbours (tests/test_router.py asserts it for float32).

Runtimes: float32 and bfloat16 eager; int8 dynamic quantization of every linear layer with torch.ao (activations
quantized per batch tensor, weights per tensor or per output channel); torchao's int8 dynamic activation (per
token) x int8 weight, when torchao is installed (`pip install torchao`, no dependencies); the hub's own int8
runtime (hub/int8.py: the same scheme through torch._int_mm); float32, bfloat16 and the hub's int8 through
torch.compile (hub/compiled.py, as `hub serve --compile` runs them); ONNX Runtime float32, int8 as its `quantize_dynamic`
makes it, and int8 with a scale per token (benchmarks/onnx_backbone.py), when onnx and onnxruntime are installed.

    python benchmarks/backbone_runtimes.py             # writes benchmarks/results/backbone_runtimes.{md,json}
    python benchmarks/backbone_runtimes.py --rounds 3 --texts 128
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

import hub
from hub.atomic import atomic_file
from hub.backbone import load_backbone
from hub.compiled import compile_model
from hub.compiled import limits as compiled_limits
from hub.int8 import quantize_linear_layers
from hub.registry import load_registry

RESULTS = Path(__file__).resolve().parent / "results"
SST2_DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue" / "SST-2" / "dev.tsv"


def torch_ao_int8(model: nn.Module, per_channel: bool) -> nn.Module:
    """torch.ao dynamic int8 of every linear layer (deprecated in torch, still its fastest int8 on the CPU)."""
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic

    qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        return quantize_dynamic(model, {nn.Linear: qconfig}, dtype=torch.qint8, inplace=False)


def torchao_int8(model: nn.Module) -> nn.Module:
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    copied = copy.deepcopy(model)
    quantize_(copied, Int8DynamicActivationInt8WeightConfig())
    return copied


def hub_int8(model: nn.Module) -> nn.Module:
    copied = copy.deepcopy(model)
    quantize_linear_layers(copied)
    return copied


Encoder = Callable[[dict[str, torch.Tensor]], torch.Tensor]  # tokenizer output -> last hidden state


def _torch(model: nn.Module) -> Encoder:
    return lambda batch: model(**batch).last_hidden_state


def _compiled(model: nn.Module) -> Encoder:
    """`model` (a copy of it) through torch.compile as `Hub(compile=True)` runs it (hub/compiled.py)."""
    forward = compile_model(model, "en")

    def encode(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        with compiled_limits():
            return forward(**batch).last_hidden_state

    return encode


def _onnx(graphs: Callable[[], dict[str, Path]], kind: str, threads: int) -> Encoder:
    import onnx_backbone

    run = onnx_backbone.session(graphs()[kind], threads)
    return lambda batch: torch.from_numpy(run(batch))


def runtimes(model: nn.Module, tokenizer, folder: Path, threads: int) -> tuple[dict[str, Encoder], dict[str, str]]:
    """Every runtime that builds here, and why the others did not."""

    @functools.cache
    def graphs() -> dict[str, Path]:  # every ONNX kind from one export
        import onnx_backbone

        return onnx_backbone.build(model, tokenizer, folder)

    builders: dict[str, Callable[[], Encoder]] = {
        "float32 (eager)": lambda: _torch(model),
        "bfloat16 (eager)": lambda: _torch(copy.deepcopy(model).to(torch.bfloat16)),
        "int8 torch.ao dynamic, per-tensor weights": lambda: _torch(torch_ao_int8(model, per_channel=False)),
        "int8 torch.ao dynamic, per-channel weights": lambda: _torch(torch_ao_int8(model, per_channel=True)),
        "int8 torchao dynamic (per-token activations, per-channel weights)": lambda: _torch(torchao_int8(model)),
        "int8 hub runtime (hub/int8.py: per-token activations, per-channel weights, torch._int_mm)":
            lambda: _torch(hub_int8(model)),
        "float32, torch.compile": lambda: _compiled(copy.deepcopy(model)),
        "bfloat16, torch.compile": lambda: _compiled(copy.deepcopy(model).to(torch.bfloat16)),
        "int8 hub runtime, torch.compile (hub/compiled.py)": lambda: _compiled(hub_int8(model)),
        "ONNX Runtime float32": lambda: _onnx(graphs, "float32", threads),
        "ONNX Runtime int8 (its quantize_dynamic: per-tensor weights and activations)":
            lambda: _onnx(graphs, "int8", threads),
        "ONNX Runtime int8 per token (onnx_backbone.py: per-token activations, per-channel weights)":
            lambda: _onnx(graphs, "int8_per_token", threads),
    }
    built, skipped = {}, {}
    for name, build in builders.items():
        try:
            built[name] = build()
        except ImportError as exc:
            skipped[name] = f"not installed ({exc.name})"
    return built, skipped


def batches(tokenizer, texts: list[str], size: int) -> list[dict[str, torch.Tensor]]:
    ordered = sorted(texts, key=lambda t: len(tokenizer.tokenize(t)))
    return [tokenizer(ordered[i:i + size], return_tensors="pt", padding=True, truncation=True, max_length=128)
            for i in range(0, len(ordered), size)]


def hidden(model: Encoder, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(batch).float()


def closeness(model: Encoder, reference: Encoder, encoded: list[dict[str, torch.Tensor]]) -> float:
    cosines = []
    for batch in encoded:
        cosine = nn.functional.cosine_similarity(hidden(model, batch), hidden(reference, batch), dim=-1)
        cosines.append(cosine[batch["attention_mask"].bool()])
    return torch.cat(cosines).mean().item()


def batch_dependence(model: Encoder, tokenizer, probes: list[str], others: list[str]) -> float:
    """Largest |change| of a probe's token states between encoding it alone and inside a batch of `others`."""
    worst = 0.0
    for probe in probes:
        alone = tokenizer([probe], return_tensors="pt")
        together = tokenizer([probe, *others], return_tensors="pt", padding=True)
        length = alone["input_ids"].shape[1]
        difference = hidden(model, alone)[0] - hidden(model, together)[0, :length]
        worst = max(worst, difference.abs().max().item())
    return worst


def measure(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    registry = load_registry(hub.default_registry_path())
    spec = next(b for b in registry.backbones if b.name == "en")
    backbone = load_backbone(spec, registry, shared=False)
    rows = SST2_DEV.read_text(encoding="utf-8").splitlines()[1:]
    texts = [row.split("\t")[0] for row in rows][: args.texts]
    encoded = batches(backbone.tokenizer, texts, args.batch_size)
    with tempfile.TemporaryDirectory(prefix="onnx-backbone-") as folder:
        built, skipped = runtimes(backbone.model.eval(), backbone.tokenizer, Path(folder), args.threads)
        return _measure(args, backbone, texts, encoded, built, skipped)


def _measure(args: argparse.Namespace, backbone, texts: list[str], encoded: list[dict[str, torch.Tensor]],
             built: dict[str, Encoder], skipped: dict[str, str]) -> dict[str, Any]:
    seconds: dict[str, list[float]] = {name: [] for name in built}
    with torch.inference_mode():
        for model in built.values():
            hidden(model, encoded[0])  # warm up
        for _ in tqdm(range(args.rounds), desc="rounds"):
            for name, model in built.items():
                started = time.perf_counter()
                for batch in encoded:
                    model(batch)
                seconds[name].append(time.perf_counter() - started)
        reference = built["float32 (eager)"]
        probes, others = texts[:8], texts[-31:]
        results = {name: {"speed_vs_float32": statistics.median(
                              f / s for f, s in zip(seconds["float32 (eager)"], seconds[name])),
                          "seconds_median": statistics.median(seconds[name]),
                          "token_cosine_vs_float32": closeness(model, reference, encoded),
                          "batch_dependence_max_abs": batch_dependence(model, backbone.tokenizer, probes, others)}
                   for name, model in built.items()}
    return {"command": " ".join(["python benchmarks/backbone_runtimes.py", *args.argv]), "machine": platform.processor()
            or platform.machine(), "threads": args.threads, "torch": torch.__version__, "texts": len(texts),
            "batch_size": args.batch_size, "rounds": args.rounds, "runtimes": results, "skipped": skipped}


def markdown(found: dict[str, Any]) -> str:
    lines = [f"`{found['command']}` ({found['texts']} SST-2 dev sentences, batches of {found['batch_size']}, "
             f"{found['threads']} threads, {found['rounds']} interleaved rounds, torch {found['torch']})", "",
             "| backbone alone | speed vs eager float32 | mean token cosine vs float32 | a row's largest change "
             "alone vs in a batch |", "|---|---|---|---|"]
    for name, row in found["runtimes"].items():
        lines.append(f"| {name} | {row['speed_vs_float32']:.2f} | {row['token_cosine_vs_float32']:.4f} | "
                     f"{row['batch_dependence_max_abs']:.2g} |")
    lines += [f"| {name} | skipped: {why} | | |" for name, why in found["skipped"].items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "backbone_runtimes.json")
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    if not SST2_DEV.is_file():
        raise SystemExit(f"{SST2_DEV} is missing: this benchmark reads SST-2's dev set from ../shared/data.")
    found = measure(args)
    with atomic_file(args.out) as staging:
        staging.write_text(json.dumps(found, indent=1) + "\n", encoding="utf-8")
    text = markdown(found)
    with atomic_file(args.out.with_suffix(".md")) as staging:
        staging.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
