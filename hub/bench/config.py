"""What a benchmark run covers: suites, methods, the shared budget, where results go."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import HubError
from ..registry import Registry

# GLUE/CLUE proper plus the NER and QA tasks of each language (issue: "include them once their heads exist").
SUITES: dict[str, tuple[str, ...]] = {
    "glue": ("cola", "sst2", "mrpc", "stsb", "rte", "conll2003", "xquad_en"),
    "clue": ("tnews", "afqmc", "cluener", "msra_ner", "cmrc2018"),
}
METHOD_NAMES = {"lora": "LoRA", "full": "full fine-tune", "probe": "linear probe", "registered": "registered adapter"}


@dataclass
class BenchConfig:
    """One benchmark run: which cells, on which budget, written where."""

    suite: str
    tasks: list[str]
    methods: list[str] = field(default_factory=lambda: ["lora", "full", "probe"])
    seeds: list[int] = field(default_factory=lambda: [42])
    max_train_examples: int | None = 2000
    max_eval_examples: int | None = None
    epochs: float | None = None
    learning_rate: float | None = None
    full_learning_rate: float = 5e-5
    full_head_learning_rate: float | None = None  # full fine-tuning's head (default: full_learning_rate, as in BERT)
    probe_learning_rate: float = 5e-3
    rank: int | None = None
    out: Path = Path("benchmarks/results")
    name: str | None = None  # file stem of the results (default: the suite), for runs on another budget

    def budget(self) -> dict[str, Any]:
        """What a cell's result depends on besides (task, method, seed): cells only mix within one budget."""
        keys = ("max_train_examples", "max_eval_examples", "epochs", "learning_rate", "full_learning_rate",
                "probe_learning_rate", "rank")
        budget = {k: getattr(self, k) for k in keys}
        budget["epochs"] = None if self.epochs is None else float(self.epochs)  # 3 and 3.0 are one budget
        # options added later count only when set, so the logs of earlier runs stay valid
        budget.update({k: getattr(self, k) for k in ("full_head_learning_rate",) if getattr(self, k) is not None})
        return budget

    @property
    def stem(self) -> str:
        return self.name or self.suite

    @property
    def log_path(self) -> Path:
        return self.out / f"{self.stem}.cells.jsonl"


def with_data_root(registry: Registry, root: Path) -> Registry:
    """The registry with data files under its default data folder (../shared/data beside the repository)
    read from `root` instead, e.g. a copy of GLUE/CLUE elsewhere."""
    default = registry.resolve("../shared/data")
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise HubError(f"bench: data folder {root} does not exist; "
                       "give the folder that holds glue/, clue/, conll2003/ ...")

    def moved(path: str | None) -> str | None:
        if path is None:
            return None
        absolute = registry.resolve(path)
        return str(root / absolute.relative_to(default)) if absolute.is_relative_to(default) else path

    tasks = [t.model_copy(update={"data": t.data.model_copy(update={"train": moved(t.data.train),
                                                                    "dev": moved(t.data.dev)})})
             if t.data else t for t in registry.tasks]
    return registry.model_copy(update={"tasks": tasks})
