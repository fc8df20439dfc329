"""Codecs: request <-> backbone rows <-> result, one per head kind (see base.Codec)."""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

from heads import Head
from ..registry import TaskSpec
from .base import Codec, Row, backbone_batch, head_features, model_inputs, pad_lists
from .qa import QACodec
from .relation import RelationCodec
from .span_ner import SpanCodec
from .tagging import TaggingCodec
from .text import TextCodec

CODECS: dict[str, type[Codec]] = {
    "classification": TextCodec, "regression": TextCodec, "tagging": TaggingCodec, "qa": QACodec, "relation": RelationCodec,
    "span_ner": SpanCodec,
}


def make_codec(task: TaskSpec, head: Head, tokenizer: PreTrainedTokenizerBase, max_length: int, language: str) -> Codec:
    return CODECS[task.kind](task, head, tokenizer, max_length, language)


__all__ = ["CODECS", "Codec", "Row", "backbone_batch", "head_features", "make_codec", "model_inputs", "pad_lists"]
