"""Serving precision: the shipped tasks answered by a float32 Hub and by a half-precision Hub, side by side.

Every trained task of the shipped registry answers the same sample of its dev set in each precision
(`Hub(dtype=...)`: backbone and LoRA matrices in that precision, heads in float32). Reported per task:
the task's metric in each precision and the share of answers whose prediction (label, value, tags,
span) is the same as float32's; over all tasks: throughput, all tasks mixed in one `run_many` per
round, in interleaved rounds (ratio = median of the within-round ratios; this machine is noisy).

    python benchmarks/precision.py                    # bfloat16 vs float32 on the CPU
    python benchmarks/precision.py --device cuda      # bfloat16 and float16 vs float32 on a GPU
    python benchmarks/precision.py --registry my.yaml # your own registry's trained tasks
    python benchmarks/precision.py --dtype bfloat16 --dtype int8 --dtype int8+compile   # torch.compile too

Dev sets come from ../shared/data and the embedded packages; a task whose data is missing is skipped,
named in the report. Writes benchmarks/results/precision[_<device>].{md,json,png} (--out: elsewhere).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

import hub
from hub.atomic import atomic_file
from hub.data import load_split, sample_rows
from hub.compiled import SUFFIX as COMPILED
from hub.compiled import runtime_options
from hub.devices import dtype_name, resolve_device, resolve_dtype
from hub.errors import HubError
from hub.metrics import compute_metric

RESULTS = Path(__file__).resolve().parent / "results"


def dev_requests(served: hub.Hub, examples: int, seed: int) -> tuple[dict[str, tuple[list, list]], dict[str, str]]:
    """Per trained task: (requests, references) for a fixed sample of its dev split; and why others were skipped."""
    samples, skipped = {}, {}
    for spec in served.registry.tasks:
        if not served.registry.adapter_dir(spec).is_dir():
            skipped[spec.name] = "no trained adapter"
            continue
        try:
            dataset = sample_rows(load_split(served.registry, spec, "dev"), examples, seed)
        except HubError as exc:
            skipped[spec.name] = str(exc).splitlines()[0]
            continue
        codec = served.runtime(spec.name).examples
        samples[spec.name] = ([codec.request(row) for row in dataset], [codec.reference(row) for row in dataset])
    return samples, skipped


def answer_all(served: hub.Hub, samples: dict[str, tuple[list, list]], device: torch.device) -> tuple[float, list[dict]]:
    """Seconds for every sampled request, all tasks mixed in one call (device work finished), and the answers."""
    requests = [(task, request) for task, (task_requests, _) in samples.items() for request in task_requests]
    started = time.perf_counter()
    answers = served.run_many(requests)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started, answers


def compare(served: hub.Hub, samples: dict[str, tuple[list, list]], answers: dict[str, list[dict]], baseline: str) -> dict[str, dict]:
    """Per task and precision: the metric, and the share of predictions equal to the baseline precision's."""
    table, offset = {}, 0
    for task, (requests, references) in samples.items():
        spec, codec = served.registry.task(task), served.runtime(task).examples
        rows = slice(offset, offset + len(requests))
        offset += len(requests)
        predictions = {name: [codec.prediction(a) for a in answered[rows]] for name, answered in answers.items()}
        table[task] = {"metric": spec.metric, "examples": len(requests), "scores": {}, "same_as_baseline": {}}
        for name, predicted in predictions.items():
            scores = compute_metric(spec.metric, predicted, references, spec.labels)
            table[task]["scores"][name] = {"name": next(iter(scores)), "value": next(iter(scores.values()))}
            same = sum(_same(p, b) for p, b in zip(predicted, predictions[baseline]))
            table[task]["same_as_baseline"][name] = same / len(predicted)
    return table


def _same(prediction: Any, baseline: Any) -> bool:
    """Equal predictions; a regression value counts as equal within 0.05 (on STS-B's 0-5 scale)."""
    if isinstance(prediction, float) and isinstance(baseline, float):
        return abs(prediction - baseline) <= 0.05
    return prediction == baseline


def measure(args: argparse.Namespace) -> dict[str, Any]:
    device = resolve_device(args.device)
    names = list(dict.fromkeys(["float32", *(runtime_name(d, device) for d in args.dtype)]))
    registry = args.registry or hub.default_registry_path()
    hubs = {name: hub.Hub.load(registry, device=device, **runtime_options(name)) for name in names}
    samples, skipped = dev_requests(hubs["float32"], args.examples, args.seed)
    if not samples:
        raise SystemExit(f"no task has dev data here: {skipped}")
    for task in samples:  # load every task in every precision before timing
        for served in hubs.values():
            served.runtime(task)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    answers: dict[str, list[dict]] = {}
    order = list(names)
    for round_ in tqdm(range(args.rounds), desc="rounds", unit="round"):
        order = order[::-1] if round_ else order  # alternate who goes first
        for name in order:
            took, answered = answer_all(hubs[name], samples, device)
            seconds[name].append(took)
            answers.setdefault(name, answered)  # answers are the same every round: keep the first
    requests = sum(len(r) for r, _ in samples.values())
    speed = {name: statistics.median(seconds["float32"][i] / seconds[name][i] for i in range(args.rounds)) for name in names}
    return {
        "device": str(device), "hardware": _hardware(device), "examples_per_task": args.examples, "seed": args.seed,
        "rounds": args.rounds, "requests": requests, "skipped": skipped, "seconds": seconds, "speed_vs_float32": speed,
        "tasks": compare(hubs["float32"], samples, answers, "float32"),
        "command": command_line(args),
    }


def runtime_name(option: str, device: torch.device) -> str:
    """A --dtype value as the report names it: the dtype's own name, COMPILED kept after it."""
    options = runtime_options(option)
    return dtype_name(resolve_dtype(options["dtype"], device)) + (COMPILED if options["compile"] else "")


def command_line(args: argparse.Namespace) -> str:
    """The command that reproduces this run (the options that differ from the defaults)."""
    options = {"--registry": (args.registry, None), "--device": (args.device, None), "--examples": (args.examples, 200),
               "--rounds": (args.rounds, 3), "--seed": (args.seed, 0)}
    dtypes = "".join(f" --dtype {d}" for d in args.dtype) if args.dtype != default_dtypes(args.device) else ""
    return " ".join(["python benchmarks/precision.py", *(f"{k} {v}" for k, (v, default) in options.items() if v != default)]) + dtypes


def default_dtypes(device: str | None) -> list[str]:
    return ["bfloat16", "float16"] if resolve_device(device).type == "cuda" else ["bfloat16"]


def _hardware(device: torch.device) -> str:
    """The GPU, or the CPU model and whether it has bfloat16 instructions (they decide bfloat16's speed there)."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (torch {torch.__version__})"
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), platform.machine())
    flags = set(next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), []))
    bf16 = ", ".join(sorted(flags & {"avx512_bf16", "amx_bf16"})) or "none"
    return f"{model}, {torch.get_num_threads()} threads, bfloat16 instructions: {bf16}"


def report(results: dict[str, Any]) -> str:
    names = list(results["speed_vs_float32"])
    lines = [
        f"# Serving precision ({results['device']}: {results['hardware']})", "",
        f"`{results['command']}` — up to {results['examples_per_task']} dev examples per shipped task (fixed sample, seed "
        f"{results['seed']}), {results['requests']} requests, every task mixed in one `Hub.run_many` per precision and "
        f"round; {results['rounds']} interleaved rounds. Half precisions: backbone + LoRA in the precision named; "
        "int8: the backbone's linear layers in int8, adapters in float32; heads in float32.", "",
        "| precision | requests/s | speed vs float32 |", "|---|---|---|",
    ]
    for name in names:
        rate = results["requests"] / statistics.median(results["seconds"][name])
        lines.append(f"| {name} | {rate:.1f} | {results['speed_vs_float32'][name]:.2f}x |")
    lines += ["", "| task | metric | examples | " + " | ".join(names) + " | " + " | ".join(
        f"same as float32 ({n})" for n in names[1:]) + " |", "|---" * (3 + 2 * len(names) - 1) + "|"]
    for task, row in results["tasks"].items():
        scores = [row["scores"][n] for n in names]
        lines.append(f"| {task} | {scores[0]['name']} | {row['examples']} | " + " | ".join(f"{s['value']:.3f}" for s in scores)
                     + " | " + " | ".join(f"{row['same_as_baseline'][n]:.1%}" for n in names[1:]) + " |")
    if results["skipped"]:
        lines += ["", "Skipped: " + "; ".join(f"{task} ({why})" for task, why in results["skipped"].items()) + "."]
    lines += ["", "Same prediction: the same label, tag sequence or answer span; a regression value within 0.05."]
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names, tasks = list(results["speed_vs_float32"]), list(results["tasks"])
    figure, (metric_axis, speed_axis) = plt.subplots(1, 2, figsize=(13, 4.5), gridspec_kw={"width_ratios": [4, 1]})
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        values = [results["tasks"][t]["scores"][name]["value"] for t in tasks]
        metric_axis.bar([x + i * width for x in range(len(tasks))], values, width, label=name)
    metric_axis.set_xticks([x + width * (len(names) - 1) / 2 for x in range(len(tasks))], tasks, rotation=45, ha="right")
    metric_axis.set_ylabel("dev metric (each task's primary)")
    metric_axis.legend()
    speed_axis.bar(names, [results["speed_vs_float32"][n] for n in names], color="tab:gray")
    speed_axis.set_ylabel("throughput vs float32")
    figure.suptitle(f"Serving precision on {results['hardware']}")
    figure.tight_layout()
    figure.savefig(path, dpi=120, format="png")
    plt.close(figure)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", default=None, help="registry YAML (default: the shipped registry.yaml)")
    parser.add_argument("--device", default=None, help="cpu (default), cuda, cuda:N, mps, auto")
    parser.add_argument("--dtype", action="append", default=None,
                        help="precision to compare with float32 (repeat); default bfloat16, and float16 on a GPU; "
                             f"DTYPE{COMPILED} for that precision through torch.compile")
    parser.add_argument("--examples", type=int, default=200, help="dev examples per task (fixed random sample)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the md / json / png")
    args = parser.parse_args(argv)
    try:
        args.dtype = args.dtype or default_dtypes(args.device)
        results = measure(args)
    except HubError as exc:  # a device, dtype or registry this machine cannot use: its message, not a traceback
        raise SystemExit(f"error: {exc}") from None
    stem = "precision" + ("" if results["device"] == "cpu" else f"_{results['device'].split(':')[0]}")
    text = report(results)
    for suffix, content in ((".json", json.dumps(results, indent=1, ensure_ascii=False)), (".md", text)):
        with atomic_file(args.out / f"{stem}{suffix}") as staging:
            staging.write_text(content, encoding="utf-8")
    with atomic_file(args.out / f"{stem}.png") as staging:
        plot(results, staging)
    print(text)
    return results


if __name__ == "__main__":
    main()
