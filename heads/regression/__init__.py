"""Regression of one text or a text pair (STS-B similarity): classification's pooled head, codec and data with one
number out."""

from ..classification.codec import TextCodec, TextExamples
from ..classification.data import text_examples
from ..kind import register_kind
from .head import RegressionHead

register_kind(name="regression", head=RegressionHead, codec=TextCodec, examples=TextExamples,
              read_examples=text_examples, default_metric="pearson_spearman", pipeline_tag="text-classification")
