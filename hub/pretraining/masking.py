"""What BERT-style pre-training hides from the model: token, whole-word and span masking, with the 80/10/10 rule.

Written here rather than taken from transformers' collators: DataCollatorForLanguageModeling draws its random
replacements uniformly over the vocabulary (BERT draws real tokens; here by the corpus's unigram frequencies), and
DataCollatorForWholeWordMask knows neither Chinese words nor SpanBERT's spans.

A text is masked by *units*: a token (MLM), a word (whole-word masking) or a span of whole words (span masking).
Units are chosen until `rate` of the text's maskable tokens are covered (never more: a unit that would overshoot is
skipped, as BERT's create_pretraining_data.py does), and each chosen unit is replaced as a whole: `[MASK]` with
probability `mask_share`, random tokens with `random_share`, kept otherwise (SpanBERT decides per span; a token unit
makes this BERT's per-token rule).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..cjk import is_cjk

Objective = Literal["mlm", "whole_word", "span"]
OBJECTIVES: tuple[Objective, ...] = ("mlm", "whole_word", "span")
IGNORED = -100  # the label of a token the loss skips (PyTorch's cross-entropy default)


@dataclass(frozen=True)
class MaskingOptions:
    """The literature's defaults: BERT's 15% and 80/10/10, SpanBERT's geometric spans (p = 0.2, at most 10 words)."""

    rate: float = 0.15
    mask_share: float = 0.8
    random_share: float = 0.1
    span_p: float = 0.2
    max_span_words: int = 10

    def __post_init__(self) -> None:
        if not 0 < self.rate < 1:
            raise ValueError(f"masking rate {self.rate} must be between 0 and 1 (BERT: 0.15)")
        if self.mask_share < 0 or self.random_share < 0 or self.mask_share + self.random_share > 1:
            raise ValueError(f"mask_share {self.mask_share} + random_share {self.random_share} must be shares "
                             "adding up to at most 1 (BERT: 0.8 and 0.1; the rest stay)")
        if not 0 < self.span_p <= 1 or self.max_span_words < 1:
            raise ValueError(f"span_p {self.span_p} must be in (0, 1] and max_span_words {self.max_span_words} at "
                             "least 1 (SpanBERT: 0.2 and 10)")


def wordpiece_words(tokens: Sequence[str]) -> list[int]:
    """Each token's word index: a WordPiece continuation (`##...`) belongs to the word before it."""
    words, current = [], -1
    for token in tokens:
        if not (token.startswith("##") and current >= 0):
            current += 1
        words.append(current)
    return words


def segmented_words(offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]) -> list[int]:
    """Each token's word index, from the character `offsets` of the tokens and the character `spans` of the words
    (a segmenter's, e.g. `jieba_spans`): a token belongs to the word its first character is in; a token outside
    every word (none, for a segmenter that covers the text) is a word of its own."""
    starts = [start for start, _ in spans]
    words, extra = [], len(spans)
    for start, end in offsets:
        index = int(np.searchsorted(starts, start, side="right")) - 1
        if index >= 0 and start < spans[index][1] and end > start:
            words.append(index)
        else:
            words.append(extra)
            extra += 1
    return words


def jieba_spans(text: str) -> list[tuple[int, int]]:
    """The character spans of jieba's words of `text` (Chinese word segmentation)."""
    import jieba  # imported on use: its dictionary loads in about a second

    spans, start = [], 0
    for word in jieba.cut(text):
        spans.append((start, start + len(word)))
        start += len(word)
    return spans


def is_chinese(text: str) -> bool:
    """Whether `text` is mostly CJK characters (whole-word masking then needs a segmenter: WordPiece splits every
    Chinese character into a word of its own)."""
    letters = [c for c in text if not c.isspace()]
    return bool(letters) and sum(map(is_cjk, letters)) * 2 >= len(letters)


class UnigramSampler:
    """Draws token ids by their frequency in a corpus (BERT's random replacement draws real tokens, not the
    vocabulary uniformly)."""

    def __init__(self, counts: np.ndarray):
        total = counts.sum()
        if total <= 0:
            raise ValueError("the corpus has no maskable token to draw random replacements from")
        self.probabilities = counts / total
        self._cumulative = np.cumsum(self.probabilities)

    @classmethod
    def from_corpus(cls, texts: Iterable[Sequence[int]], vocab_size: int, skip: Iterable[int]) -> UnigramSampler:
        """Counts over tokenized texts, leaving out the ids in `skip` (special tokens)."""
        counts = np.zeros(vocab_size, dtype=np.float64)
        for ids in texts:
            np.add.at(counts, np.asarray(ids, dtype=np.int64), 1)
        counts[list(skip)] = 0
        return cls(counts)

    def sample(self, count: int, rng: np.random.Generator) -> np.ndarray:
        draws = np.searchsorted(self._cumulative, rng.random(count) * self._cumulative[-1], side="right")
        return np.minimum(draws, len(self._cumulative) - 1)


def span_lengths(count: int, p: float, most: int, rng: np.random.Generator) -> np.ndarray:
    """SpanBERT's span lengths in words: geometric with success probability `p` (1, 2, ...), clipped at `most`."""
    return np.minimum(rng.geometric(p, size=count), most)


def _units(objective: Objective, maskable: Sequence[int], words: Sequence[int]) -> list[list[int]]:
    """The positions grouped as the objective masks them: one token, or the maskable tokens of one word."""
    if objective == "mlm":
        return [[position] for position in maskable]
    grouped: dict[int, list[int]] = {}
    for position in maskable:
        grouped.setdefault(words[position], []).append(position)
    return list(grouped.values())


def _choose_whole(units: list[list[int]], budget: int, rng: np.random.Generator) -> list[list[int]]:
    """Units in random order, each taken if it keeps the covered tokens within `budget`."""
    chosen, covered = [], 0
    for index in rng.permutation(len(units)):
        unit = units[index]
        if covered + len(unit) <= budget:
            chosen.append(unit)
            covered += len(unit)
        if covered == budget:
            break
    return chosen


def _choose_spans(words: list[list[int]], budget: int, options: MaskingOptions,
                  rng: np.random.Generator) -> list[list[int]]:
    """Spans of consecutive words (SpanBERT): a geometric length, a uniform start, whole words, none overlapping
    another, until `budget` tokens are covered or a bounded number of draws found no more room."""
    taken = np.zeros(len(words), dtype=bool)
    chosen, covered = [], 0
    for _ in range(max(32, 8 * budget)):
        if covered >= budget:
            break
        length = min(int(span_lengths(1, options.span_p, options.max_span_words, rng)[0]), len(words))
        start = int(rng.integers(0, len(words) - length + 1))
        if taken[start:start + length].any():
            continue
        span = [position for word in words[start:start + length] for position in word]
        if covered + len(span) > budget:
            continue
        taken[start:start + length] = True
        chosen.append(span)
        covered += len(span)
    return chosen


@dataclass(frozen=True)
class Masked:
    """One masked text: the ids the model reads, the labels it is scored on (IGNORED elsewhere) and the chosen
    units (lists of positions), for tests and the span boundary objective."""

    input_ids: list[int]
    labels: list[int]
    units: list[list[int]]


class Masker:
    """Masks tokenized texts for one objective, reproducibly from `seed`."""

    def __init__(self, objective: Objective, mask_id: int, unigram: UnigramSampler,
                 options: MaskingOptions | None = None, seed: int = 0):
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown masking objective {objective!r}; use one of {', '.join(OBJECTIVES)}")
        self.objective, self.mask_id, self.unigram = objective, mask_id, unigram
        self.options = options or MaskingOptions()
        self.rng = np.random.default_rng(seed)

    def __call__(self, input_ids: Sequence[int], maskable: Sequence[bool],
                 words: Sequence[int] | None = None) -> Masked:
        """Mask `input_ids`. `maskable`: which positions may be chosen (not special tokens or padding). `words`:
        each position's word index (`wordpiece_words`, `segmented_words`); token masking needs none."""
        positions = [i for i, ok in enumerate(maskable) if ok]
        if not positions:
            raise ValueError("the text has no maskable token (only special tokens or padding)")
        if self.objective != "mlm" and words is None:
            raise ValueError(f"{self.objective} masking needs each token's word (words=...)")
        budget = max(1, round(self.options.rate * len(positions)))
        units = _units(self.objective, positions, words or [])
        chosen = (_choose_spans(units, budget, self.options, self.rng) if self.objective == "span"
                  else _choose_whole(units, budget, self.rng))
        ids, labels = list(input_ids), [IGNORED] * len(input_ids)
        for unit in chosen:
            draw = self.rng.random()
            replacement = ([self.mask_id] * len(unit) if draw < self.options.mask_share
                           else self.unigram.sample(len(unit), self.rng).tolist()
                           if draw < self.options.mask_share + self.options.random_share
                           else [input_ids[i] for i in unit])
            for position, new in zip(unit, replacement):
                labels[position] = input_ids[position]
                ids[position] = new
        return Masked(ids, labels, chosen)
