"""What a kind's data reader may return beside its examples: a row it leaves out, or a note on a row it kept, each
with the reason, which hub.data counts and `hub train` reports ("3 rows dropped (tail not in the text: 3)").
A reader then reads a whole file and says what it could not use, instead of failing on its first odd row."""

from __future__ import annotations

from typing import Any

SKIPPED = "_skipped"  # an "example" holding only this key is a row left out, for this reason
NOTED = "_noted"  # an example may carry this key: notes (a list) on how it was read, removed before training


def skipped(reason: str) -> dict[str, Any]:
    """The placeholder a reader returns for a row it leaves out."""
    return {SKIPPED: reason}
