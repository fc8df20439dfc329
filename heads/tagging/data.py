"""Tagging examples: `tokens` + `tags` (word-level tags), or `text` + `spans` (character spans)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hub.errors import DataError

if TYPE_CHECKING:
    from hub.registry import TaskSpec

Example = dict[str, Any]


def tagging_examples(rows: list[Any], task: TaskSpec, source: str) -> list[Example]:
    assert task.data is not None  # hub.data reads only tasks with a data section
    columns = {} if task.data.format in ("conll", "package") else task.data.columns  # conll columns are file columns
    tokens_key, tags_key = columns.get("tokens", "tokens"), columns.get("tags", "tags")
    text_key, spans_key = columns.get("text", "text"), columns.get("label", "label")
    examples = []
    for index, row in enumerate(rows):
        where = f"{source}, example {index + 1}"
        if not isinstance(row, dict):
            raise DataError(f"{where}: a tagging example must be an object with tokens + tags or text + spans.")
        if tokens_key in row and tags_key in row:
            examples.append(_tokens_example(row[tokens_key], row[tags_key], task, where))
        elif text_key in row:
            examples.append(_spans_example(row[text_key], row.get(spans_key), task, where))
        else:
            raise DataError(
                f"{where}: no {tokens_key!r}+{tags_key!r} nor {text_key!r} field (has {sorted(row)}); "
                "set data.columns.tokens / tags / text / label."
            )
    return examples


def _tokens_example(tokens: Any, tags: Any, task: TaskSpec, where: str) -> Example:
    if not isinstance(tokens, list) or not isinstance(tags, list) or len(tokens) != len(tags):
        raise DataError(f"{where}: tokens and tags must be lists of the same length.")
    assert task.data is not None and task.labels is not None  # read with data; tagging and span_ner have labels
    mapping = task.data.label_values or {}
    dropping = sorted(raw for raw, label in mapping.items() if label is None)
    if dropping:
        raise DataError(f"{where}: data.label_values maps {dropping[:5]} to null, which drops a row, but a tagging "
                        "row has one tag per token; map each such tag to a label (e.g. 'O') instead.")
    tags = [mapping.get(str(tag)) or str(tag) for tag in tags]
    labels = task.labels
    known = set(labels) if task.kind == "tagging" else {"O"} | {t for t in tags if t.partition("-")[2] in labels}
    unknown = sorted(set(tags) - known)
    if unknown:
        raise DataError(f"{where}: tags {unknown[:5]} are not among the task's labels; "
                        "add them or map them with data.label_values.")
    kept = [(str(token), tag) for token, tag in zip(tokens, tags) if str(token).strip()]
    if not kept:
        return {"tokens": [], "tags": []}
    words, word_tags = zip(*kept)
    return {"tokens": list(words), "tags": list(word_tags)}


def _spans_example(text: Any, raw: Any, task: TaskSpec, where: str) -> Example:
    """CLUENER `{"type": {"mention": [[start, end_inclusive], ...]}}` or `[{"start", "end", "label"}]`
    (end exclusive)."""
    if not isinstance(text, str):
        raise DataError(f"{where}: 'text' must be a string.")
    assert task.labels is not None  # tagging and span_ner have labels
    spans: list[dict[str, Any]] = []
    if isinstance(raw, dict):
        for kind, mentions in raw.items():
            for mention, places in mentions.items():
                for start, end in places:
                    if not 0 <= start <= end < len(text):
                        raise DataError(
                            f"{where}: span {start}-{end} of {mention!r} is outside the text (length {len(text)}).")
                    if text[start:end + 1] != mention:
                        raise DataError(f"{where}: span {start}-{end} is {text[start:end + 1]!r}, not {mention!r}.")
                    spans.append({"start": int(start), "end": int(end) + 1, "label": str(kind)})
    elif isinstance(raw, list):
        spans = [{"start": int(s["start"]), "end": int(s["end"]), "label": str(s["label"])} for s in raw]
    elif raw is not None:
        raise DataError(f"{where}: spans must be a CLUENER-style object or a list of {{start, end, label}}.")
    types = set(task.labels) if task.kind == "span_ner" else {tag.partition("-")[2] for tag in task.labels} - {""}
    for span in spans:
        if span["label"] not in types:
            raise DataError(f"{where}: entity type {span['label']!r} is not among the task's types {sorted(types)}.")
        if not 0 <= span["start"] < span["end"] <= len(text):
            raise DataError(f"{where}: span {span['start']}-{span['end']} is outside the text (length {len(text)}).")
    return {"text": text, "spans": sorted(spans, key=lambda s: (s["start"], s["end"]))}
