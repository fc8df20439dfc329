"""(IA)3's options in registry.yaml (`train.adapter: {method: ia3}`) and the PEFT config they train with."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from ..base import AdapterOptions

if TYPE_CHECKING:
    from peft import IA3Config

# The paper's placement on a BERT layer: keys and values scaled at their output, the feed-forward activation scaled
# at the input of the second feed-forward layer. PEFT's BERT default ("output.dense") also matches the attention's
# output projection, which the paper leaves alone, so the default is spelled as regular expressions.
PAPER_TARGETS = r".*\.layer\.\d+\.(attention\.self\.(key|value)|output\.dense)"
PAPER_FEEDFORWARD = r".*\.layer\.\d+\.output\.dense"


class IA3Options(AdapterOptions):
    method: Literal["ia3"] = "ia3"
    target_modules: list[str] | str = PAPER_TARGETS  # module names (suffixes) or one regular expression, as PEFT's
    feedforward_modules: list[str] | str = PAPER_FEEDFORWARD  # of those, the ones scaled at their input


def ia3_peft_config(options: IA3Options) -> IA3Config:
    from peft import IA3Config  # imported by training only: it takes seconds

    return IA3Config(target_modules=options.target_modules, feedforward_modules=options.feedforward_modules,
                     exclude_modules=["pooler.dense"])
