"""Next-sentence prediction pairs (hub/pretraining/sentence_pairs.py): documents read from BERT's corpus layout, pairs
drawn 50/50, each "next" pair consecutive in its document and each other pair crossing documents."""

from __future__ import annotations

import pytest

from hub.pretraining.sentence_pairs import next_sentence_pairs, read_documents

CORPUS = """\
Doc one, first sentence.
Doc one, second sentence.
Doc one, third sentence.

Doc two, first sentence.
Doc two, second sentence.


Doc three, a single sentence.
"""


def test_documents_are_blank_line_separated_and_sentences_are_lines():
    documents = read_documents(CORPUS.splitlines())
    assert [len(document) for document in documents] == [3, 2, 1]
    assert documents[1][0] == "Doc two, first sentence."
    assert read_documents(["  one  ", "", "", "two"]) == [["one"], ["two"]]  # stripped; repeated blanks end one


def test_pairs_are_half_next_half_from_another_document():
    documents = [[f"d{d} s{s}" for s in range(20)] for d in range(30)]
    owner = {sentence: d for d, document in enumerate(documents) for sentence in document}
    pairs = next_sentence_pairs(documents, seed=0)
    assert len(pairs) == 30 * 19  # one per sentence with a next one
    for pair in pairs:
        d, s = owner[pair.first], documents[owner[pair.first]].index(pair.first)
        if pair.is_next:
            assert pair.second == documents[d][s + 1]
        else:
            assert owner[pair.second] != d
    share = sum(pair.is_next for pair in pairs) / len(pairs)
    assert abs(share - 0.5) < 0.05  # 570 pairs: 4 standard errors is 0.084
    again = next_sentence_pairs(documents, seed=0)
    assert again == pairs and next_sentence_pairs(documents, seed=1) != pairs


def test_corpora_nsp_cannot_use_are_refused_with_the_layout_to_use():
    with pytest.raises(ValueError, match="at least two documents .* blank line"):
        next_sentence_pairs(read_documents(["only one document", "of two lines"]))
    with pytest.raises(ValueError, match="two sentences or more"):
        next_sentence_pairs(read_documents(["one", "", "two", "", "three"]))
