"""The one record of a task kind: its head, its codecs, how its data examples are read, its metric and card tag.

Every part of the hub that depends on a kind looks it up here (registry validation, serving, training,
data loading, the card, the HTTP schema). A kind registers once, from its own folder's `__init__.py`:

    register_kind(name="qa", head=QAHead, codec=QACodec, examples=QAExamples, read_examples=qa_examples,
                  default_metric="squad")

and `heads/__init__.py` imports every folder under `heads/`, so a new kind is one new folder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .base import Head, HeadOptions
from .codec import Codec, ExampleCodec

if TYPE_CHECKING:
    from hub.registry import TaskSpec

ReadExamples = Callable[[list[Any], "TaskSpec", str], list[dict[str, Any]]]
ReadTypes = Callable[[Path, "TaskSpec"], dict[str, Any]]


class KindError(TypeError):
    """A task kind registered without a part, or with a part of the wrong type."""


@dataclass(frozen=True)
class TaskKind:
    """Everything the hub knows about one kind of task."""

    name: str
    head: type[Head]  # the head's class; its `options_class` is what registry.yaml's `head:` may set
    codec: type[Codec]  # serving: request -> rows -> result
    examples: type[ExampleCodec]  # training and evaluation: data-set example -> labelled rows, request, reference
    read_examples: ReadExamples  # raw rows of a data file -> the examples `examples` reads
    default_metric: str  # a name in hub.metrics.METRICS
    pipeline_tag: str | None = None  # the Hub card's pipeline tag
    read_types: ReadTypes | None = None  # the data's types file (`data.types`) -> head options; checks the task

    @property
    def options(self) -> type[HeadOptions]:
        return self.head.options_class


KINDS: dict[str, TaskKind] = {}

_PARTS: dict[str, tuple[type | None, str]] = {
    "head": (Head, "its head class (a heads.base.Head subclass)"),
    "codec": (Codec, "its serving codec (a heads.codec.Codec subclass)"),
    "examples": (ExampleCodec, "its training/evaluation codec (a heads.codec.ExampleCodec subclass)"),
    "read_examples": (None, "its data reader (raw rows, task, source -> examples)"),
    "default_metric": (None, "its default metric (a name in hub.metrics.METRICS)"),
}


def register_kind(*, name: str, head: type[Head] | None = None, codec: type[Codec] | None = None,
                  examples: type[ExampleCodec] | None = None, read_examples: ReadExamples | None = None,
                  default_metric: str | None = None, pipeline_tag: str | None = None,
                  read_types: ReadTypes | None = None) -> TaskKind:
    """Add a kind to KINDS; a missing or mistyped part is refused here, naming the part."""
    from hub.metrics import METRICS  # scikit-learn and scipy: only once a kind registers

    given: dict[str, Any] = {"head": head, "codec": codec, "examples": examples, "read_examples": read_examples,
                             "default_metric": default_metric}
    for part, (base, what) in _PARTS.items():
        value = given[part]
        if value is None:
            raise KindError(f"task kind {name!r} lacks {what}: pass {part}= to register_kind.")
        if base is not None and not (isinstance(value, type) and issubclass(value, base)):
            raise KindError(f"task kind {name!r}: {part}={value!r} is not {what}.")
    if not callable(read_examples):
        raise KindError(f"task kind {name!r}: read_examples={read_examples!r} is not callable.")
    if default_metric not in METRICS:
        raise KindError(
            f"task kind {name!r}: default_metric {default_metric!r} is not one of {', '.join(sorted(METRICS))}.")
    assert (head is not None and codec is not None and examples is not None
            and read_examples is not None)  # checked above
    if getattr(head, "kind", None) != name:
        raise KindError(
            f"task kind {name!r}: its head class {head.__name__} says kind {getattr(head, 'kind', None)!r}.")
    if name in KINDS:
        raise KindError(
            f"task kind {name!r} is registered twice ({KINDS[name].head.__module__} and {head.__module__}).")
    if read_types is not None and not callable(read_types):
        raise KindError(f"task kind {name!r}: read_types={read_types!r} is not callable.")
    record = TaskKind(name, head, codec, examples, read_examples, str(default_metric), pipeline_tag, read_types)
    KINDS[name] = record
    return record


def kind(name: str) -> TaskKind:
    """The record of kind `name`; KindError names the known kinds."""
    found = KINDS.get(name)
    if found is None:
        raise KindError(f"unknown kind {name!r}; use one of: {', '.join(sorted(KINDS))}")
    return found
