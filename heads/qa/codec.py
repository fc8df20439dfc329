"""Codec for extractive QA: {question, context} -> windows over the context (with a stride) -> the
best span over all windows, as text and character offsets into the context."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hub.errors import InputError

from ..codec import Codec, ExampleCodec, Row, pair_schema
from .head import CONTEXT_MASK, QAHead


@dataclass
class QARequest:
    question: str
    context: str


class QACodec(Codec):
    head: QAHead

    @classmethod
    def input_schema(cls, inputs: list[str]) -> dict[str, Any]:
        return {"anyOf": pair_schema(["question", "context"])}

    def normalize(self, value: Any) -> QARequest:
        usage = (f"task {self.task.name!r} answers a question from a context: "
                 "pass {'question': ..., 'context': ...} or a (question, context) tuple")
        if isinstance(value, dict):
            if set(value) != {"question", "context"}:
                raise InputError(f"{usage}; got keys {sorted(value)}.")
            value = (value["question"], value["context"])
        if not isinstance(value, tuple) or len(value) != 2:
            raise InputError(f"{usage}; got {'None' if value is None else type(value).__name__}.")
        for name, text in zip(("question", "context"), value):
            if not isinstance(text, str) or not text.strip():
                raise InputError(f"{usage}; the {name} is empty or not a string.")
            self.check_readable(text, f"the {name}")
        self._check_question_fits(value[0])
        return QARequest(*value)

    def _check_question_fits(self, question: str) -> None:
        """A window holds the question, the special tokens and more than `doc_stride` context tokens (the fast
        tokenizer panics, a BaseException, when it cannot)."""
        room = self.max_length - self.tokenizer.num_special_tokens_to_add(pair=True) - self.head.config.doc_stride - 1
        size = len(self.tokenizer(question, add_special_tokens=False, verbose=False)["input_ids"])
        if size > room:
            raise InputError(f"task {self.task.name!r}: the question is {size} tokens; with {self.max_length}-token "
                             f"windows sharing {self.head.config.doc_stride} context tokens it may be at most {room}. "
                             "Shorten it.")

    def encode(self, requests: Sequence[QARequest]) -> list[list[Row]]:
        """Windows of `max_length` tokens over each context, consecutive windows sharing `doc_stride` tokens."""
        if not requests:
            return []
        encoded = self.tokenizer(  # normalize made sure every question leaves room for context
            [r.question for r in requests], [r.context for r in requests], truncation="only_second",
            max_length=self.max_length, stride=self.head.config.doc_stride, return_overflowing_tokens=True,
            return_offsets_mapping=True, verbose=False,
        )
        rows: list[list[Row]] = [[] for _ in requests]
        for window, request in enumerate(encoded["overflow_to_sample_mapping"]):
            sequence = encoded.sequence_ids(window)
            offsets = [tuple(o) if s == 1 else None for o, s in zip(encoded["offset_mapping"][window], sequence)]
            context_mask = [int(s == 1) for s in sequence]
            if not any(context_mask):
                raise InputError(f"task {self.task.name!r}: the question fills the whole {self.max_length}-token "
                                 "window; shorten it.")
            rows[request].append(Row(encoded["input_ids"][window], encoded["token_type_ids"][window],
                                     {CONTEXT_MASK.name: context_mask}, {"offsets": offsets}))
        return rows

    def finish(self, request: QARequest, rows: list[Row], decoded: list[dict[str, Any]]) -> dict[str, Any]:
        best = None
        for row, result in zip(rows, decoded):
            for start, end, score in result["spans"][:1]:
                if best is None or score > best[2]:
                    best = (row.meta["offsets"][start][0], row.meta["offsets"][end][1], score)
        no_answer = max(result["no_answer"] for result in decoded)
        if best is None or (self.head.config.allow_no_answer and no_answer > best[2]):
            return {"answer": None, "start": None, "end": None, "score": round(no_answer, 6), "windows": len(rows)}
        start, end, score = best
        return {"answer": request.context[start:end], "start": start, "end": end, "score": round(score, 6),
                "windows": len(rows)}


class QAExamples(ExampleCodec):
    """SQuAD-style examples: `question`, `context`, `answers` {text, answer_start}."""

    def features(self, example: dict[str, Any]) -> list[dict[str, Any]]:
        """Every window of a training question, labelled with the first answer's tokens or (0, 0) when outside."""
        request = QARequest(example["question"], example["context"])
        answers = example["answers"]
        located = [(s, s + len(t)) for t, s in zip(answers["text"], answers["answer_start"]) if s >= 0]
        if answers["text"] and not located:
            return []  # its answers are not in the context: nothing to learn from (still a dev question)
        span = located[0] if located else None
        out = []
        for row in self.codec.encode([request])[0]:
            label = (0, 0)
            if span is not None:
                offsets = row.meta["offsets"]
                inside = [i for i, o in enumerate(offsets) if o is not None and o[0] < span[1] and o[1] > span[0]]
                if inside and offsets[inside[0]][0] <= span[0] and offsets[inside[-1]][1] >= span[1]:
                    label = (inside[0], inside[-1])
            out.append({"input_ids": row.input_ids, "token_type_ids": row.token_type_ids, **row.extras,
                        "labels": self.head.targets([label])[0].tolist()})
        return out

    def request(self, example: dict[str, Any]) -> tuple[str, str]:
        return (example["question"], example["context"])

    def prediction(self, result: dict[str, Any]) -> str:
        return result["answer"] or ""

    def reference(self, example: dict[str, Any]) -> list[str]:
        return list(example["answers"]["text"]) or [""]
