"""The LoRA step of a mixed batch, layer by layer: what each way of applying per-row adapters costs on
top of the frozen linear layer itself.

For each linear shape of the embedded English backbone and K distinct adapters among 64 rows (rows of
one adapter next to each other, as the router orders them), times in interleaved rounds:

    base      the frozen layer alone (F.linear): the limit
    ours      the hub's BatchedLora hook (per-row A/B stacked, two batched matmuls, added in place)
    peft      PEFT's LoRA Linear with `adapter_names` (a loop over the distinct adapters)
    grouped   torch.nn.functional.grouped_mm over the rows of each adapter (two grouped GEMMs)
    merged    per adapter, W + B A, then the layer on that adapter's rows alone

and prints the extra time of each over `base`, in percent (the median of the within-round ratios).
This explains the serving benchmark's B/A for LoRA on every linear layer: the rank-8 matmuls are far
less efficient per FLOP than the layer's own (their FLOPs are ~4% of a 384-wide layer).

    python benchmarks/lora_step.py            # writes benchmarks/results/lora_step.{md,json,png}
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving_setup import english_backbone  # noqa: E402

from hub.methods.lora.serving import BatchedLora  # noqa: E402
from hub.methods.lora.weights import lora_weights_from_matrices  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
METHODS = ("base", "ours", "peft", "grouped", "merged")


def layer_shapes() -> list[tuple[str, int, int]]:
    """(name, in, out) of the backbone's distinct linear shapes."""
    config = english_backbone()[0].model.config
    hidden, inner = config.hidden_size, config.intermediate_size
    return [("attention q/k/v/output", hidden, hidden), ("intermediate", hidden, inner), ("output", inner, hidden)]


def methods(d_in: int, d_out: int, k: int, rows: int, tokens: int, rank: int, seed: int) -> dict[str, Callable[[], torch.Tensor]]:
    """One callable per method, each computing the same layer output for the same rows and adapters."""
    from peft import LoraConfig, inject_adapter_in_model

    generator = torch.Generator().manual_seed(seed)
    owners = sorted(random.Random(seed).choices(range(k), k=rows))  # row -> its adapter, grouped
    x = torch.randn(rows, tokens, d_in, generator=generator)
    holder = nn.Sequential()
    holder.add_module("layer", nn.Linear(d_in, d_out))
    layer = holder.layer
    down = [torch.randn(rank, d_in, generator=generator) / d_in ** 0.5 for _ in range(k)]
    up = [torch.randn(d_out, rank, generator=generator) / rank ** 0.5 for _ in range(k)]

    ours_hooks = BatchedLora(holder)
    adapters = [lora_weights_from_matrices(f"a{i}", {"layer": (down[i], up[i])}) for i in range(k)]
    ours_hooks.prepare(adapters[0])

    peft_holder = nn.Sequential()
    peft_holder.add_module("layer", nn.Linear(d_in, d_out))
    peft_holder.layer.load_state_dict(layer.state_dict())
    for i in range(k):
        inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=rank, target_modules=["layer"]), peft_holder, adapter_name=f"a{i}")
        peft_holder.layer.lora_A[f"a{i}"].weight.data.copy_(down[i])
        peft_holder.layer.lora_B[f"a{i}"].weight.data.copy_(up[i])
    names = [f"a{i}" for i in owners]

    runs = [(owner, len(list(group))) for owner, group in itertools.groupby(owners)]
    offsets = torch.tensor(list(itertools.accumulate(n * tokens for _, n in runs)), dtype=torch.int32)

    def base() -> torch.Tensor:
        return layer(x)

    def ours() -> torch.Tensor:
        with ours_hooks.rows([adapters[i] for i in owners]):
            return holder(x)

    def peft() -> torch.Tensor:
        return peft_holder.layer(x, adapter_names=names)

    def grouped() -> torch.Tensor:
        out = layer(x)
        downs = torch.stack([down[i] for i, _ in runs]).transpose(1, 2)
        ups = torch.stack([up[i] for i, _ in runs]).transpose(1, 2)
        low = nn.functional.grouped_mm(x.view(-1, d_in), downs, offs=offsets)
        return out.view(-1, d_out).add_(nn.functional.grouped_mm(low, ups, offs=offsets)).view(out.shape)

    def merged() -> torch.Tensor:
        out, start = x.new_empty(rows, tokens, d_out), 0
        for i, n in runs:
            weight = torch.addmm(layer.weight, up[i], down[i])
            torch.addmm(layer.bias, x[start:start + n].view(-1, d_in), weight.t(), out=out[start:start + n].view(-1, d_out))
            start += n
        return out

    return {"base": base, "ours": ours, "peft": peft, "grouped": grouped, "merged": merged}


def measure(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    cells = []
    with torch.inference_mode():
        for (name, d_in, d_out), k in itertools.product(layer_shapes(), args.k):
            runs = methods(d_in, d_out, k, args.rows, args.tokens, args.rank, args.seed)
            reference = runs["ours"]()
            agree = {m: float((run() - reference).abs().max()) for m, run in runs.items() if m != "base"}
            seconds: dict[str, list[float]] = {m: [] for m in runs}
            for _ in range(args.rounds):
                for method in random.sample(list(runs), len(runs)):
                    started = time.perf_counter()
                    for _ in range(args.repeat):
                        runs[method]()
                    seconds[method].append((time.perf_counter() - started) / args.repeat)
            extra = {m: 100 * (statistics.median(t / b for t, b in zip(seconds[m], seconds["base"])) - 1) for m in runs if m != "base"}
            cells.append({"layer": name, "in": d_in, "out": d_out, "k": k, "base_ms": 1000 * statistics.median(seconds["base"]),
                          "extra_percent": extra, "max_abs_difference_vs_ours": agree})
            print(f"{name} {d_in}->{d_out} K={k}: " + ", ".join(f"{m} {v:+.0f}%" for m, v in extra.items()), flush=True)
    return {"rows": args.rows, "tokens": args.tokens, "rank": args.rank, "threads": args.threads, "rounds": args.rounds, "cells": cells,
            "lora_flops_percent": {c["layer"]: 100 * args.rank * (c["in"] + c["out"]) / (c["in"] * c["out"]) for c in cells}}


def report(result: dict, out: Path) -> str:
    lines = [
        f"# The LoRA step layer by layer: {result['rows']} rows x {result['tokens']} tokens, rank {result['rank']}, "
        f"{result['threads']} CPU threads",
        "",
        "`python benchmarks/lora_step.py` — extra time over the frozen layer alone (median of "
        f"{result['rounds']} interleaved rounds; rows of one adapter next to each other). LoRA's own FLOPs: "
        + ", ".join(f"{layer} {share:.1f}%" for layer, share in result["lora_flops_percent"].items()) + " of the layer's.",
        "",
        "| layer | K adapters | base ms | " + " | ".join(m for m in METHODS[1:]) + " |",
        "|---|---|---|" + "---|" * (len(METHODS) - 1),
    ]
    for c in result["cells"]:
        lines.append(f"| {c['layer']} ({c['in']}->{c['out']}) | {c['k']} | {c['base_ms']:.2f} | "
                     + " | ".join(f"{c['extra_percent'][m]:+.0f}%" for m in METHODS[1:]) + " |")
    worst = max(v for c in result["cells"] for v in c["max_abs_difference_vs_ours"].values())
    lines += ["", f"Every method computes the same output (largest difference from ours: {worst:.1e})."]
    text = "\n".join(lines) + "\n"
    out.with_suffix(".md").write_text(text, encoding="utf-8")
    out.with_suffix(".json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    plot(result, out.with_suffix(".png"))
    return text


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = sorted({c["k"] for c in result["cells"]})
    layers = list(dict.fromkeys(c["layer"] for c in result["cells"]))
    fig, axes = plt.subplots(1, len(layers), figsize=(5 * len(layers), 4), sharey=True)
    for axis, layer in zip(axes, layers):
        cells = {c["k"]: c for c in result["cells"] if c["layer"] == layer}
        width = 0.8 / (len(METHODS) - 1)
        for j, method in enumerate(METHODS[1:]):
            axis.bar([i + j * width for i in range(len(ks))], [cells[k]["extra_percent"][method] for k in ks], width, label=method)
        axis.set_xticks([i + 0.4 - width / 2 for i in range(len(ks))], [f"K={k}" for k in ks])
        axis.set_title(layer)
        axis.set_yscale("symlog", linthresh=10)
    axes[0].set_ylabel("% extra time over the frozen layer")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--k", type=int, nargs="+", default=[1, 16, 64], help="distinct adapters among the rows")
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=48, help="padded tokens per row")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=5, help="calls per timing")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "lora_step")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    print(report(measure(args), args.out))


if __name__ == "__main__":
    main()
