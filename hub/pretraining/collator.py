"""Texts into masked training batches: tokenized once, each token's word found (jieba for Chinese text, WordPiece
continuations otherwise), masked by one objective, padded; with the span boundary objective's targets for spans."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from heads.codec import pad_lists

from ..text_checks import check_text
from .masking import IGNORED, Masked, Masker, is_chinese, jieba_spans, segmented_words, wordpiece_words
from .sentence_pairs import SentencePair


@dataclass(frozen=True)
class EncodedText:
    input_ids: list[int]
    maskable: list[bool]  # not a special token
    words: list[int]  # each token's word index
    token_type_ids: list[int] | None = None  # a sentence pair's segments (next-sentence prediction)
    is_next: bool | None = None  # a sentence pair's label: its second sentence follows the first


def encode_text(tokenizer: PreTrainedTokenizerBase, text: str, max_length: int) -> EncodedText:
    """`text` tokenized (truncated to `max_length`), with which tokens may be masked and each token's word."""
    encoding = tokenizer(text, truncation=True, max_length=max_length, return_offsets_mapping=True,
                         return_special_tokens_mask=True)
    ids = encoding["input_ids"]
    words = token_words(tokenizer, text, ids, encoding["offset_mapping"])
    return EncodedText(ids, [not special for special in encoding["special_tokens_mask"]], words)


def token_words(tokenizer: PreTrainedTokenizerBase, text: str, ids: Sequence[int],
                offsets: Sequence[tuple[int, int]]) -> list[int]:
    """Each token's word index in `text`: jieba's words for Chinese text, WordPiece continuations otherwise."""
    if is_chinese(text):
        return segmented_words(offsets, jieba_spans(text))
    return wordpiece_words(tokenizer.convert_ids_to_tokens(list(ids)))


def encode_texts(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str],
                 max_length: int) -> tuple[list[EncodedText], int]:
    """Each text encoded once (`encode_text`), those with a token to mask kept; and how many were dropped (empty
    after tokenizing: blank, or only characters the tokenizer drops). A text no tokenizer can read (a lone
    surrogate, which JSON's escapes allow) is refused with InputError naming it."""
    for number, text in enumerate(texts, start=1):
        check_text(text, f"text {number} (of the corpus's non-blank texts, in order)")
    return _maskable([encode_text(tokenizer, text, max_length) for text in texts])


def _maskable(encoded: list[EncodedText]) -> tuple[list[EncodedText], int]:
    """The encoded texts with a token to mask, and how many had none."""
    kept = [item for item in encoded if any(item.maskable)]
    return kept, len(encoded) - len(kept)


def encode_pair(tokenizer: PreTrainedTokenizerBase, pair: SentencePair, max_length: int) -> EncodedText:
    """[CLS] first [SEP] second [SEP] (the longer cut first), with segments, its label and each token's word: words
    are found in each sentence on its own (jieba for Chinese), numbered on across the pair."""
    encoding = tokenizer(pair.first, pair.second, truncation="longest_first", max_length=max_length,
                         return_offsets_mapping=True, return_special_tokens_mask=True)
    ids, sequence = encoding["input_ids"], encoding.sequence_ids()
    words, numbered = [0] * len(ids), 0
    for segment, text in enumerate((pair.first, pair.second)):
        positions = [i for i, s in enumerate(sequence) if s == segment]
        local = token_words(tokenizer, text, [ids[i] for i in positions],
                            [encoding["offset_mapping"][i] for i in positions])
        for position, word in zip(positions, local):
            words[position] = numbered + word
        numbered += max(local, default=-1) + 1
    for position, segment in enumerate(sequence):
        if segment is None:  # special tokens: words of their own (never masked)
            words[position], numbered = numbered, numbered + 1
    return EncodedText(ids, [not special for special in encoding["special_tokens_mask"]], words,
                       encoding["token_type_ids"], pair.is_next)


def encode_pairs(tokenizer: PreTrainedTokenizerBase, pairs: Sequence[SentencePair],
                 max_length: int) -> tuple[list[EncodedText], int]:
    """`encode_texts` for next-sentence pairs: each pair encoded once, those with a token to mask kept."""
    for number, pair in enumerate(pairs, start=1):
        check_text((pair.first, pair.second), f"sentence pair {number}")
    return _maskable([encode_pair(tokenizer, pair, max_length) for pair in pairs])


class MaskingCollator:
    """Makes one batch of masked texts for `masker`'s objective (a Trainer's data collator over encoded texts:
    `encode_texts` once, masks drawn anew in every batch)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, masker: Masker):
        self.tokenizer, self.masker = tokenizer, masker

    def __call__(self, texts: Sequence[EncodedText]) -> dict[str, torch.Tensor]:
        """input_ids, attention_mask and labels (IGNORED but at the chosen tokens); for sentence pairs token_type_ids
        and next_sentence_label; for span masking also the span boundary targets: span_rows, span_left / span_right
        (the positions just outside each span), span_offsets (each token's place in its span) and span_labels (its
        original id)."""
        masked = [self.masker(text.input_ids, text.maskable, text.words) for text in texts]
        batch = {
            "input_ids": pad_lists([m.input_ids for m in masked], self.tokenizer.pad_token_id or 0),
            "attention_mask": pad_lists([[1] * len(m.input_ids) for m in masked], 0),
            "labels": pad_lists([m.labels for m in masked], IGNORED),
        }
        if self.masker.objective == "span":
            batch |= _boundary_targets(masked)
        if texts and texts[0].token_type_ids is not None:  # sentence pairs: segments and next-sentence labels
            batch["token_type_ids"] = pad_lists([text.token_type_ids or [] for text in texts], 0)
            batch["next_sentence_label"] = torch.tensor([int(bool(text.is_next)) for text in texts])
        return batch


def _boundary_targets(masked: list[Masked]) -> dict[str, torch.Tensor]:
    """Per masked token of every span: its row, the positions before and after its span, its offset, its id. A span
    never touches a text's ends: [CLS] and [SEP] are not maskable, so both boundaries exist."""
    rows, left, right, offsets, labels = [], [], [], [], []
    for row, text in enumerate(masked):
        for span in text.units:
            for position in span:
                rows.append(row)
                left.append(span[0] - 1)
                right.append(span[-1] + 1)
                offsets.append(position - span[0])
                labels.append(text.labels[position])
    return {name: torch.tensor(values, dtype=torch.long) for name, values in
            (("span_rows", rows), ("span_left", left), ("span_right", right), ("span_offsets", offsets),
             ("span_labels", labels))}
