"""Joint entity and relation examples from SpERT's JSON: `tokens`, `entities` ({type, start, end}: token indices, end
exclusive) and `relations` ({type, head, tail}: indices into the sentence's entities). Every fault is refused naming
the sentence and the fix: spans out of range or empty, unknown types, relations naming missing entities. SpERT's types
file (`data.types`) must list the task's types; its `symmetric` flags become `head.symmetric`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hub.errors import DataError

if TYPE_CHECKING:
    from hub.registry import TaskSpec

Example = dict[str, Any]


def spert_examples(rows: list[Any], task: TaskSpec, source: str) -> list[Example]:
    """Examples {tokens, entities: [{start, end, type}], relations: [{head, tail, type}]}, entities in file order
    (records, as a `datasets.Dataset` holds them)."""
    assert task.labels is not None  # entity_relation is a labelled kind
    relation_types = set(task.head.get("relations") or [])
    return [_example(row, set(task.labels), relation_types, f"{source}, sentence {index + 1}")
            for index, row in enumerate(rows)]


def _example(row: Any, entity_types: set[str], relation_types: set[str], where: str) -> Example:
    if not isinstance(row, dict) or not isinstance(row.get("tokens"), list):
        raise DataError(f"{where}: a sentence must be an object with a 'tokens' list (SpERT's JSON).")
    tokens = row["tokens"]
    if not tokens or not all(isinstance(token, str) and token.strip() for token in tokens):
        raise DataError(f"{where}: 'tokens' must be non-empty strings; remove empty tokens.")
    entities = []
    for number, entity in enumerate(row.get("entities") or []):
        start, end, kind = _two_ints_and_type(entity, ("start", "end"), f"{where}, entity {number}")
        if not 0 <= start < end <= len(tokens):
            raise DataError(f"{where}, entity {number}: tokens [{start}, {end}) are not a span of the sentence's "
                            f"{len(tokens)} tokens (end is exclusive); fix the span.")
        if kind not in entity_types:
            raise DataError(f"{where}, entity {number}: type {kind!r} is not one of the task's labels "
                            f"{sorted(entity_types)}; add it to 'labels'.")
        entities.append({"start": start, "end": end, "type": kind})
    relations = []
    for number, relation in enumerate(row.get("relations") or []):
        head, tail, kind = _two_ints_and_type(relation, ("head", "tail"), f"{where}, relation {number}")
        if not (0 <= head < len(entities) and 0 <= tail < len(entities)) or head == tail:
            raise DataError(f"{where}, relation {number}: head {head} and tail {tail} must be two of the sentence's "
                            f"{len(entities)} entities (indices from 0).")
        if kind not in relation_types:
            raise DataError(f"{where}, relation {number}: type {kind!r} is not one of head.relations "
                            f"{sorted(relation_types)}; add it there.")
        relations.append({"head": head, "tail": tail, "type": kind})
    return {"tokens": tokens, "entities": entities, "relations": relations}


def _two_ints_and_type(record: Any, names: tuple[str, str], where: str) -> tuple[int, int, str]:
    try:
        return int(record[names[0]]), int(record[names[1]]), str(record["type"])
    except (KeyError, TypeError, ValueError):
        raise DataError(f"{where}: needs integer {names[0]!r}, {names[1]!r} and a 'type'.") from None


def spert_types(path: Path, task: TaskSpec) -> dict[str, Any]:
    """Head options from SpERT's types file ({entities: {type: ...}, relations: {type: {symmetric: bool}}}): its
    symmetric relation types. Its entity and relation types must be the task's `labels` and `head.relations`, and a
    `head.symmetric` the registry also gives must agree with it."""
    try:
        types = json.loads(Path(path).read_text(encoding="utf-8-sig"))
        entities, relations = dict(types["entities"]), dict(types["relations"])
        symmetric = sorted(name for name, spec in relations.items() if isinstance(spec, dict) and spec.get("symmetric"))
    except FileNotFoundError:
        raise DataError(f"data.types {path}: no such file; give SpERT's types.json or remove data.types.") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"data.types {path}: not SpERT's types file (an object with 'entities' and 'relations' "
                        f"objects keyed by type name): {exc!r}") from None
    for what, listed, given in (("entity types", entities, task.labels or []),
                                ("relation types", relations, task.head.get("relations") or [])):
        if set(listed) != set(given):
            field = "labels" if what == "entity types" else "head.relations"
            raise DataError(f"data.types {path}: its {what} {sorted(listed)} are not the task's {field} "
                            f"{sorted(given)}; make them the same.")
    if "symmetric" in task.head and sorted(task.head["symmetric"]) != symmetric:
        raise DataError(f"head.symmetric {sorted(task.head['symmetric'])} disagrees with data.types {path}, which "
                        f"marks {symmetric} symmetric; remove head.symmetric (the types file decides) or fix one.")
    return {"symmetric": symmetric}
