"""Would per-row LoRA through ONNX Runtime beat the hub's PyTorch path? Issue 19 asks for an ONNX Runtime path that
keeps per-row adapters, or a measurement of why the PyTorch path gets as close; this is that measurement.

The same GLUE dev texts, 16 adapters of the shipped shape (LoRA r=8 on every linear layer but the pooler, int4
files), a random one of them per text, length-sorted batches of 64, interleaved rounds. Every variant runs from
token ids to the last hidden state (no tokenizing, no heads: the part a runtime changes):

    A  the backbone alone: torch float32, bfloat16 and int8 (hub/int8.py); ONNX Runtime float32 and int8 with a
       scale per token (benchmarks/onnx_backbone.py: the int8 that keeps rows independent, as the hub must)
    L  the same pass with each row's own adapter: torch through the hub's per-row hooks, ONNX Runtime through a
       graph whose inputs are each row's matrices (`onnx_backbone.export_row_lora`), gathered by the hub's own plan
       (hub/methods/lora/serving.py), whose cost is included

    python benchmarks/onnx_lora.py            # writes benchmarks/results/onnx_lora.{md,json}
    python benchmarks/onnx_lora.py --rounds 3 --texts 128
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import onnx_backbone  # noqa: E402
from serving import sorted_batches, timed_rounds  # noqa: E402
from serving_setup import english_backbone, glue_texts, mixed_requests, write_registry  # noqa: E402

import hub  # noqa: E402
from hub.atomic import atomic_file  # noqa: E402
from hub.methods.rows import distinct_rows  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
TASKS = 16
TORCH_RUNTIMES = ("float32", "bfloat16", "int8")
LABELS = {"A_torch_float32": "A: torch float32", "A_torch_bfloat16": "A: torch bfloat16",
          "A_torch_int8": "A: torch int8 (hub/int8.py)", "A_onnx_float32": "A: ONNX Runtime float32",
          "A_onnx_int8_per_token": "A: ONNX Runtime int8, a scale per token",
          "L_torch_float32": "L: torch float32, per-row LoRA (the hub's hooks)",
          "L_torch_bfloat16": "L: torch bfloat16, per-row LoRA (the hub's hooks)",
          "L_torch_int8": "L: torch int8, per-row LoRA (the hub's hooks)",
          "L_onnx_float32": "L: ONNX Runtime float32, per-row LoRA (graph inputs)",
          "L_onnx_int8_per_token": "L: ONNX Runtime int8 per token, per-row LoRA (graph inputs)"}

Batch = tuple[list[int], dict[str, torch.Tensor]]


class Runs:
    """Every variant over the same batches and requests: each returns the batches' last hidden states."""

    def __init__(self, hubs: dict[str, hub.Hub], requests: list[tuple[str, str]], batches: list[Batch]):
        self.hubs, self.requests, self.batches = hubs, requests, batches
        reference = hubs["float32"].runtime(requests[0][0]).backbone
        self.hook = reference.row_hook("lora")  # float32 adapters, widened and gathered as the hub's hooks do
        self.paths = sorted({path for task, _ in requests for path in hubs["float32"].runtime(task).adapter.paths})

    def adapters(self, runtime: str, positions: list[int]) -> list:
        return [self.hubs[runtime].runtime(self.requests[i][0]).adapter for i in positions]

    def torch_alone(self, runtime: str) -> list[torch.Tensor]:
        model = self.hubs[runtime].runtime(self.requests[0][0]).backbone.model
        with torch.inference_mode():
            return [model(**inputs).last_hidden_state for _, inputs in self.batches]

    def torch_lora(self, runtime: str) -> list[torch.Tensor]:
        backbone = self.hubs[runtime].runtime(self.requests[0][0]).backbone
        outputs = []
        with torch.inference_mode():
            for positions, inputs in self.batches:
                with backbone.row_hook("lora").rows(self.adapters(runtime, positions)):
                    outputs.append(backbone.model(**inputs).last_hidden_state)
        return outputs

    def onnx_alone(self, session: Callable) -> list[torch.Tensor]:
        return [torch.from_numpy(session(inputs)) for _, inputs in self.batches]

    def onnx_lora(self, session: Callable) -> list[torch.Tensor]:
        outputs = []
        with torch.inference_mode():
            for positions, inputs in self.batches:
                order, rows = distinct_rows(self.adapters("float32", positions))
                plan = self.hook.plan(order, rows)
                feeds = dict(inputs)
                for path in self.paths:
                    layer = self.hook.target_layer(path)
                    assert layer is not None
                    matrices = plan.gathered(path)  # each row's own, as the hook gathers them
                    down, up = matrices if matrices is not None else (  # no row adapts this layer: a zero update
                        torch.zeros(len(rows), 1, layer.in_features), torch.zeros(len(rows), layer.out_features, 1))
                    feeds[f"{path}.down"], feeds[f"{path}.up"] = down.transpose(1, 2), up.transpose(1, 2)
                outputs.append(torch.from_numpy(session(feeds)))
        return outputs


def closeness(outputs: list[torch.Tensor], reference: list[torch.Tensor], batches: list[Batch]) -> dict[str, float]:
    """Over real tokens: the largest |difference| and the mean cosine of each token's state to the reference's."""
    worst, cosines = 0.0, []
    for out, ref, (_, inputs) in zip(outputs, reference, batches):
        mask = inputs["attention_mask"].bool()
        out, ref = out.float()[mask], ref.float()[mask]
        worst = max(worst, (out - ref).abs().max().item())
        cosines.append(torch.nn.functional.cosine_similarity(out, ref, dim=-1))
    return {"max_abs_diff": worst, "token_cosine": torch.cat(cosines).mean().item()}


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    backbone, entry = english_backbone()
    texts = glue_texts(args.texts, seed=0)
    registry = write_registry(work, entry, TASKS, "all", backbone=backbone, storage="int4")
    hubs = {runtime: hub.Hub.load(registry, dtype=runtime) for runtime in TORCH_RUNTIMES}
    requests = mixed_requests(texts, TASKS)
    batches = sorted_batches(backbone.tokenizer, texts, torch.device("cpu"))
    runs = Runs(hubs, requests, batches)
    model = hubs["float32"].runtime(requests[0][0]).backbone.model
    graphs = onnx_backbone.build(model, backbone.tokenizer, work / "onnx", ("float32", "int8_per_token"))
    lora_float32 = onnx_backbone.export_row_lora(model, backbone.tokenizer, runs.paths, work / "onnx" / "lora.onnx")
    lora_graphs = {"float32": lora_float32, "int8_per_token": onnx_backbone.quantize_per_token(
        lora_float32, work / "onnx" / "lora_int8_per_token.onnx")}
    jobs: dict[str, Callable[[], list[torch.Tensor]]] = {}
    for runtime in TORCH_RUNTIMES:
        jobs[f"A_torch_{runtime}"] = lambda r=runtime: runs.torch_alone(r)
        jobs[f"L_torch_{runtime}"] = lambda r=runtime: runs.torch_lora(r)
    for kind, path in graphs.items():
        alone = onnx_backbone.session(path, args.threads)
        jobs[f"A_onnx_{kind}"] = lambda s=alone: runs.onnx_alone(s)
    for kind, path in lora_graphs.items():
        lora = onnx_backbone.session(path, args.threads)
        jobs[f"L_onnx_{kind}"] = lambda s=lora: runs.onnx_lora(s)
    reference = jobs["L_torch_float32"]()
    checks = {name: closeness(jobs[name](), reference, batches) for name in jobs if name.startswith("L_")}
    seconds = timed_rounds(jobs, args.rounds, torch.device("cpu"))
    speed = {name: statistics.median(f / s for f, s in zip(seconds["A_torch_float32"], seconds[name]))
             for name in jobs}
    lora_vs_alone = {name: statistics.median(a / lo for a, lo in zip(seconds["A" + name[1:]], seconds[name]))
                     for name in jobs if name.startswith("L_")}
    return {"command": " ".join(["python benchmarks/onnx_lora.py", *args.argv]), "texts": len(texts), "tasks": TASKS,
            "rounds": args.rounds, "threads": args.threads, "torch": torch.__version__, "paths": len(runs.paths),
            "seconds": seconds, "speed_vs_torch_float32": speed, "lora_vs_alone": lora_vs_alone,
            "checks_vs_torch_float32_lora": checks}


def markdown(found: dict[str, Any]) -> str:
    lines = [f"`{found['command']}` ({found['texts']} GLUE dev texts, {found['tasks']} adapters of the shipped shape "
             f"(LoRA r=8 on {found['paths']} linear layers, int4 files) mixed, batches of 64, {found['threads']} "
             f"threads, {found['rounds']} interleaved rounds, torch {found['torch']}; token ids to last hidden state)",
             "", "| variant | speed vs torch float32 A | L / A in its runtime | vs torch float32 L: largest difference "
             "| token cosine |", "|---|---|---|---|---|"]
    for name in LABELS:
        speed = found["speed_vs_torch_float32"][name]
        check = found["checks_vs_torch_float32_lora"].get(name)
        ratio = found["lora_vs_alone"].get(name)
        lines.append(f"| {LABELS[name]} | {speed:.2f} | {'' if ratio is None else f'{ratio:.3f}'} | "
                     + ("| |" if check is None else f"{check['max_abs_diff']:.2g} | {check['token_cosine']:.4f} |"))
    best_torch = max((n for n in found["speed_vs_torch_float32"] if n.startswith("L_torch")),
                     key=found["speed_vs_torch_float32"].__getitem__)
    best_onnx = max((n for n in found["speed_vs_torch_float32"] if n.startswith("L_onnx")),
                    key=found["speed_vs_torch_float32"].__getitem__)
    speed = found["speed_vs_torch_float32"]
    lines += ["", f"The fastest ONNX Runtime pass with per-row LoRA ({LABELS[best_onnx]}) runs at "
              f"{speed[best_onnx] / speed[best_torch]:.2f}x the fastest torch one ({LABELS[best_torch]})."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "onnx_lora")
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    with tempfile.TemporaryDirectory(prefix="onnx-lora-") as work:
        found = measure(args, Path(work))
    with atomic_file(args.out.with_suffix(".json")) as staging:
        staging.write_text(json.dumps(found, indent=1) + "\n", encoding="utf-8")
    text = markdown(found)
    with atomic_file(args.out.with_suffix(".md")) as staging:
        staging.write_text(text, encoding="utf-8")
    print(text)
    return found


if __name__ == "__main__":
    main()
