"""Quality per byte: every adapter method at several sizes, per task, on one training budget (the storage frontier).

    python benchmarks/frontier.py                                  # the issue's tasks, the whole grid, seeds 42 43
    python benchmarks/frontier.py --tasks sst2 rte --settings lora_qv_r4 ia3 --seeds 42
    python benchmarks/frontier.py --list                           # the settings of the grid

A cell (task, setting, seed) trains with the hub's own trainer on the task's budget (its registry recipe's epochs on
at most --max-train-examples examples, or the task's own number: TASK_TRAIN_EXAMPLES, --task-train-examples; each
method at its own learning rate, below), writes what a user would store for the task (adapter, head and their
configs: the model card is left out) and scores it on the same dev rows for every cell (all, or a fixed sample of
--max-eval-examples) through the serving router with the task's official metric. A cell is scored again from
float16 copies of its adapter file, and a LoRA one from int8 and int4 copies too (the same training, another file;
cells logged before int4 was added lack it). Full
fine-tuning (a whole backbone copy per task, plus its head) and the linear probe (the head alone) are the
reference points. Every finished cell is appended to `<out>.cells.jsonl` at once, so a killed run resumes; the
table (`<out>.md`, `<out>.json`) and one plot per language (`<out>_<language>.png`: dev metric against bytes per
task, log scale, the Pareto frontier drawn) are rebuilt after every cell.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import shlex
import shutil
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shipped_adapters import backbone_bytes  # noqa: E402  (this folder: a full copy costs the backbone's weight files)
from tqdm.auto import tqdm  # noqa: E402

from hub.adapter_folder import AdapterFolder  # noqa: E402
from hub.atomic import atomic_file  # noqa: E402
from hub.backbone import resolve_source  # noqa: E402
from hub.bench.cells import append_cell, fingerprinted_spec  # noqa: E402
from hub.bench.report import machine  # noqa: E402
from hub.data import load_split, sample_rows  # noqa: E402
from hub.evaluation import evaluate_runtime  # noqa: E402
from hub.methods import METHODS, AdapterMethod, method_named  # noqa: E402
from hub.metrics import evaluate_metric  # noqa: E402
from hub.registry import Registry, load_registry  # noqa: E402

TASKS = ("sst2", "mrpc", "stsb", "rte", "cola", "tnews", "afqmc", "conll2003", "msra_ner")
RESULTS = ROOT / "benchmarks" / "results"
SHIP_SHARE = 0.002  # what a shipped task may store, as a share of its backbone's bytes (drawn on the plots)
EVERY_LINEAR = ["query", "key", "value", "dense"]  # LoRA's default targets: every linear layer (never the pooler)


@dataclass(frozen=True)
class Setting:
    """One point of the grid: an adapter (or a reference regime), its learning rate, the file dtypes scored."""

    family: str  # what the plot colours by
    regime: str = "lora"  # hub.training's: an adapter of the recipe's method ("lora"), "full" or "probe"
    adapter: dict[str, Any] = field(default_factory=dict)
    learning_rate: float | None = None  # None: the task recipe's
    dtypes: tuple[str, ...] = ("float32",)


def grid() -> dict[str, Setting]:
    """The settings: LoRA ranks 1-8 on query/value and on every linear layer (each in float32, float16, int8 and int4
    files), (IA)3, VeRA at two ranks, both bottleneck placements at two reduction factors, full fine-tuning and the
    linear probe. Methods this checkout lacks are left out."""
    files = ("float32", "float16", "int8", "int4")
    settings: dict[str, Setting] = {}
    for targets, modules in (("qv", ["query", "value"]), ("all", EVERY_LINEAR)):
        for rank in (1, 2, 4, 8):
            adapter = {"method": "lora", "r": rank, "alpha": 2.0 * rank, "target_modules": modules}
            settings[f"lora_{targets}_r{rank}"] = Setting(f"LoRA {targets}", adapter=adapter, dtypes=files)
    halves = ("float32", "float16")  # the other methods' vectors and matrices: float16 files (int8 / int4: LoRA's)
    settings["ia3"] = Setting("(IA)3", adapter={"method": "ia3"}, learning_rate=5e-3, dtypes=halves)
    for rank in (64, 256):
        settings[f"vera_r{rank}"] = Setting("VeRA", adapter={"method": "vera", "r": rank}, learning_rate=5e-3,
                                            dtypes=halves)
    for config in ("seq_bn", "double_seq_bn"):
        for factor in (16, 64):
            settings[f"bn_{config}_rf{factor}"] = Setting(
                f"bottleneck {config}", adapter={"method": "bottleneck", "config": config, "reduction_factor": factor},
                dtypes=halves)
    settings["full"] = Setting("full fine-tuning", regime="full", learning_rate=5e-5)
    settings["probe"] = Setting("linear probe", regime="probe", learning_rate=5e-3)
    return {name: s for name, s in settings.items() if not s.adapter or s.adapter["method"] in METHODS}


# Tasks whose default budget says nothing: CoLA at 2,000 examples x 5 epochs gave MCC ~0 for LoRA on query/value
# at every rank (0.018, 0.003, 0.012, -0.023 for r = 1, 2, 4, 8): it trains on all its 8,551 sentences (None).
TASK_TRAIN_EXAMPLES: dict[str, int | None] = {"cola": None}


@dataclass(frozen=True)
class Budget:
    max_train_examples: int | None
    max_eval_examples: int | None
    per_task: tuple[tuple[str, int | None], ...] = ()  # (task, max train examples) overrides

    def train_examples(self, task: str) -> int | None:
        return dict(self.per_task).get(task, self.max_train_examples)

    def of(self, task: str) -> dict[str, int | None]:
        """The task's own budget (what its cells' fingerprints hold: another task's override changes nothing)."""
        return {"max_train_examples": self.train_examples(task), "max_eval_examples": self.max_eval_examples}


def _fingerprint(registry: Registry, task: str, setting: Setting, budget: Budget) -> str:
    """What a cell's training depends on besides its seed: a changed recipe, grid point or budget starts it afresh.
    Not the files it is scored from (`dtypes`: a new kind is scored in new cells only) nor the recipe's storage
    (the grid stores its own variants)."""
    spec = fingerprinted_spec(registry.task(task))
    spec["train"].pop("storage", None)
    parts = [spec, {k: v for k, v in setting.__dict__.items() if k != "dtypes"}, budget.of(task)]
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _dev(registry: Registry, task: str, limit: int | None):
    return sample_rows(load_split(registry, registry.task(task), "dev"), limit, seed=0)


def _score(registry: Registry, task: str, folder: Path, dev) -> dict[str, float]:
    """The folder served as the task's adapter (the process's shared backbone), scored on `dev`."""
    from hub.service import Hub

    spec = registry.task(task)
    served = registry.model_copy(update={"tasks": [spec.model_copy(update={"adapter": str(folder)})]})
    hub = Hub(served)
    return evaluate_runtime(hub.runtime(task), dev, hub.max_batch_size, progress=False, scorer=evaluate_metric)


def _stored_variant(folder: Path, method: AdapterMethod, dtype: str, scratch: Path) -> Path:
    """A copy of a float32 adapter folder whose weights file is stored as `dtype` (the method's own `store`)."""
    if dtype == "float32":
        return folder
    copy = scratch / f"{folder.name}-{dtype}"
    shutil.copytree(folder, copy)
    method.store(copy, dtype)
    return copy


def run_cell(registry: Registry, task: str, name: str, setting: Setting, seed: int, budget: Budget,
             scratch: Path) -> dict[str, Any]:
    """Train one (task, setting, seed) and score each stored variant on dev."""
    from hub.training import fit_task

    spec = registry.task(task)
    overrides: dict[str, Any] = {"seed": seed, "max_train_examples": budget.train_examples(task),
                                 "learning_rate": setting.learning_rate,
                                 "storage": {}}  # float32: each cell stores its own variants (a recipe's int4 is LoRA's)
    if setting.regime == "lora":
        overrides["adapter"] = setting.adapter
    else:
        overrides["head_learning_rate"] = setting.learning_rate
    fitted = fit_task(registry, task, setting.regime, progress=False, **overrides)  # type: ignore[arg-type]
    dev = _dev(registry, task, budget.max_eval_examples)
    backbone = registry.backbone(spec.backbone)
    backbone_size = backbone_bytes(Path(resolve_source(backbone, registry)))
    folder = scratch / f"{task}-{name}-{seed}"
    folder.mkdir()
    fitted.model.head.save(folder)
    variants: dict[str, dict[str, Any]] = {}
    if setting.regime == "lora":
        method = method_named(fitted.recipe.adapter.method)
        method.training.save(fitted.model.encoder, folder, backbone.model_id)
        for dtype in setting.dtypes:
            variant = _stored_variant(folder, method, dtype, scratch)
            metrics = _score(registry, task, variant, dev)
            variants[dtype] = {"score": next(iter(metrics.values())), "metrics": metrics,
                               "bytes": AdapterFolder(variant).nbytes()}
    else:
        metrics = evaluate_runtime(fitted.runtime(), dev, progress=False, scorer=evaluate_metric)
        head_bytes = AdapterFolder(folder).nbytes()
        copy_bytes = backbone_size if setting.regime == "full" else 0
        variants["float32"] = {"score": next(iter(metrics.values())), "metrics": metrics,
                               "bytes": head_bytes + copy_bytes}
    report = fitted.report
    cell = {"task": task, "setting": name, "seed": seed, "metric": spec.metric, "language": backbone.language,
            "family": setting.family, "variants": variants,
            "trainable_parameters": report["trainable_parameters"], "total_parameters": report["total_parameters"],
            "train_examples": report["train_examples"], "eval_examples": len(dev),
            "train_seconds": report["train_seconds"], "learning_rate": fitted.recipe.learning_rate,
            "epochs": fitted.recipe.epochs, "backbone_bytes": backbone_size}
    del fitted
    gc.collect()
    return cell


def read_log(path: Path, registry: Registry, settings: dict[str, Setting],
             budget: Budget) -> dict[tuple[str, str, int], dict[str, Any]]:
    """Finished cells whose fingerprint still holds (a half-written last line from a killed run is ignored)."""
    done: dict[tuple[str, str, int], dict[str, Any]] = {}
    if not path.exists():
        return done
    names = {t.name for t in registry.tasks}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            cell = json.loads(line)
        except ValueError:
            continue
        setting = settings.get(cell.get("setting"))
        if setting and cell.get("task") in names and cell.get("fingerprint") == _fingerprint(
                registry, cell["task"], setting, budget):
            done[(cell["task"], cell["setting"], cell["seed"])] = cell
    return done


def points(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One point per (task, setting, stored dtype): mean score over seeds and what it costs."""
    grouped: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for cell in cells:
        for dtype in cell["variants"]:
            grouped.setdefault((cell["task"], cell["setting"], dtype), []).append(cell)
    rows = []
    for (task, setting, dtype), group in grouped.items():
        scores = [c["variants"][dtype]["score"] for c in group]
        first = group[0]
        rows.append({"task": task, "setting": setting, "dtype": dtype, "family": first["family"],
                     "language": first["language"], "metric": first["metric"], "scores": scores,
                     "mean": statistics.fmean(scores), "bytes": first["variants"][dtype]["bytes"],
                     "share": first["variants"][dtype]["bytes"] / first["backbone_bytes"],
                     "trainable_parameters": first["trainable_parameters"],
                     "train_seconds": statistics.fmean(c["train_seconds"] for c in group),
                     "seeds": [c["seed"] for c in group], "train_examples": first["train_examples"],
                     "eval_examples": first["eval_examples"], "epochs": first["epochs"],
                     "learning_rate": first["learning_rate"]})
    for task in {r["task"] for r in rows}:
        mine = [r for r in rows if r["task"] == task and r["setting"] not in ("full", "probe")]
        for row in mine:  # Pareto: no other adapter point is at least as good for fewer bytes
            row["frontier"] = not any(o is not row and o["bytes"] <= row["bytes"] and o["mean"] > row["mean"]
                                      for o in mine)
    return rows


def markdown(rows: list[dict[str, Any]], command: str) -> str:
    lines = [
        "# Quality per byte: adapter methods and sizes per task",
        "",
        f"`{command}` on {machine()}. Score: dev metric x100 (mean ± std over seeds), scored by the serving router; "
        "bytes: the task's adapter + head files and their configs (no card); share: of the backbone's bytes. "
        "* marks the task's Pareto frontier (no adapter point scores higher for as few bytes).",
        "",
        "| task | setting | file | score | bytes | share | trainable params | train s | seeds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines[4:4] = summary(rows)
    for row in sorted(rows, key=lambda r: (TASKS.index(r["task"]) if r["task"] in TASKS else 99, r["bytes"])):
        scores = row["scores"]
        score = (f"{100 * row['mean']:.1f}" if len(scores) < 2
                 else f"{100 * row['mean']:.1f} ± {100 * statistics.stdev(scores):.1f}")
        mark = " *" if row.get("frontier") else ""
        lines.append(f"| {row['task']} | {row['setting']}{mark} | {row['dtype']} | {score} | {row['bytes']:,} | "
                     f"{row['share']:.3%} | {row['trainable_parameters']:,} | {row['train_seconds']:.0f} | "
                     f"{len(scores)} |")
    return "\n".join(lines) + "\n"


def summary(rows: list[dict[str, Any]]) -> list[str]:
    """Per task: the best adapter point within SHIP_SHARE of the backbone (what a shipped task may store) against
    today's shipped shape (LoRA r=8 on every linear layer, float32 file) and the best point at any size."""
    lines = [f"Best within {SHIP_SHARE:.1%} of the backbone (a shipped folder also holds its card: 2-7 KB more), per "
             "task, against today's shipped shape (`lora_all_r8`, "
             "float32) and the best adapter point at any size:", "",
             f"| task | best within {SHIP_SHARE:.1%} | score | bytes | vs lora_all_r8 float32 | best at any size |",
             "|---|---|---|---|---|---|"]
    for task in sorted({r["task"] for r in rows}, key=lambda t: (TASKS.index(t) if t in TASKS else len(TASKS), t)):
        adapters = [r for r in rows if r["task"] == task and r["setting"] not in ("full", "probe")]
        within = [r for r in adapters if r["share"] <= SHIP_SHARE]
        shipped = next((r for r in adapters if r["setting"] == "lora_all_r8" and r["dtype"] == "float32"), None)
        if not adapters:
            continue
        best = max(adapters, key=lambda r: r["mean"])
        top = max(within, key=lambda r: r["mean"]) if within else None
        gap = f"{100 * (top['mean'] - shipped['mean']):+.1f}" if top and shipped else "-"
        chosen = [f"{top['setting']} {top['dtype']}", f"{100 * top['mean']:.1f}", f"{top['bytes']:,}"] if top else [
            "none", "-", "-"]
        lines.append(f"| {task} | {' | '.join(chosen)} | {gap} | "
                     f"{best['setting']} {best['dtype']}: {100 * best['mean']:.1f} ({best['bytes']:,} B) |")
    return [*lines, ""]


def plot(rows: list[dict[str, Any]], language: str, path: Path) -> None:
    """Dev metric against bytes per task (log scale), one panel per task, the frontier drawn."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mine = [r for r in rows if r["language"] == language]
    tasks = sorted({r["task"] for r in mine}, key=lambda t: (TASKS.index(t) if t in TASKS else len(TASKS), t))
    if not tasks:
        return
    columns = min(3, len(tasks))
    lines = -(-len(tasks) // columns)
    height = 3.8 * lines + 0.9  # 0.9 inch below the panels for the legend
    figure, axes = plt.subplots(lines, columns, figsize=(max(9, 5 * columns), height), squeeze=False)
    families = sorted({r["family"] for r in rows})
    colours = {f: plt.get_cmap("tab10")(i % 10) for i, f in enumerate(families)}
    markers = {"float32": "o", "float16": "s", "int8": "^", "int4": "v"}
    for ax, task in zip(axes.flat, tasks):
        points_of = [r for r in mine if r["task"] == task]
        for row in points_of:
            ax.scatter(row["bytes"], 100 * row["mean"], color=colours[row["family"]], s=28,
                       marker="*" if row["setting"] in ("full", "probe") else markers[row["dtype"]])
        front = sorted((r for r in points_of if r.get("frontier")), key=lambda r: r["bytes"])
        ax.step([r["bytes"] for r in front], [100 * r["mean"] for r in front], where="post", color="black", lw=1)
        budget = SHIP_SHARE * points_of[0]["bytes"] / points_of[0]["share"]  # share = bytes / backbone bytes
        ax.axvline(budget, color="grey", ls="--", lw=1)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # decades only: the minor labels collide
        ax.set_title(task)
        ax.set_xlabel("bytes per task")
        ax.set_ylabel(points_of[0]["metric"])
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    handles = [plt.Line2D([], [], color=colours[f], marker="o", ls="", label=f) for f in families]
    # shapes in black, hollow: the colours are the methods'
    handles += [plt.Line2D([], [], color="black", marker=m, markerfacecolor="none", ls="", label=f"{d} file")
                for d, m in markers.items()]
    handles += [plt.Line2D([], [], color="black", marker="*", markerfacecolor="none", ls="",
                           label="reference (full, probe)"),
                plt.Line2D([], [], color="grey", ls="--", label=f"{SHIP_SHARE:.1%} of the backbone")]
    figure.legend(handles=handles, loc="lower center", ncol=min(5, len(handles)), fontsize=8)
    figure.tight_layout(rect=(0, 0.9 / height, 1, 1))
    with atomic_file(path) as staging:
        figure.savefig(staging, format="png", dpi=110)
    plt.close(figure)


def write_results(cells: list[dict[str, Any]], out: Path, command: str) -> str:
    rows = points(cells)
    text = markdown(rows, command)
    with atomic_file(out.with_suffix(".md")) as staging:
        staging.write_text(text, encoding="utf-8")
    with atomic_file(out.with_suffix(".json")) as staging:
        staging.write_text(json.dumps({"command": command, "machine": machine(), "points": rows, "cells": cells},
                                      indent=1, ensure_ascii=False), encoding="utf-8")
    for language in sorted({r["language"] for r in rows}):
        plot(rows, language, out.parent / f"{out.name}_{language}.png")
    return text


def _task_budget(text: str) -> tuple[str, int | None]:
    task, _, count = text.partition("=")
    if not task or not (count == "all" or count.isdigit()):
        raise argparse.ArgumentTypeError(f"{text!r}: give TASK=N or TASK=all")
    return task, None if count == "all" else int(count)


def main(argv: list[str] | None = None) -> None:
    settings = grid()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--settings", nargs="+", default=list(settings), help="grid points (see --list)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 43])
    parser.add_argument("--max-train-examples", type=int, default=2000)
    parser.add_argument("--task-train-examples", nargs="+", type=_task_budget, default=[], metavar="TASK=N|all",
                        help=f"a task's own train budget (default: {TASK_TRAIN_EXAMPLES}, None = all)")
    parser.add_argument("--max-eval-examples", type=int, default=2000)
    parser.add_argument("--registry", type=Path, default=ROOT / "registry.yaml")
    parser.add_argument("--out", type=Path, default=RESULTS / "frontier")
    parser.add_argument("--list", action="store_true", help="print the grid and exit")
    args = parser.parse_args(argv)
    if args.list:
        for name, setting in settings.items():
            files = ", ".join(setting.dtypes)
            print(f"{name:22} {setting.family:24} {setting.adapter or setting.regime} files: {files}")
        return
    unknown = [s for s in args.settings if s not in settings]
    if unknown:
        parser.error(f"unknown setting(s) {unknown}; see --list")
    registry = load_registry(args.registry)
    per_task = {**TASK_TRAIN_EXAMPLES, **dict(args.task_train_examples)}
    budget = Budget(args.max_train_examples, args.max_eval_examples, tuple(sorted(per_task.items())))
    log = args.out.parent / f"{args.out.name}.cells.jsonl"
    command = shlex.join(["python", "benchmarks/frontier.py", *(argv if argv is not None else sys.argv[1:])])
    done = read_log(log, registry, settings, budget)  # every finished cell of this budget goes into the table
    cells = [(t, s, seed) for t in args.tasks for s in args.settings for seed in args.seeds]
    todo = [c for c in cells if c not in done]
    print(f"frontier: {len(cells) - len(todo)} of {len(cells)} cells already in {log}")
    with tempfile.TemporaryDirectory(prefix="frontier-") as scratch:
        for task, name, seed in tqdm(todo, desc="frontier", unit="cell"):
            cell = run_cell(registry, task, name, settings[name], seed, budget, Path(scratch))
            cell["fingerprint"] = _fingerprint(registry, task, settings[name], budget)
            append_cell(log, cell)
            done[(task, name, seed)] = cell
            write_results(list(done.values()), args.out, command)
            for leftover in Path(scratch).iterdir():  # this cell's folders: scored, recorded, no longer needed
                shutil.rmtree(leftover)
    print(write_results(list(done.values()), args.out, command))


if __name__ == "__main__":
    main()
