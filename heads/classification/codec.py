"""Codec for one text or a text pair (classification, regression): truncation is reported, never silent."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from hub.errors import InputError

from ..codec import TEXT_SCHEMA, Codec, ExampleCodec, Row, fields_schema, pair_schema
from .head import SEGMENTS

if TYPE_CHECKING:
    from hub.registry import TaskSpec


def _describe(task: TaskSpec) -> str:
    if len(task.inputs) == 1:
        return f"task {task.name!r} takes one text: pass a non-empty string"
    a, b = task.inputs
    return (f"task {task.name!r} takes a pair ({a}, {b}): pass a tuple of two non-empty strings "
            f"or a dict with keys {a!r}, {b!r}")


def normalize_input(task: TaskSpec, value: Any) -> tuple[str, ...]:
    """Check one request's input against the task's input fields; return its texts in field order."""
    if isinstance(value, str):
        fields: tuple = (value,)
    elif isinstance(value, tuple):
        fields = value
    elif isinstance(value, dict):
        unknown = sorted(set(value) - set(task.inputs))
        missing = [name for name in task.inputs if name not in value]
        if unknown or missing:
            raise InputError(f"{_describe(task)}; got keys {sorted(value)}.")
        fields = tuple(value[name] for name in task.inputs)
    else:
        got = "None" if value is None else type(value).__name__
        raise InputError(f"{_describe(task)}; got {got}.")
    if len(fields) != len(task.inputs):
        raise InputError(f"{_describe(task)}; got {len(fields)} text(s).")
    for field in fields:
        if not isinstance(field, str):
            got = "None" if field is None else type(field).__name__
            raise InputError(f"{_describe(task)}; got a {got} inside the input.")
        if not field.strip():
            raise InputError(f"{_describe(task)}; got an empty or whitespace-only text.")
    return fields


def _longest_first(lengths: list[int], budget: int) -> list[int]:
    """Tokens each text keeps: the shorter (the first on a tie) up to half the budget, the longer the rest."""
    short = 0 if lengths[0] <= lengths[1] else 1
    keep = [0, 0]
    keep[short] = min(lengths[short], budget // 2)
    keep[1 - short] = min(lengths[1 - short], budget - keep[short])
    return keep


class TextCodec(Codec):
    """Single texts and pairs. A pair is one input ([CLS] a [SEP] b [SEP]) or, with the head's
    `pair: siamese`, two texts side by side in one row that never attend to each other."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.siamese = SEGMENTS in self.head.extra_inputs() and len(self.task.inputs) == 2

    @classmethod
    def input_schema(cls, inputs: list[str]) -> dict[str, Any]:
        return {"anyOf": [TEXT_SCHEMA, fields_schema(inputs)] if len(inputs) == 1 else pair_schema(inputs)}

    @property
    def shared_encoding(self) -> tuple:
        """What `encode` depends on besides the requests: the task's own name and labels play no part."""
        return (TextCodec, id(self.tokenizer), self.max_length, len(self.task.inputs), self.siamese)

    def normalize(self, value: Any) -> tuple[str, ...]:
        texts = normalize_input(self.task, value)
        for name, text in zip(self.task.inputs, texts):
            self.check_readable(text, "the text" if len(texts) == 1 else f"the {name!r} text")
        return texts

    def encode(self, requests: Sequence[tuple[str, ...]]) -> list[list[Row]]:
        """Tokenize single texts or pairs; rows longer than `max_length` are truncated and flagged."""
        if not requests:
            return []
        if self.siamese:
            return [[row] for row in self._siamese_rows(requests)]
        firsts = [r[0] for r in requests]
        seconds = [r[1] for r in requests] if len(requests[0]) == 2 else None
        full = self.tokenizer(firsts, seconds, truncation=False, verbose=False)
        rows = []
        for i, (ids, types) in enumerate(zip(full["input_ids"], full["token_type_ids"])):
            truncated = len(ids) > self.max_length
            if truncated:
                ids, types = self._cut(ids, types, full.sequence_ids(i))
            rows.append([Row(ids, types, truncated=truncated)])
        return rows

    def _cut(self, ids: list[int], types: list[int], sequence: list[int | None]) -> tuple[list[int], list[int]]:
        """A row cut to `max_length` as the tokenizer's `longest_first` cuts it, each text losing its end. Done here:
        the tokenizer's pair truncation also builds every pair of overflow windows of the two texts, quadratic in
        their length (5 s for two 4,000-token texts on this CPU)."""
        keep = _longest_first([sequence.count(0), sequence.count(1)], self.max_length - sequence.count(None))
        seen = [0, 0]
        kept = []
        for position, text in enumerate(sequence):  # text: None for special tokens, else 0 or 1
            if text is not None:
                seen[text] += 1
            if text is None or seen[text] <= keep[text]:
                kept.append(position)
        return [ids[k] for k in kept], [types[k] for k in kept]

    def _siamese_rows(self, requests: Sequence[tuple[str, ...]]) -> list[Row]:
        """[CLS] a [SEP] [CLS] b [SEP], each text its own attention block and segment; longest text cut first."""
        firsts = self.tokenizer([r[0] for r in requests], verbose=False)["input_ids"]
        seconds = self.tokenizer([r[1] for r in requests], verbose=False)["input_ids"]
        rows = []
        for a, b in zip(firsts, seconds):
            keep_a, keep_b = len(a), len(b)
            while keep_a + keep_b > self.max_length:
                if keep_a >= keep_b:
                    keep_a -= 1
                else:
                    keep_b -= 1
            truncated = (keep_a, keep_b) != (len(a), len(b))
            a, b = a[: keep_a - 1] + a[-1:], b[: keep_b - 1] + b[-1:]  # keep each text's closing [SEP]
            segments = [0] * len(a) + [1] * len(b)
            rows.append(Row(a + b, [0] * len(segments), {SEGMENTS.name: segments}, truncated=truncated,
                            blocks=segments))
        return rows



class TextExamples(ExampleCodec):
    """Examples with the task's input fields and a `label` (a label name, or a number for regression)."""

    codec: TextCodec

    def features(self, example: dict[str, Any]) -> list[dict[str, Any]]:
        row = self.codec.encode([self.request(example)])[0][0]
        label = self.head.targets([example["label"]])[0].item()
        extra = {"blocks": row.blocks, **row.extras} if self.codec.siamese else {}
        return [{"input_ids": row.input_ids, "token_type_ids": row.token_type_ids, **extra, "labels": label}]

    def request(self, example: dict[str, Any]) -> tuple[str, ...]:
        return tuple(example[name] for name in self.task.inputs)

    def prediction(self, result: dict[str, Any]) -> Any:
        return result["label"] if "label" in result else result["value"]

    def reference(self, example: dict[str, Any]) -> Any:
        return example["label"]
