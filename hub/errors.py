"""The project's own exception types: every user-facing failure is one of these, with the fix in the message."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class HubError(Exception):
    """Base class of every error the hub raises on purpose."""


class RegistryError(HubError):
    """registry.yaml (or a user's registry) is malformed: names the file, entry, field and fix."""


class BackboneError(HubError):
    """A backbone cannot be found or loaded."""


class AdapterError(HubError):
    """An adapter folder is missing, broken, or does not fit its backbone/registry entry."""


class RemoteError(HubError):
    """Pushing to or pulling from the Hugging Face Hub failed, or what was pulled cannot be trusted."""


class InputError(HubError, ValueError):
    """A request's input has the wrong type or shape for its task."""


class RequestTooLargeError(InputError):
    """One request (or one of its items) would cause more work than the server allows."""


class DeadlineExceededError(HubError):
    """A request was not answered within its deadline; the work left for it was dropped."""


class ServiceUnavailableError(HubError):
    """The backend could not answer now (e.g. its Ray Serve replica died and retries failed); retry shortly."""


class TaskUnavailableError(AdapterError):
    """A task the registry names cannot be served (broken or missing adapter); the others still serve."""


class DataError(HubError):
    """A data file or data set cannot be read into the task's columns."""


class UnknownTaskError(HubError, KeyError):
    """A task name the registry does not serve."""

    def __init__(self, task: object, known: Iterable[str]):
        known = sorted(known)
        close = difflib.get_close_matches(str(task), known, n=3)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        if len(close) > 1:
            hint += f" (also close: {', '.join(map(repr, close[1:]))})"
        listing = (f"The registry serves {len(known)} task(s): `hub list` or GET /v1/tasks lists them." if known
                   else "The registry serves no tasks yet.")
        super().__init__(f"unknown task {str(task)[:80]!r}.{hint} {listing}")
        self.task = task
        self.known = known

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])
