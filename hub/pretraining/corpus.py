"""Raw text for pre-training: one text per line, JSON lines with a text field, or a task's own training texts without
their labels (task-adaptive pre-training); checked before any training."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import DataError
from ..registry import Registry

JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")
MIN_TEXTS = 2  # pre-training holds texts out to measure masked-token accuracy before and after


def read_texts(path: Path, field: str = "text") -> list[str]:
    """The non-blank texts of a corpus file: JSON lines (`.jsonl`, `.json`, `.ndjson`: each line an object whose
    `field` is the text) or plain text, one text per line. Refused with DataError, naming the problem and the fix:
    a missing, binary or empty file, a malformed JSON line, a line without `field`."""
    if not path.is_file():
        raise DataError(f"corpus {path} not found (or not a file); give a text file (one text per line) or JSON "
                        f"lines with a {field!r} field.")
    lines = _utf8_lines(path)
    texts = _json_texts(path, lines, field) if path.suffix.lower() in JSON_SUFFIXES else lines
    texts = [text.strip() for text in texts if text.strip()]
    if len(texts) < MIN_TEXTS:
        raise DataError(f"corpus {path} has {len(texts)} non-blank text(s); pre-training needs at least {MIN_TEXTS} "
                        "(some are held out to measure masked-token accuracy): give more text, one text per line.")
    return texts


def _json_texts(path: Path, lines: list[str], field: str) -> list[str]:
    texts = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}, line {number}: not JSON ({exc.msg}); each line must be one JSON object with a "
                            f"{field!r} field (or give a plain text file, one text per line).") from None
        text = row.get(field) if isinstance(row, dict) else None
        if not isinstance(text, str):
            found = ", ".join(map(repr, row)) if isinstance(row, dict) else type(row).__name__
            raise DataError(f"{path}, line {number}: no text field {field!r} (found: {found}); name the field that "
                            "holds the text.")
        texts.append(text)
    return texts


def read_documents_file(path: Path) -> list[list[str]]:
    """A next-sentence prediction corpus: plain text, one sentence per line, documents separated by a blank line
    (BERT's layout); DataError for a missing or non-UTF-8 file."""
    from .sentence_pairs import read_documents

    if not path.is_file() or path.suffix.lower() in JSON_SUFFIXES:
        raise DataError(f"next-sentence corpus {path}: give a plain text file (not found, a folder, or JSON lines), "
                        "one sentence per line, documents separated by a blank line.")
    return read_documents(_utf8_lines(path))


def _utf8_lines(path: Path) -> list[str]:
    """The lines of a corpus file, a UTF-8 byte-order mark (Windows editors) dropped; DataError when it is not UTF-8."""
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"corpus {path} is not UTF-8 text (byte {exc.start}); convert it to UTF-8 (e.g. `iconv -t "
                        "UTF-8`) or give another file.") from None


def task_texts(registry: Registry, task_name: str) -> list[str]:
    """The distinct texts of a task's train split, labels left out: each input field's text (both texts of a pair, a
    question and its context), a tagging example's words joined as the backbone's language writes them."""
    from ..data import load_split  # datasets and the kinds' readers: only when a task is the corpus

    task = registry.task(task_name)
    if task.data is None:
        raise DataError(f"task {task_name!r} has no data section to read its training texts from; give --text files.")
    joiner = "" if registry.backbone(task.backbone).language == "zh" else " "
    texts: dict[str, None] = {}  # ordered and distinct: a QA context is shared by many questions
    for example in load_split(registry, task, "train"):
        for field in dict.fromkeys([*task.inputs, "text", "tokens"]):
            value = example.get(field)
            text = joiner.join(value) if isinstance(value, list) else value
            if isinstance(text, str) and text.strip():
                texts[text.strip()] = None
    return list(texts)


def tasks_texts(registry: Registry, task_names: list[str]) -> list[str]:
    """The training texts of several tasks of one backbone, taken in turn (the first of each, the second of each,
    ...) and distinct, so that the first N are a mix of every task; DataError when the tasks' backbones differ."""
    backbones = {name: registry.task(name).backbone for name in dict.fromkeys(task_names)}
    if len(set(backbones.values())) > 1:
        listed = ", ".join(f"{name} ({backbone})" for name, backbone in backbones.items())
        raise DataError(f"the corpus tasks are on different backbones: {listed}; pre-train on one backbone's tasks.")
    per_task = [task_texts(registry, name) for name in backbones]
    mixed: dict[str, None] = {}
    for turn in range(max(len(texts) for texts in per_task)):
        for texts in per_task:
            if turn < len(texts):
                mixed[texts[turn]] = None
    return list(mixed)
