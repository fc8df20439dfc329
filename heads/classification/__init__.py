"""Classification of one text or a text pair (sentiment, topic, NLI, paraphrase): a pooled vector -> a label."""

from ..kind import register_kind
from .codec import TextCodec, TextExamples
from .data import text_examples
from .head import ClassificationHead

register_kind(name="classification", head=ClassificationHead, codec=TextCodec, examples=TextExamples,
              read_examples=text_examples, default_metric="accuracy", pipeline_tag="text-classification")
