"""VeRA (Kopiczko et al. 2024): one frozen random pair of matrices shared by every adapter of a backbone (regenerated
from its seed), plus two small vectors per layer and task. Per row: one shared matmul, then per-row scaling."""

from ..base import PeftTraining, register_method
from .serving import BatchedVera
from .training import VeraOptions, vera_peft_config
from .weights import load_vera

register_method(name="vera", peft_type="VERA", options=VeraOptions, load=load_vera, row_hook=BatchedVera,
                training=PeftTraining(vera_peft_config), title="VeRA")
