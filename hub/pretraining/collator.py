"""Texts into masked training batches: tokenized, each token's word found (jieba for Chinese text, WordPiece
continuations otherwise), masked by one objective, padded; with the span boundary objective's targets for spans."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from .masking import IGNORED, Masked, Masker, is_chinese, jieba_spans, segmented_words, wordpiece_words


@dataclass(frozen=True)
class EncodedText:
    input_ids: list[int]
    maskable: list[bool]  # not a special token
    words: list[int]  # each token's word index


def encode_text(tokenizer: PreTrainedTokenizerBase, text: str, max_length: int) -> EncodedText:
    """`text` tokenized (truncated to `max_length`), with which tokens may be masked and each token's word."""
    encoding = tokenizer(text, truncation=True, max_length=max_length, return_offsets_mapping=True,
                         return_special_tokens_mask=True)
    ids = encoding["input_ids"]
    words = (segmented_words(encoding["offset_mapping"], jieba_spans(text)) if is_chinese(text)
             else wordpiece_words(tokenizer.convert_ids_to_tokens(ids)))
    return EncodedText(ids, [not special for special in encoding["special_tokens_mask"]], words)


def maskable_texts(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int) -> tuple[list[str], int]:
    """The texts with a token to mask, and how many were dropped (empty after tokenizing: blank, or only characters
    the tokenizer drops)."""
    kept = [text for text in texts if any(encode_text(tokenizer, text, max_length).maskable)]
    return kept, len(texts) - len(kept)


class MaskingCollator:
    """Makes one batch of masked texts for `masker`'s objective (a Trainer's data collator)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, masker: Masker, max_length: int = 128):
        self.tokenizer, self.masker, self.max_length = tokenizer, masker, max_length

    def __call__(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """input_ids, attention_mask and labels (IGNORED but at the chosen tokens); for span masking also the span
        boundary targets: span_rows, span_left / span_right (the positions just outside each span), span_offsets
        (each token's place in its span) and span_labels (its original id)."""
        masked = []
        for text in texts:
            encoded = encode_text(self.tokenizer, text, self.max_length)
            masked.append(self.masker(encoded.input_ids, encoded.maskable, encoded.words))
        width = max(len(m.input_ids) for m in masked)
        pad = self.tokenizer.pad_token_id or 0
        batch = {
            "input_ids": torch.tensor([m.input_ids + [pad] * (width - len(m.input_ids)) for m in masked]),
            "attention_mask": torch.tensor([[1] * len(m.input_ids) + [0] * (width - len(m.input_ids)) for m in masked]),
            "labels": torch.tensor([m.labels + [IGNORED] * (width - len(m.labels)) for m in masked]),
        }
        if self.masker.objective == "span":
            batch |= _boundary_targets(masked)
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
