"""Bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2020): a small down-projection, non-linearity and
up-projection with a residual, after a layer's sub-layer output. Per row: one batched matmul pair per layer."""

from ..base import register_method
from .options import BottleneckOptions
from .serving import BatchedBottleneck
from .training import PEFT_TYPE, BottleneckTraining
from .weights import load_bottleneck

register_method(name="bottleneck", peft_type=PEFT_TYPE, options=BottleneckOptions, load=load_bottleneck,
                row_hook=BatchedBottleneck, training=BottleneckTraining(), title="Bottleneck adapter")
