"""The two codec contracts of a task kind; training and evaluation encode through the serving codec, so what is
trained is what is served.

`Codec` (serving):
- `normalize(value)`: check one request (raises InputError with the fix) and return it in a canonical form;
- `encode(requests)`: the rows of each request (usually one; a long text may need several windows);
- `finish(request, rows, decoded)`: the user-facing result from the head's per-row decodings;
- `input_schema(inputs)`: the JSON shapes `normalize` accepts (the HTTP server's OpenAPI document).

`ExampleCodec` (training and evaluation, over a serving codec):
- `features(example)`: the training rows of one data-set example, with their `labels`;
- `request(example)`, `prediction(result)`, `reference(example)`: how evaluation runs a dev example.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import torch
from transformers import PreTrainedTokenizerBase

from hub.errors import InputError

from .base import ExtraInput, Head

if TYPE_CHECKING:
    from hub.registry import TaskSpec

TEXT_SCHEMA: dict[str, Any] = {"type": "string", "minLength": 1, "pattern": r"\S"}  # a non-blank string


def fields_schema(names: list[str], properties: dict[str, Any] | None = None) -> dict[str, Any]:
    """An object with exactly these keys, each a text (or the schema `properties` gives it)."""
    return {"type": "object", "additionalProperties": False, "required": names,
            "properties": {name: (properties or {}).get(name, TEXT_SCHEMA) for name in names}}


def pair_schema(names: list[str]) -> list[dict[str, Any]]:
    """Two texts: a two-item array, or an object keyed by the two field names."""
    return [{"type": "array", "items": TEXT_SCHEMA, "minItems": 2, "maxItems": 2}, fields_schema(names)]


# a letter or digit always gives a token (or [UNK]); only texts without one need the tokenizer to tell
_LETTER_OR_DIGIT = re.compile(r"[^\W_]")


@dataclass
class Row:
    """One backbone row: token ids, segment ids, per-row inputs for the head (`extras`), the codec's own
    bookkeeping (`meta`, e.g. which words a window holds) and whether anything was cut off."""

    input_ids: list[int]
    token_type_ids: list[int]
    extras: dict[str, list[int]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    truncated: bool = False
    blocks: list[int] | None = None  # attention blocks: a token attends only within its block (siamese pairs)


class Codec:
    """Serving: requests of one task <-> backbone rows <-> results."""

    def __init__(self, task: TaskSpec, head: Head, tokenizer: PreTrainedTokenizerBase, max_length: int,
                 language: str) -> None:
        self.task = task
        self.head = head
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.language = language

    @cached_property
    def specials(self) -> tuple[list[int], list[int]]:
        """The special tokens the tokenizer puts before and after a text ([CLS] ... [SEP] for BERT)."""
        bare = self.tokenizer("a", add_special_tokens=False)["input_ids"]
        full = self.tokenizer("a")["input_ids"]
        start = next(i for i in range(len(full)) if full[i:i + len(bare)] == bare)
        return full[:start], full[start + len(bare):]

    def check_readable(self, text: str, what: str) -> None:
        """Raise InputError when `text` gives the tokenizer nothing to read (it drops control, zero-width, combining,
        private-use and unassigned characters): the model would answer about an empty input."""
        if _LETTER_OR_DIGIT.search(text) or self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]:
            return
        raise InputError(f"task {self.task.name!r}: {what} has no tokens the model can read (only control, zero-width, "
                         "combining or unassigned characters); send text with letters, digits or punctuation.")

    @property
    def shared_encoding(self) -> tuple | None:
        """Codecs with equal (non-None) keys encode any of each other's requests the same way, so the router
        tokenizes their requests in ONE call (the fast tokenizer spreads a big call over threads; a call per
        task does not). None: this codec encodes only its own task's requests."""
        return None

    def normalize(self, value: Any) -> Any:
        raise NotImplementedError

    def encode(self, requests: Sequence[Any]) -> list[list[Row]]:
        raise NotImplementedError

    def finish(self, request: Any, rows: list[Row], decoded: list[dict[str, Any]]) -> dict[str, Any]:
        """Default for one row per request: the head's decoding, flagged when the row was cut."""
        return {**decoded[0], **({"truncated": True} if rows[0].truncated else {})}

    @classmethod
    def input_schema(cls, inputs: list[str]) -> dict[str, Any]:
        """The JSON Schema of one `input` of a task with these input fields."""
        raise NotImplementedError


class ExampleCodec:
    """Training and evaluation: data-set examples <-> the serving codec's requests, rows and results."""

    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        self.task = codec.task
        self.head = codec.head

    def features(self, example: dict[str, Any]) -> list[dict[str, Any]]:
        """Training rows (`input_ids`, `token_type_ids`, the head's extra inputs, `labels`) of one example."""
        raise NotImplementedError

    def request(self, example: dict[str, Any]) -> Any:
        raise NotImplementedError

    def prediction(self, result: dict[str, Any]) -> Any:
        raise NotImplementedError

    def reference(self, example: dict[str, Any]) -> Any:
        raise NotImplementedError

    def serving_mismatch(self, examples: Sequence[dict[str, Any]]) -> str | None:
        """Why training examples cannot look like what serving will see (then training stops with the fix), or None."""
        return None


def collate_extras(inputs: Sequence[ExtraInput], extras: Sequence[dict[str, list[int]]],
                   width: int) -> dict[str, torch.Tensor]:
    """Each extra input padded to the longest row; per-token inputs to the batch's token `width`."""
    return {spec.name: pad_lists([e[spec.name] for e in extras], spec.pad, width if spec.per_token else 0)
            for spec in inputs}


def pad_lists(values: Sequence[Sequence[int]], pad: int, min_width: int = 0) -> torch.Tensor:
    """[len(values), width] long tensor of the lists, right-padded with `pad` (one tensor built from Python lists)."""
    width = max([min_width, *(len(v) for v in values)])
    rows = [[*value, *[pad] * (width - len(value))] for value in values]
    return torch.tensor(rows, dtype=torch.long).reshape(len(values), width)
