"""What the web page (hub/web) shows beyond `Hub.tasks()`: each task's dev metrics from its card, the backbones'
sizes on disk, and one task's registry entry with its model card rendered to HTML. Read from files only: nothing is
loaded into memory to answer these."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard
from markdown_it import MarkdownIt

from .adapter_folder import AdapterFolder
from .backbone import resolve_source
from .card import card_metrics
from .errors import BackboneError, HubError
from .service import Hub

WEIGHT_FILES = ("*.safetensors", "*.bin")
# CommonMark with tables; raw HTML in a card is shown as text, never rendered (a card may come from the Hub)
_MARKDOWN = MarkdownIt("commonmark", {"html": False}).enable("table")


def task_metrics(hub: Hub, task: str) -> dict[str, float]:
    """The dev metrics its card records ({} when untrained or without a readable card)."""
    card = hub.registry.adapter_dir(hub.registry.task(task)) / AdapterFolder.CARD
    return dict(_card_metrics(card, _mtime(card)))


def backbone_sizes(hub: Hub) -> dict[str, dict[str, Any]]:
    """Each backbone's language and weight bytes on disk (None for a Hub id not downloaded here)."""
    sizes = {}
    for spec in hub.registry.backbones:
        try:
            folder = Path(resolve_source(spec, hub.registry))
            found = [f for pattern in WEIGHT_FILES for f in folder.glob(pattern)] if folder.is_dir() else []
            weights = sum(f.stat().st_size for f in found if "safetensors" in f.name) or sum(
                f.stat().st_size for f in found) or None  # one format's files: a folder may hold both
        except BackboneError:
            weights = None
        sizes[spec.name] = {"language": spec.language, "bytes": weights}
    return sizes


def describe_task(hub: Hub, task: str, loaded: bool, root: Path) -> dict[str, Any]:
    """The task's registry entry, language, state, and its model card as HTML (None when untrained)."""
    spec = hub.registry.task(task)  # UnknownTaskError names the close ones
    card = hub.registry.adapter_dir(spec) / AdapterFolder.CARD
    problems = hub.unavailable()
    return {"entry": spec.model_dump(mode="json", exclude_defaults=True) | {"kind": spec.kind, "inputs": spec.inputs},
            "language": hub.registry.backbone(spec.backbone).language, "loaded": loaded,
            "trained": card.parent.is_dir(), "dev_metrics": task_metrics(hub, task),
            "card_html": _card_html(card, _mtime(card), str(root)) if card.is_file() else None,
            **({"unavailable": _public(problems[task], root)} if task in problems else {})}


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


@lru_cache(maxsize=4096)  # keyed by the card's modification time: a retrained task's card is read again
def _card_metrics(card: Path, mtime: float) -> tuple[tuple[str, float], ...]:
    if not mtime:
        return ()
    try:
        return tuple(card_metrics(card.parent).items())
    except (OSError, ValueError, HubError):
        return ()


@lru_cache(maxsize=256)
def _card_html(card: Path, mtime: float, root: str) -> str | None:
    try:
        text = ModelCard.load(card).text  # the markdown without its YAML metadata
    except (OSError, ValueError):
        return None
    return _MARKDOWN.render(_public(text, Path(root)))


def _public(text: str, root: Path) -> str:
    """Without server paths, as every answer of the server (the page is public where the API is)."""
    from .server import public_message  # the server imports this module

    return public_message(text, root)
