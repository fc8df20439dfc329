"""Next-sentence prediction pairs: BERT's corpus layout (one sentence per line, documents separated by a blank line)
read into documents, and pairs drawn 50/50 as a sentence with the one after it or with a sentence of another
document."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SentencePair:
    first: str
    second: str
    is_next: bool  # `second` follows `first` in its document (else it comes from another document)


def read_documents(lines: Iterable[str]) -> list[list[str]]:
    """Documents as lists of sentences: a non-blank line is a sentence, a blank line ends a document."""
    documents: list[list[str]] = []
    current: list[str] = []
    for line in lines:
        sentence = line.strip()
        if sentence:
            current.append(sentence)
        elif current:
            documents.append(current)
            current = []
    if current:
        documents.append(current)
    return documents


def next_sentence_pairs(documents: list[list[str]], seed: int = 0, next_share: float = 0.5) -> list[SentencePair]:
    """One pair per sentence that has a next one in its document: with probability `next_share` that next sentence,
    otherwise a sentence drawn uniformly from the other documents' sentences."""
    if len(documents) < 2:
        raise ValueError(f"next-sentence prediction needs at least two documents (found {len(documents)}): separate "
                         "documents with a blank line, one sentence per line")
    if not any(len(document) > 1 for document in documents):
        raise ValueError("next-sentence prediction needs a document of two sentences or more: put each sentence on a "
                         "line of its own, documents separated by a blank line")
    rng = np.random.default_rng(seed)
    owners = np.repeat(np.arange(len(documents)), [len(document) for document in documents])
    sentences = [sentence for document in documents for sentence in document]
    pairs = []
    for index, document in enumerate(documents):
        others = np.flatnonzero(owners != index)
        for position in range(len(document) - 1):
            if rng.random() < next_share:
                pairs.append(SentencePair(document[position], document[position + 1], True))
            else:
                pairs.append(SentencePair(document[position], sentences[int(rng.choice(others))], False))
    return pairs
