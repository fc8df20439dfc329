"""A codec turns one task kind's requests into backbone rows and the head's decoded rows back into
results; training and evaluation use the same codec, so what is trained is what is served.

- `normalize(value)`: check one request (raises InputError with the fix) and return it in a canonical form;
- `encode(requests)`: the rows of each request (usually one; a long text may need several windows);
- `finish(request, rows, decoded)`: the user-facing result from the head's per-row decodings;
- `features(example)`: the training rows of one data-set example, with their `labels`;
- `request(example)`, `prediction(result)`, `reference(example)`: how evaluation runs a dev example.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from transformers import PreTrainedTokenizerBase

from heads import Head
from ..registry import TaskSpec


@dataclass
class Row:
    """One backbone row: token ids, segment ids, per-row inputs for the head (`extras`), the codec's own
    bookkeeping (`meta`, e.g. which words a window holds) and whether anything was cut off."""

    input_ids: list[int]
    token_type_ids: list[int]
    extras: dict[str, list[int]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    truncated: bool = False


class Codec:
    # extra per-row inputs the head reads, with the value that pads them
    extras_padding: ClassVar[dict[str, int]] = {}

    def __init__(self, task: TaskSpec, head: Head, tokenizer: PreTrainedTokenizerBase, max_length: int, language: str):
        self.task = task
        self.head = head
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.language = language

    def normalize(self, value: Any) -> Any:
        raise NotImplementedError

    def encode(self, requests: Sequence[Any]) -> list[list[Row]]:
        raise NotImplementedError

    def finish(self, request: Any, rows: list[Row], decoded: list[dict[str, Any]]) -> dict[str, Any]:
        raise NotImplementedError

    def features(self, example: dict[str, Any]) -> list[dict[str, Any]]:
        raise NotImplementedError

    def request(self, example: dict[str, Any]) -> Any:
        raise NotImplementedError

    def prediction(self, result: dict[str, Any]) -> Any:
        raise NotImplementedError

    def reference(self, example: dict[str, Any]) -> Any:
        raise NotImplementedError

    def collate_extras(self, extras: Sequence[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        """Pad each extra input to the longest row."""
        return {name: pad_lists([e[name] for e in extras], pad) for name, pad in self.extras_padding.items()}


def pad_lists(values: Sequence[Sequence[int]], pad: int) -> torch.Tensor:
    width = max((len(v) for v in values), default=0)
    out = torch.full((len(values), width), pad, dtype=torch.long)
    for i, value in enumerate(values):
        if len(value):
            out[i, : len(value)] = torch.as_tensor(value, dtype=torch.long)
    return out
