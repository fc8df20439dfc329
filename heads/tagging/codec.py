"""Codec for sequence labelling: text (or pre-split tokens) -> words -> sub-word windows -> word tags
-> entities / words with character offsets.

Words: raw Chinese text is split into characters, other languages into the tokenizer's words (head
option `words`). Each word's tag is read from its first sub-word (or from every sub-word with
`label_all_subwords`; the word's tag is then rebuilt from its first and last sub-word). A sentence
longer than the backbone takes is cut into consecutive windows of whole words, so nothing is dropped.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import Any, cast

from hub.errors import InputError

from ..codec import TEXT_SCHEMA, Codec, ExampleCodec, Row, fields_schema
from .head import LABEL_POSITIONS, TaggingConfig, TaggingHead
from .schemes import Scheme, repair_tags, spans, subword_tags, tags_for_spans, without_overlaps, word_tag

_WORD = re.compile(r"\w+|[^\w\s]", re.UNICODE)
MULTI_CHAR_TOLERANCE = 0.05  # a character-split task's training tokens may hold this share of longer ones (numbers)
UNKNOWN_TOLERANCE = 0.2  # a word-split task's tokens may hold this share the vocabulary reads as unknown (rare scripts)
UNKNOWN_SAMPLE = 20_000  # tokens checked for it


@dataclass
class TaggingRequest:
    words: list[str]
    offsets: list[tuple[int, int]] | None  # character offsets into `text`; None for pre-split tokens
    text: str | None


class TaggingCodec(Codec):
    @property
    def _config(self) -> TaggingConfig:
        # span_ner's codec (a subclass) has a SpanConfig here and reads only its `words` through this
        return cast(TaggingConfig, self.head.config)

    @property
    def scheme(self) -> Scheme:
        assert isinstance(self.head, TaggingHead)  # span_ner's codec has its own scheme
        return self.head.scheme

    @property
    def all_subwords(self) -> bool:
        return self._config.label_all_subwords

    def splits_chars(self) -> bool:
        """Whether served text is split into characters (Chinese, or head.words: chars)."""
        mode = self._config.words
        return mode == "chars" or (mode == "auto" and self.language.lower().startswith(("zh", "ja")))

    @classmethod
    def input_schema(cls, inputs: list[str]) -> dict[str, Any]:
        tokens = {"type": "array", "items": TEXT_SCHEMA, "minItems": 1}
        return {"anyOf": [TEXT_SCHEMA, tokens, fields_schema(["text"]), fields_schema(["tokens"], {"tokens": tokens})]}

    def normalize(self, value: Any) -> TaggingRequest:
        usage = (f"task {self.task.name!r} reads a text: pass a non-empty string, a list of pre-split tokens, "
                 "or a dict with 'text' or 'tokens'")
        if isinstance(value, dict):
            if len(value) != 1 or not set(value) <= {"text", "tokens"}:
                raise InputError(f"{usage}; got keys {sorted(value)}.")
            value = next(iter(value.values()))
        if isinstance(value, str):
            if not value.strip():
                raise InputError(f"{usage}; got an empty or whitespace-only text.")
            words, offsets = self.words(value)
            return TaggingRequest(words, offsets, value)
        if isinstance(value, (list, tuple)):
            if not value:
                raise InputError(f"{usage}; got an empty token list.")
            for i, token in enumerate(value):
                if not isinstance(token, str) or not token.strip():
                    got = repr(token) if isinstance(token, str) else type(token).__name__
                    raise InputError(f"{usage}; token #{i} is {got}: every token must be a non-empty string.")
            return TaggingRequest(list(value), None, None)
        raise InputError(f"{usage}; got {'None' if value is None else type(value).__name__}.")

    def words(self, text: str) -> tuple[list[str], list[tuple[int, int]]]:
        if self.splits_chars():
            found = [(ch, (i, i + 1)) for i, ch in enumerate(text) if not ch.isspace()]
        else:
            backend = getattr(self.tokenizer, "backend_tokenizer", None)
            if backend is not None and backend.pre_tokenizer is not None:
                found = backend.pre_tokenizer.pre_tokenize_str(text)
            else:
                found = [(m.group(), m.span()) for m in _WORD.finditer(text)]
        return [w for w, _ in found], [(start, end) for _, (start, end) in found]

    def pieces(self, word_lists: Sequence[list[str]]) -> list[list[list[int]]]:
        """Sub-word ids of every word, per sentence."""
        # verbose=False: long texts are split into windows below, so the tokenizer's "too long" warning would be wrong
        encoded = self.tokenizer(list(word_lists), is_split_into_words=True, add_special_tokens=False,
                                 verbose=False)
        out = []
        for row, words in enumerate(word_lists):
            per_word: list[list[int]] = [[] for _ in words]
            for token_id, word in zip(encoded["input_ids"][row], encoded.word_ids(row)):
                if word is not None:
                    per_word[word].append(token_id)
            out.append(per_word)
        return out

    def windows(self, pieces: list[list[int]], keep_whole: Sequence[tuple[int, int]] = ()) -> list[tuple[int, int]]:
        """(first word, end word) of consecutive windows whose sub-words fit the backbone; none when no word has a
        sub-word (only control, zero-width, ... characters): there is nothing for the head to tag. A window does not
        end inside a `keep_whole` word range (first, end exclusive: training's gold entities) unless the range alone
        is longer than a window: it ends before the range instead."""
        if not any(pieces):
            return []
        budget = self.max_length - sum(map(len, self.specials))
        sizes = [min(len(word), budget) for word in pieces]
        inside = {i for first, end in keep_whole for i in range(first + 1, end)}
        windows, start, used = [], 0, 0
        for i, size in enumerate(sizes):
            if used + size > budget and i > start:
                cut = next((j for j in range(i, start, -1) if j not in inside), i)
                if sum(sizes[cut:i + 1]) > budget:  # the range does not fit a window: cut it where it overflows
                    cut = i
                windows.append((start, cut))
                start, used = cut, sum(sizes[cut:i])
            used += size
        windows.append((start, len(pieces)))
        return windows

    def window_row(self, pieces: list[list[int]], start: int, end: int) -> Row:
        """One window: special tokens around the words' sub-words; label positions per word (or sub-word)."""
        prefix, suffix = self.specials
        budget = self.max_length - len(prefix) - len(suffix)
        ids: list[int] = []
        positions: list[int] = []
        owners: list[int] = []
        truncated = False
        for word in range(start, end):
            word_pieces = pieces[word][: budget]
            truncated |= len(word_pieces) < len(pieces[word])
            taken = word_pieces if self.all_subwords else word_pieces[:1]
            positions.extend(len(prefix) + len(ids) + k for k in range(len(taken)))
            owners.extend([word] * len(taken))
            ids.extend(word_pieces)
        input_ids = prefix + ids + suffix
        return Row(input_ids, [0] * len(input_ids), {LABEL_POSITIONS.name: positions}, {"owners": owners}, truncated)

    def encode(self, requests: Sequence[TaggingRequest]) -> list[list[Row]]:
        all_pieces = self.pieces([r.words for r in requests])
        return [[self.window_row(pieces, s, e) for s, e in self.windows(pieces)] for pieces in all_pieces]

    def finish(self, request: TaggingRequest, rows: list[Row], decoded: list[dict[str, Any]]) -> dict[str, Any]:
        """Word tags and spans from the windows' positions. A word with no sub-word (zero-width or control
        characters, ...) never reaches the model: inside an entity it takes the entity's inside tag (it never
        splits one), elsewhere O; a text with none at all has no rows: every word O, nothing found."""
        seen = self._model_tags(rows, decoded)
        tagged = list(seen)  # spans are read over the words the model saw, then span the words between them too
        model_tags = [tag for tag, _ in seen.values()]
        found = [(tagged[s], tagged[e - 1] + 1, kind) for s, e, kind in spans(model_tags, self.scheme)]
        tags = ["O"] * len(request.words)
        for start, end, kind in found:
            tags[start:end] = [self._inside(kind)] * (end - start)
        for word, (tag, _) in seen.items():  # the model's own tag wherever it gave one
            tags[word] = tag
        result: dict[str, Any] = {"tokens": request.words, "tags": tags}
        result.update(self._spans(request, found, {word: score for word, (_, score) in seen.items()}))
        if any(row.truncated for row in rows):
            result["truncated"] = True
        return result

    def _model_tags(self, rows: list[Row], decoded: list[dict[str, Any]]) -> dict[int, tuple[str, float]]:
        """Word -> (tag, score) of the words the model tagged, in word order: the tag of its first sub-word, or with
        `label_all_subwords` the tag rebuilt from its first and last sub-word."""
        first: dict[int, tuple[str, float]] = {}
        last: dict[int, str] = {}
        for row, result in zip(rows, decoded):
            for word, tag, score in zip(row.meta["owners"], result["tags"], result["scores"]):
                first.setdefault(word, (tag, score))
                last[word] = tag
        if not self.all_subwords:
            return first
        return {word: (word_tag(tag, last[word], self.scheme), score) for word, (tag, score) in first.items()}

    def _inside(self, kind: str) -> str:
        """The tag of a word inside a span of `kind` (I-PER; M-PER or M in BMES)."""
        return ("M" if self.scheme == "bmes" else "I") + (f"-{kind}" if kind else "")

    def place(self, request: TaggingRequest, start: int, end: int) -> dict[str, Any]:
        """Words start..end (exclusive) as text with character offsets; token indices for pre-split input."""
        if request.offsets is None:
            text = ("" if self.splits_chars() else " ").join(request.words[start:end])
            return {"text": text, "start": start, "end": end}
        assert request.text is not None  # offsets come with the text they point into
        first, last = request.offsets[start][0], request.offsets[end - 1][1]
        return {"text": request.text[first:last], "start": first, "end": last}

    def _spans(self, request: TaggingRequest, found: list[tuple[int, int, str]],
               scores: dict[int, float]) -> dict[str, Any]:
        """Entities (typed schemes), words (segmentation) or tagged words (plain), with offsets; a span's score is the
        mean of its tagged words' scores."""
        placed = [(kind, {**self.place(request, start, end), "score": self._mean(scores, start, end)})
                  for start, end, kind in found]
        output, labels = self._config.output, self._config.labels
        assert labels is not None  # a tagging head is built with its labels
        if output == "words" or (output == "auto" and (self.scheme == "plain" or "O" not in labels)):
            typed = any("-" in label for label in labels) or self.scheme == "plain"
            return {"words": [{"text": item["text"], **({"tag": kind} if typed else {}),
                               **{k: item[k] for k in ("start", "end", "score")}}
                              for kind, item in placed]}
        return {"entities": [{"text": item["text"], "label": kind, **{k: item[k] for k in ("start", "end", "score")}}
                             for kind, item in placed]}

    @staticmethod
    def _mean(scores: dict[int, float], start: int, end: int) -> float:
        """The mean score of the tagged words among start..end (a span always holds one)."""
        inside = [scores[word] for word in range(start, end) if word in scores]
        return round(sum(inside) / len(inside), 6)


class TaggingExamples(ExampleCodec):
    """Examples as `tokens` + word `tags`, or `text` + character `spans` (mapped onto the codec's words)."""

    codec: TaggingCodec

    def serving_mismatch(self, examples: Sequence[dict[str, Any]]) -> str | None:
        """Pre-split tokens that serving never produces: longer than one character where served text is split into
        characters (e.g. a CoNLL column whose characters carry a position digit), which would train the model on
        'character+digit' tokens and serve it bare characters; or, split into words, tokens the backbone's
        vocabulary mostly cannot read (the unknown token: a wrong column, another script or encoding)."""
        tokens = [token for example in examples for token in example.get("tokens") or []]
        if not self.codec.splits_chars():
            return self._unknown_tokens(tokens[:UNKNOWN_SAMPLE])
        long = [token for token in tokens if len(token) > 1]
        if not tokens or len(long) <= MULTI_CHAR_TOLERANCE * len(tokens):
            return None
        shown = ", ".join(repr(token) for token in list(dict.fromkeys(long))[:5])
        return (f"{len(long):,} of {len(tokens):,} training tokens ({len(long) / len(tokens):.0%}) are longer than one "
                f"character (e.g. {shown}), but this task splits served text into characters (head.words: chars, or "
                "auto for Chinese), so the model would learn tokens it is never served. If the token column carries "
                "more than the token (a suffix such as a position digit), keep the token with data.token_pattern, "
                "e.g. '^(.)' (the first group of a regular expression is the token); if the tokens are words, set "
                "head.words: tokenizer.")

    def _unknown_tokens(self, tokens: list[str]) -> str | None:
        unknown_id = self.codec.tokenizer.unk_token_id
        if not tokens or unknown_id is None:
            return None
        pieces = self.codec.tokenizer(tokens, add_special_tokens=False)["input_ids"]
        unknown = [token for token, ids in zip(tokens, pieces) if ids and all(i == unknown_id for i in ids)]
        if len(unknown) <= UNKNOWN_TOLERANCE * len(tokens):
            return None
        shown = ", ".join(repr(token) for token in list(dict.fromkeys(unknown))[:5])
        share = len(unknown) / len(tokens)
        return (f"{len(unknown):,} of {len(tokens):,} training tokens ({share:.0%}) are unknown to the backbone's "
                f"vocabulary (e.g. {shown}), so the model would learn from the unknown token alone. "
                "Check data.columns.tokens (the token column), the file's encoding, and that the backbone reads this "
                "language; clean a token column that carries more than the token with data.token_pattern.")

    def words_and_tags(self, example: dict[str, Any]) -> tuple[list[str], list[str]]:
        """A data-set example as words + word tags; character spans are mapped onto the codec's words."""
        if "tokens" in example:
            return example["tokens"], example["tags"]
        words, found = self.word_spans(example)
        # tags hold one entity per word: nested or overlapping annotations keep the longest (span_ner keeps all)
        return words, tags_for_spans(len(words), without_overlaps(found), self.codec.scheme)

    def word_spans(self, example: dict[str, Any]) -> tuple[list[str], list[tuple[int, int, str]]]:
        """The codec's words of a text example, and its character spans as (first word, end word exclusive, type)."""
        words, offsets = self.codec.words(example["text"])
        found = []
        for span in example["spans"]:
            inside = [i for i, (s, e) in enumerate(offsets) if s < span["end"] and e > span["start"]]
            if inside:
                found.append((inside[0], inside[-1] + 1, span["label"]))
        return words, found

    def features(self, example: dict[str, Any]) -> list[dict[str, Any]]:
        """Training rows (one per window) with the tag of every label position."""
        words, tags = self.words_and_tags(example)
        pieces = self.codec.pieces([words])[0]
        rows = []
        for start, end in self.codec.windows(pieces):
            row = self.codec.window_row(pieces, start, end)
            labels = [t for word, group in groupby(row.meta["owners"])
                      for t in subword_tags(tags[word], len(list(group)), self.codec.scheme)]
            labels = repair_tags(labels, self.codec.scheme)
            rows.append({"input_ids": row.input_ids, "token_type_ids": row.token_type_ids,
                         LABEL_POSITIONS.name: row.extras[LABEL_POSITIONS.name],
                         "labels": self.head.targets([labels])[0].tolist()})
        return rows

    def request(self, example: dict[str, Any]) -> list[str] | str:
        return example["tokens"] if "tokens" in example else example["text"]

    def prediction(self, result: dict[str, Any]) -> Any:  # tags here; span_ner's gives spans, entity_relation more
        return result["tags"]

    def reference(self, example: dict[str, Any]) -> Any:
        return self.words_and_tags(example)[1]
