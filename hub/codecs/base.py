"""A codec turns one task kind's requests into backbone rows and the head's decoded rows back into
results; training and evaluation use the same codec, so what is trained is what is served.

- `normalize(value)`: check one request (raises InputError with the fix) and return it in a canonical form;
- `encode(requests)`: the rows of each request (usually one; a long text may need several windows);
- `finish(request, rows, decoded)`: the user-facing result from the head's per-row decodings;
- `features(example)`: the training rows of one data-set example, with their `labels`;
- `request(example)`, `prediction(result)`, `reference(example)`: how evaluation runs a dev example.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar

import torch
from transformers import PreTrainedTokenizerBase

from heads import Head
from ..errors import InputError
from ..registry import TaskSpec

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
    # extra per-row inputs the head reads, with the value that pads them
    extras_padding: ClassVar[dict[str, int]] = {}
    token_aligned: ClassVar[frozenset[str]] = frozenset()  # extras with one value per token of the row

    def __init__(self, task: TaskSpec, head: Head, tokenizer: PreTrainedTokenizerBase, max_length: int, language: str):
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

    def features(self, example: dict[str, Any]) -> list[dict[str, Any]]:
        raise NotImplementedError

    def request(self, example: dict[str, Any]) -> Any:
        raise NotImplementedError

    def prediction(self, result: dict[str, Any]) -> Any:
        raise NotImplementedError

    def reference(self, example: dict[str, Any]) -> Any:
        raise NotImplementedError

    def collate_extras(self, extras: Sequence[dict[str, list[int]]], width: int) -> dict[str, torch.Tensor]:
        """Pad each extra input to the longest row; one value per token (`token_aligned`) pads to the batch `width`."""
        return {
            name: pad_lists([e[name] for e in extras], pad, width if name in self.token_aligned else 0)
            for name, pad in self.extras_padding.items()
        }


def backbone_batch(rows: Sequence[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """Padded `input_ids`, `token_type_ids` and the [n, T] `attention_mask` of rows given as dicts.

    When a row has attention `blocks`, the batch also gets `block_mask` [n, 1, T, T] (a token sees only
    its own block; rows without blocks see everything) and `position_ids` restarting in every block, so
    a block is encoded exactly as if it were alone: two texts in one row, encoded separately.
    """
    batch = {
        "input_ids": pad_lists([r["input_ids"] for r in rows], pad_id),
        "token_type_ids": pad_lists([r["token_type_ids"] for r in rows], 0),
        "attention_mask": pad_lists([[1] * len(r["input_ids"]) for r in rows], 0),
    }
    if any(r.get("blocks") for r in rows):
        blocks = pad_lists([r.get("blocks") or [0] * len(r["input_ids"]) for r in rows], -1)
        # padding is a block of its own: real tokens never see it, and no query row is empty (no NaN)
        batch["block_mask"] = (blocks.unsqueeze(2) == blocks.unsqueeze(1)).unsqueeze(1)
        starts = torch.ones_like(blocks, dtype=torch.bool)
        starts[:, 1:] = blocks[:, 1:] != blocks[:, :-1]
        index = torch.arange(blocks.shape[1]).expand_as(blocks)
        batch["position_ids"] = index - torch.cummax(torch.where(starts, index, torch.zeros_like(index)), dim=1).values
    return batch


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What the backbone itself takes from a `backbone_batch`."""
    inputs = {k: batch[k] for k in ("input_ids", "token_type_ids", "attention_mask")}
    if "block_mask" in batch:
        inputs["attention_mask"] = batch["block_mask"]
        inputs["position_ids"] = batch["position_ids"]
    return inputs


def head_features(out: Any, attention_mask: torch.Tensor, all_layers: bool) -> dict[str, torch.Tensor]:
    """What every head reads from a backbone pass (serving and training build it here, identically).

    In float32 whatever the backbone's precision (a no-op for a float32 backbone): heads are float32.
    """
    pooled = out.pooler_output
    features = {"last_hidden_state": out.last_hidden_state.float(), "attention_mask": attention_mask,
                "pooler_output": pooled.float() if pooled is not None else None}
    if all_layers:
        features["hidden_states"] = torch.stack(out.hidden_states, dim=1).float()  # [n, layers + 1, T, H]
    return features


def pad_lists(values: Sequence[Sequence[int]], pad: int, min_width: int = 0) -> torch.Tensor:
    """[len(values), width] long tensor of the lists, right-padded with `pad` (one tensor built from Python lists)."""
    width = max([min_width, *(len(v) for v in values)])
    return torch.tensor([[*value, *[pad] * (width - len(value))] for value in values], dtype=torch.long).reshape(len(values), width)
