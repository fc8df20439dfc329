"""(IA)3 (Liu et al. 2022): learned vectors that rescale keys, values and the feed-forward activations; per row it
is an elementwise scale, so a mixed batch costs almost nothing."""

from ..base import PeftTraining, register_method
from .serving import BatchedIA3
from .training import IA3Options, ia3_peft_config
from .weights import load_ia3

register_method(name="ia3", peft_type="IA3", options=IA3Options, load=load_ia3, row_hook=BatchedIA3,
                training=PeftTraining(ia3_peft_config), title="(IA)3")
