"""GLUE / CLUE benchmark: the same run as `hub bench glue|clue` (see hub/bench.py), from a checkout.

    python benchmarks/glue_clue.py glue --max-train-examples 2000 --seed 42 --seed 43
    python benchmarks/glue_clue.py clue --task tnews --task afqmc --method lora --method full

Writes benchmarks/results/<suite>.{md,json,png} and <suite>.cells.jsonl (the resumable log).
"""

import sys

from hub.cli import main

if __name__ == "__main__":
    sys.argv = ["hub", "bench", *sys.argv[1:]]  # the table records the equivalent `hub bench` command
    main()
