"""Whole-word answers for runs of adjacent masks in Chinese text: BERT's Chinese vocabulary is one token per
character, so "[MASK][MASK]" asks for a two-character word, and the per-mask candidates alone never say which
characters belong together. A word's score is the product of its characters' probabilities at their masks (each mask
scored on its own, in one pass); only words in jieba's dictionary are kept."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from functools import cache

MAX_RUN = 4  # longer runs: the candidate combinations grow as k ** length (and few words are longer)


@cache
def _dictionary() -> dict[str, int]:
    import jieba  # its dictionary loads in about a second, on the first Chinese run of masks

    jieba.dt.initialize()
    return jieba.dt.FREQ


def mask_runs(positions: Sequence[int]) -> list[list[int]]:
    """Indexes (into `positions`, token positions of the masks in order) of each run of 2 to MAX_RUN adjacent masks."""
    runs: list[list[int]] = []
    for index, position in enumerate(positions):
        if runs and positions[runs[-1][-1]] == position - 1:
            runs[-1].append(index)
        else:
            runs.append([index])
    return [run for run in runs if 2 <= len(run) <= MAX_RUN]


def whole_words(candidates: Sequence[Sequence[tuple[str, float]]], top_k: int) -> list[dict[str, float | str]]:
    """The `top_k` dictionary words spelled by one candidate per mask, best first (ties: the dictionary's more
    frequent word first)."""
    dictionary = _dictionary()
    words = []
    for combination in itertools.product(*candidates):
        word = "".join(token for token, _ in combination)
        if dictionary.get(word):  # jieba also lists word prefixes, with frequency 0
            score = 1.0
            for _, probability in combination:
                score *= probability
            words.append((score, dictionary[word], word))
    words.sort(reverse=True)
    return [{"word": word, "score": round(score, 6)} for score, _, word in words[:top_k]]
