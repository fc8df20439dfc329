"""A floor for extractive QA adapters: answer with the context clause that shares the most characters
with the question (overlap / sqrt(clause length)), scored with the hub's own SQuAD metric.

    python benchmarks/qa_baseline.py --task cmrc2018
    python benchmarks/qa_baseline.py --task xquad_en
"""

from __future__ import annotations

import argparse
import json
import re

import hub
from hub.data import load_split
from hub.metrics import compute_metric
from hub.registry import load_registry

CLAUSE_END = re.compile(r"(?<=[。！？；，.!?;,])")


def best_clause(question: str, context: str) -> str:
    """The clause of `context` with the most distinct question characters, per square root of its length."""
    clauses = [c for c in CLAUSE_END.split(context) if c.strip()] or [context]
    asked = set(question)
    return max(clauses, key=lambda clause: len(asked & set(clause)) / len(clause) ** 0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True, help="a QA task of the registry")
    parser.add_argument("--registry", default=str(hub.default_registry_path()))
    args = parser.parse_args()
    registry = load_registry(args.registry)
    dev = load_split(registry, registry.task(args.task), "dev")
    predictions = [best_clause(e["question"], e["context"]) for e in dev]
    references = [list(e["answers"]["text"]) or [""] for e in dev]
    print(json.dumps({"task": args.task, "questions": len(dev), **compute_metric("squad", predictions, references)}))


if __name__ == "__main__":
    main()
