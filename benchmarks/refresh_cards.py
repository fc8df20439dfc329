"""Re-render every trained adapter's card (README.md) from what the card records (dev metrics, sizes, recipe,
reproduce command) and the task's current registry entry, without retraining: new card fields (Hub data
sets, serving fields) for adapters trained before they existed. Only README.md files are written.

    python benchmarks/refresh_cards.py                    # the shipped registry's adapters
    python benchmarks/refresh_cards.py --registry my.yaml
"""

from __future__ import annotations

import argparse
from pathlib import Path

import hub
from hub.atomic import atomic_file
from hub.card import rebuild_card
from hub.registry import load_registry


def refresh(registry_path: Path) -> list[str]:
    """Rewrite the card of each task whose adapter folder has one; returns the tasks whose card changed."""
    registry = load_registry(registry_path)
    changed = []
    for task in registry.tasks:
        card_file = registry.adapter_dir(task) / "README.md"
        if not card_file.is_file():
            continue
        text = rebuild_card(card_file.parent, task, registry.backbone(task.backbone))
        if text != card_file.read_text(encoding="utf-8"):
            with atomic_file(card_file) as staging:
                staging.write_text(text, encoding="utf-8")
            changed.append(task.name)
    return changed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", type=Path, default=hub.default_registry_path())
    changed = refresh(parser.parse_args().registry)
    print(f"rewrote {len(changed)} card(s): {', '.join(changed) or 'none'}")


if __name__ == "__main__":
    main()
