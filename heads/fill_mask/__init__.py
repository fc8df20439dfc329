"""Fill-mask: each [MASK] of a text answered with the vocabulary's most likely tokens, by the masked-LM head
`hub pretrain` trains beside a domain adapter."""

from ..kind import register_kind
from .codec import FillMaskCodec, FillMaskExamples, fill_mask_examples
from .head import FillMaskHead

register_kind(name="fill_mask", head=FillMaskHead, codec=FillMaskCodec, examples=FillMaskExamples,
              read_examples=fill_mask_examples, default_metric="accuracy", pipeline_tag="fill-mask")
