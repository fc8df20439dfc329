"""LoRA (Hu et al. 2021), served per row: the matrices of every row's own adapter in one backbone pass."""

from ..base import PeftTraining, register_method
from .config import load_lora
from .quantize import STORAGE_DTYPES, quantize_lora_folder, reduce_lora_rank
from .serving import BatchedLora
from .training import LoraOptions, lora_peft_config

register_method(name="lora", peft_type="LORA", options=LoraOptions, load=load_lora, row_hook=BatchedLora,
                training=PeftTraining(lora_peft_config), title="LoRA", store=quantize_lora_folder,
                storage_dtypes=STORAGE_DTYPES, reduce_rank=reduce_lora_rank)
