"""Span-based NER (SpERT's entity part): every span up to a width is classified, so nested entities are found."""

from ..kind import register_kind
from ..tagging.data import tagging_examples
from .codec import SpanCodec, SpanExamples
from .head import SpanNERHead

register_kind(name="span_ner", head=SpanNERHead, codec=SpanCodec, examples=SpanExamples,
              read_examples=tagging_examples, default_metric="span_f1")
