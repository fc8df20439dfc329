"""Joint entity and relation extraction (SpERT): spans classified as entities, then every ordered pair of them
classified by relation type, in one head over the shared backbone pass."""

from ..kind import register_kind
from .codec import EntityRelationCodec, EntityRelationExamples
from .data import spert_examples, spert_types
from .head import EntityRelationHead

register_kind(name="entity_relation", head=EntityRelationHead, codec=EntityRelationCodec,
              examples=EntityRelationExamples, read_examples=spert_examples, default_metric="joint_f1",
              read_types=spert_types)
