"""Extractive question answering: the answer span in a context, over windows of a long context."""

from ..kind import register_kind
from .codec import QACodec, QAExamples
from .data import qa_examples
from .head import QAHead

register_kind(name="qa", head=QAHead, codec=QACodec, examples=QAExamples, read_examples=qa_examples,
              default_metric="squad")
