"""Sequence labelling (NER, POS, word segmentation): a tag per word, by softmax or a constrained CRF."""

from ..kind import register_kind
from .codec import TaggingCodec, TaggingExamples
from .data import tagging_examples
from .head import TaggingHead

register_kind(name="tagging", head=TaggingHead, codec=TaggingCodec, examples=TaggingExamples,
              read_examples=tagging_examples, default_metric="entity_f1")
