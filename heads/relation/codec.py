"""Codec for relation classification: a text with a head and a tail entity -> one row (entity markers
or plain text) -> a relation label. Direction matters: (head, tail) and (tail, head) are different rows."""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral
from typing import Any

from hub.errors import InputError

from ..codec import TEXT_SCHEMA, Codec, ExampleCodec, Row, fields_schema
from .head import ENTITY_TOKENS, RelationHead

HEAD_MARK, TAIL_MARK = "@", "#"  # in every BERT vocabulary: no new embeddings, the backbone stays shared
_MARKED = re.compile(r"<e1>(.*?)</e1>|<e2>(.*?)</e2>", re.S)


@dataclass
class RelationRequest:
    text: str
    head: tuple[int, int]  # character span, end exclusive
    tail: tuple[int, int]


def parse_marked(text: str) -> RelationRequest:
    """'The <e1>child</e1> was wrapped into the <e2>cradle</e2>.' -> plain text + spans (SemEval style)."""
    plain, spans, last = [], {}, 0
    for match in _MARKED.finditer(text):
        plain.append(text[last:match.start()])
        start = sum(map(len, plain))
        mention = match.group(1) if match.group(1) is not None else match.group(2)
        spans["head" if match.group(1) is not None else "tail"] = (start, start + len(mention))
        plain.append(mention)
        last = match.end()
    plain.append(text[last:])
    if set(spans) != {"head", "tail"}:
        raise InputError("a marked text needs one <e1>head</e1> and one <e2>tail</e2>.")
    return RelationRequest("".join(plain), spans["head"], spans["tail"])


class RelationCodec(Codec):
    head: RelationHead

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if self.head.config.method == "markers":
            for mark in (HEAD_MARK, TAIL_MARK):
                if self.tokenizer(mark, add_special_tokens=False)["input_ids"] in ([], [self.tokenizer.unk_token_id]):
                    raise ValueError(
                        f"the backbone's vocabulary has no {mark!r} token for entity markers; use head.method: pooled")

    @classmethod
    def input_schema(cls, inputs: list[str]) -> dict[str, Any]:
        span = {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 2, "maxItems": 2}
        marked = {**TEXT_SCHEMA, "pattern": "<e1>.+</e1>.*<e2>.+</e2>|<e2>.+</e2>.*<e1>.+</e1>"}
        return {"anyOf": [marked, fields_schema(["text", "head", "tail"], {"head": span, "tail": span})]}

    def normalize(self, value: Any) -> RelationRequest:
        usage = (f"task {self.task.name!r} classifies the relation of two entities: "
                 "pass {'text': ..., 'head': [start, end], 'tail': [start, end]} (character offsets, end exclusive) "
                 "or a text marked with <e1>...</e1> and <e2>...</e2>")
        if isinstance(value, str):
            try:
                request = parse_marked(value)
            except InputError as exc:
                raise InputError(f"{usage}; {exc}") from None
        elif isinstance(value, dict) and set(value) == {"text", "head", "tail"} and isinstance(value["text"], str):
            spans = [value[k] for k in ("head", "tail")]
            if not all(isinstance(s, (list, tuple))  # 1.5 or True is no offset
                       and all(isinstance(i, Integral) and not isinstance(i, bool) for i in s) for s in spans):
                raise InputError(f"{usage}; head and tail must be [start, end] pairs of integers.")
            head_span, tail_span = (tuple(int(i) for i in s) for s in spans)
            if len(head_span) != 2 or len(tail_span) != 2:
                raise InputError(f"{usage}; head and tail must be [start, end] pairs.")
            request = RelationRequest(value["text"], head_span, tail_span)
        else:
            raise InputError(f"{usage}; got {type(value).__name__ if value is not None else 'None'}.")
        text, n = request.text, len(request.text)
        for name, (start, end) in (("head", request.head), ("tail", request.tail)):
            if not 0 <= start < end <= n or not text[start:end].strip():
                raise InputError(f"{usage}; the {name} span {start}-{end} is empty or outside the text (length {n}).")
            self.check_readable(text[start:end], f"the {name} span {start}-{end}")
        if request.head == request.tail:
            raise InputError(f"{usage}; head and tail are the same span: a relation needs two entities.")
        if request.head[0] < request.tail[1] and request.tail[0] < request.head[1]:
            raise InputError(f"{usage}; head and tail overlap.")
        return request

    def _marked(self, request: RelationRequest) -> tuple[str, list[int]]:
        """The text with markers (or not), and the character positions of [head first, head last, tail first,
        tail last]."""
        if self.head.config.method != "markers":  # pooled and position read the plain text
            return request.text, [request.head[0], request.head[1] - 1, request.tail[0], request.tail[1] - 1]
        pieces, positions, cursor = [], {}, 0
        entities = (("head", request.head, HEAD_MARK), ("tail", request.tail, TAIL_MARK))
        for name, (start, end), mark in sorted(entities, key=lambda x: x[1]):
            pieces.append(request.text[cursor:start])
            opening = sum(map(len, pieces))
            pieces.append(f"{mark} {request.text[start:end]} {mark}")
            positions[name] = (opening, sum(map(len, pieces)) - 1)
            cursor = end
        pieces.append(request.text[cursor:])
        return "".join(pieces), [*positions["head"], *positions["tail"]]

    def encode(self, requests: Sequence[RelationRequest]) -> list[list[Row]]:
        prefix, suffix = self.specials
        budget = self.max_length - len(prefix) - len(suffix)
        rows = []
        for request in requests:
            text, chars = self._marked(request)
            # windowed below
            encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
            offsets = encoded["offset_mapping"]
            tokens = self._entity_tokens(offsets, chars)
            first, last = min(tokens), max(tokens)
            if last - first + 1 > budget:
                raise InputError(f"task {self.task.name!r}: head and tail are {last - first + 1} tokens apart; "
                                 f"the backbone reads {budget} at a time. Give a shorter text around them.")
            start = max(0, min(first, len(offsets) - budget))  # a window holding both entities
            ids = encoded["input_ids"][start:start + budget]
            input_ids = prefix + ids + suffix
            entity_tokens = [len(prefix) + t - start for t in tokens]
            rows.append([Row(input_ids, [0] * len(input_ids), {ENTITY_TOKENS.name: entity_tokens},
                             truncated=len(ids) < len(encoded["input_ids"]))])
        return rows

    @staticmethod
    def _entity_tokens(offsets: list[tuple[int, int]], chars: list[int]) -> list[int]:
        """Token indices of [head first, head last, tail first, tail last] characters: a first character maps to the
        first token ending after it, a last one to the last token starting at or before it, so a character the
        tokenizer dropped (zero-width, control) still maps into its entity."""
        starts, ends = [s for s, _ in offsets], [e for _, e in offsets]
        first = [bisect.bisect_right(ends, c) for c in chars[0::2]]
        last = [bisect.bisect_right(starts, c) - 1 for c in chars[1::2]]
        return [first[0], last[0], first[1], last[1]]


class RelationExamples(ExampleCodec):
    """Examples with `text`, `head` and `tail` character spans, and the relation `label`."""

    def features(self, example: dict[str, Any]) -> list[dict[str, Any]]:
        row = self.codec.encode([self.codec.normalize(self.request(example))])[0][0]
        return [{"input_ids": row.input_ids, "token_type_ids": row.token_type_ids, **row.extras,
                 "labels": self.head.targets([example["label"]])[0].item()}]

    def request(self, example: dict[str, Any]) -> dict[str, Any]:
        return {"text": example["text"], "head": list(example["head"]), "tail": list(example["tail"])}

    def prediction(self, result: dict[str, Any]) -> str:
        return result["label"]

    def reference(self, example: dict[str, Any]) -> str:
        return example["label"]
