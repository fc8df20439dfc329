"""`hub bench glue|clue`: LoRA vs full fine-tuning vs a linear probe, per task, on one training budget.

Every cell (task, method, seed) trains with the project's own trainer on the same examples, epochs and
batch size, is evaluated on dev through the serving router with the task's official metric (computed
by the `evaluate` library from the hub's local metric module), and is appended to a JSON-lines log as
soon as it ends, so a killed run picks up where it stopped. The table (markdown + JSON) and the plot
are rebuilt from that log after every cell.

Each method keeps its usual learning rate (LoRA: the task's recipe; full fine-tuning 5e-5 for backbone
and head, as in BERT's paper, or a head rate of its own; probe 5e-3); everything else in the budget is
shared. Method `registered` measures the adapter the registry already has (its own budget, recorded in
its card) on the same dev rows.
"""

from .cells import read_log, run_bench, run_cell
from .config import METHOD_NAMES, SUITES, BenchConfig, with_data_root
from .report import markdown, summarize, write_results

__all__ = ["BenchConfig", "METHOD_NAMES", "SUITES", "markdown", "read_log", "run_bench", "run_cell", "summarize",
           "with_data_root", "write_results"]
