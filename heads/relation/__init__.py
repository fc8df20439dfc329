"""Relation classification between a head and a tail entity of one text (entity markers or pooled entities)."""

from ..kind import register_kind
from .codec import RelationCodec, RelationExamples
from .data import relation_examples
from .head import RelationHead

register_kind(name="relation", head=RelationHead, codec=RelationCodec, examples=RelationExamples,
              read_examples=relation_examples, default_metric="semeval_macro_f1")
