"""Where raw rows come from: delimited files, JSON lines, CoNLL columns, Hub data sets, package corpora."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..registry import DataSpec, Registry, TaskSpec
from .corpora import package_examples


def read_rows(registry: Registry, task: TaskSpec, split: str) -> tuple[list[Any], str]:
    """The raw rows of one split, and a description of their source for error messages."""
    data = task.data
    assert data is not None  # load_split refuses a task without data
    if data.format == "package":
        return list(package_examples(data, split)), f"package corpus {data.corpus!r} ({split})"
    if data.format == "hf":
        return _hf_rows(data, split)
    location = getattr(data, split)
    if not location:
        raise DataError(f"task {task.name!r}: data.{split} is not set in {registry.path}; give the file's path.")
    path = registry.resolve(location)
    if not path.is_file():
        raise DataError(
            f"task {task.name!r}: data file {path} not found (data.{split} in {registry.path}); fix the path or "
            "fetch the data (GLUE/CLUE files live in ../shared/data, see README)."
        )
    if data.format == "squad":
        return list(_squad(path, data, split)), str(path)
    readers = {"jsonl": _jsonl, "conll": _conll, "semeval": _semeval, "spert": _spert}
    reader = readers.get(data.format, _delimited)
    return list(reader(path, data)), str(path)


def _delimited(path: Path, data: DataSpec) -> Iterator[list[str] | dict[str | int, str]]:
    tsv = data.format == "tsv"
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t" if tsv else ",",
                            quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL)
        if not data.header:
            yield from reader
            return
        header = next(reader, [])
        for row in reader:
            record: dict[str | int, str] = dict(zip(header, row))
            record.update({i: value for i, value in enumerate(row)})  # columns may be named or numbered
            yield record


def _jsonl(path: Path, data: DataSpec) -> Iterator[dict]:
    with open(path, encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{number}: not a JSON object ({exc.msg}); fix or remove that line.") from None


def _spert(path: Path, data: DataSpec) -> Iterator[Any]:
    """SpERT's JSON: one array of sentences ({tokens, entities, relations}); JSON lines of them are read too."""
    text = path.read_text(encoding="utf-8-sig")
    if not text.lstrip().startswith("["):
        yield from _jsonl(path, data)
        return
    try:
        yield from json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not SpERT-format JSON ({exc.msg} at line {exc.lineno}); give a JSON array of "
                        "sentences with tokens, entities and relations, or JSON lines of them.") from None


def _squad(path: Path, data: DataSpec, split: str) -> Iterator[dict[str, Any]]:
    """SQuAD-format JSON (SQuAD, XQuAD, CMRC2018): one row per question. With `dev_every: n` the same
    file gives both splits: every n-th article is dev, the others train (a split anyone can rebuild)."""
    try:
        articles = json.loads(path.read_text(encoding="utf-8-sig"))["data"]
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: not SQuAD-format JSON (a top-level 'data' list of articles): {exc}") from None
    for number, article in enumerate(articles, 1):
        if data.dev_every and (number % data.dev_every == 0) != (split == "dev"):
            continue
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                answers = [a for a in qa.get("answers", []) if a.get("text")]
                yield {"id": str(qa.get("id", "")), "question": qa["question"], "context": paragraph["context"],
                       "answers": {"text": [a["text"] for a in answers],
                                   "answer_start": [int(a["answer_start"]) for a in answers]}}


def _semeval(path: Path, data: DataSpec) -> Iterator[dict[str, str]]:
    """SemEval-2010 Task 8: `id<TAB>"sentence with <e1>..</e1> <e2>..</e2>"`, then the relation, a comment,
    a blank line."""
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    for number, line in enumerate(lines, 1):
        if "\t" in line and "<e1>" in line:
            if number >= len(lines):
                raise DataError(f"{path}:{number}: a sentence without its relation line.")
            yield {"text": line.split("\t", 1)[1].strip().strip('"'), "label": lines[number].strip()}


def _conll(path: Path, data: DataSpec) -> Iterator[dict[str, list[str]]]:
    """CoNLL columns: whitespace-separated, one token per line, sentences split by blank lines."""
    token_column, tag_column = data.columns.get("tokens", 0), data.columns.get("tags", -1)
    tokens: list[str] = []
    tags: list[str] = []
    with open(path, encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, 1):
            fields = line.split()
            if not fields or fields[0] == "-DOCSTART-":
                if tokens:
                    yield {"tokens": tokens, "tags": tags}
                tokens, tags = [], []
                continue
            try:
                tokens.append(fields[int(token_column)])
                tags.append(fields[int(tag_column)])
            except (IndexError, ValueError):
                raise DataError(
                    f"{path}:{number}: no column {token_column!r}/{tag_column!r} in {len(fields)} columns; "
                    "set data.columns.tokens / data.columns.tags to 0-based column numbers."
                ) from None
    if tokens:
        yield {"tokens": tokens, "tags": tags}


def _hf_rows(data: DataSpec, split: str) -> tuple[list[dict[str, Any]], str]:
    """Online users: a Hub data set. ClassLabel ids become their names before label_values applies."""
    from datasets import load_dataset

    split_name = getattr(data, split) or ("validation" if split == "dev" else split)
    try:
        dataset = load_dataset(data.path, data.name, split=split_name)
    except Exception as exc:  # datasets raises many types (connection, missing config, ...)
        raise DataError(f"cannot load Hub data set {data.path!r} ({data.name}, {split_name}): "
                        f"{str(exc).splitlines()[0]}") from None
    rows = [dict(r) for r in dataset]
    for column in (data.columns.get("label", "label"), data.columns.get("tags", "tags")):
        feature = dataset.features.get(column)
        names = getattr(feature, "names", None)  # ClassLabel
        inner = getattr(getattr(feature, "feature", None), "names", None)  # a sequence of ClassLabel (tags)
        for row in rows:
            if names:
                row[column] = names[row[column]]
            elif inner:
                row[column] = [inner[i] for i in row[column]]
    return rows, f"{data.path}/{data.name or ''} ({split_name})"


