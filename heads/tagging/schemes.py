"""Tag schemes for sequence labelling: which tag may follow which, and tags <-> spans.

Schemes: `bio` (IOB2: B-X starts, I-X continues), `bioes` (plus E-X ends, S-X is a single word),
`bmes` (BIOES with M for the middle; tags may be untyped, as in word segmentation: B, M, E, S) and
`plain` (any tag may follow any: POS). `detect_scheme` picks one from the label names.
"""

from __future__ import annotations

from typing import Literal

import torch

Scheme = Literal["bio", "bioes", "bmes", "plain"]
SCHEMES: tuple[str, ...] = ("bio", "bioes", "bmes", "plain")
SCHEME_PREFIXES = {"bio": "BI", "bioes": "BIES", "bmes": "BMES"}


def split_tag(tag: str) -> tuple[str, str]:
    """'B-PER' -> ('B', 'PER'); 'B' -> ('B', ''); 'O' -> ('O', '')."""
    prefix, _, kind = tag.partition("-")
    return prefix, kind


def detect_scheme(labels: list[str]) -> Scheme:
    prefixes = {split_tag(tag)[0] for tag in labels} - {"O"}
    if prefixes and prefixes <= set("BMES"):
        return "bmes"
    if prefixes and prefixes <= set("BIES") and prefixes & set("ES"):
        return "bioes"
    if prefixes and prefixes <= set("BI"):
        return "bio"
    return "plain"


def check_labels(scheme: Scheme, labels: list[str]) -> None:
    """Raise ValueError naming the first label that is not a tag of `scheme`."""
    if scheme == "plain":
        return
    allowed = SCHEME_PREFIXES[scheme]
    for tag in labels:
        prefix, kind = split_tag(tag)
        if tag != "O" and (len(prefix) != 1 or prefix not in allowed):
            example = {"bio": "O, B-PER, I-PER", "bioes": "O, B-PER, I-PER, E-PER, S-PER",
                       "bmes": "B, M, E, S (or B-PER, ...)"}[scheme]
            raise ValueError(f"label {tag!r} is not a {scheme.upper()} tag (tags look like: {example}); "
                             "fix the labels or set head.scheme")
        if scheme != "bmes" and tag != "O" and not kind:
            raise ValueError(f"label {tag!r} has no entity type; {scheme.upper()} tags look like B-PER")


def _may_follow(previous: str, current: str, scheme: Scheme) -> bool:
    if scheme == "plain":
        return True
    (p_prefix, p_kind), (c_prefix, c_kind) = split_tag(previous), split_tag(current)
    if scheme == "bio":
        return c_prefix != "I" or (p_prefix in ("B", "I") and p_kind == c_kind)
    inside = "I" if scheme == "bioes" else "M"
    open_span = p_prefix in ("B", inside)
    if c_prefix in (inside, "E"):
        return open_span and p_kind == c_kind
    return not open_span  # O, B or S may only come after a closed span


def transition_constraints(labels: list[str], scheme: Scheme) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Boolean (start [L], transitions [L, L] from->to, end [L]): which tag may open, follow, close a sequence."""
    size = len(labels)
    transitions = torch.tensor([[_may_follow(a, b, scheme) for b in labels] for a in labels], dtype=torch.bool)
    prefixes = [split_tag(tag)[0] for tag in labels]
    if scheme == "plain":
        return torch.ones(size, dtype=torch.bool), transitions, torch.ones(size, dtype=torch.bool)
    start = torch.tensor([p in ("O", "B", "S") for p in prefixes], dtype=torch.bool)
    end = torch.tensor([p in ("O", "E", "S") or (scheme == "bio" and p in ("B", "I")) for p in prefixes],
                       dtype=torch.bool)
    return start, transitions, end


def spans(tags: list[str], scheme: Scheme) -> list[tuple[int, int, str]]:
    """(start, end exclusive, type) for each span in a word-level tag sequence.

    Lenient, like conlleval: a continuation tag without a matching opener starts a new span, so an
    unconstrained softmax decoder never loses an entity it half-found.
    """
    found: list[tuple[int, int, str]] = []
    if scheme == "plain":
        return [(i, i + 1, tag) for i, tag in enumerate(tags)]
    start, kind = None, ""
    for i, tag in enumerate(tags):
        prefix, tag_kind = split_tag(tag)
        continues = prefix in ("I", "M", "E") and start is not None and tag_kind == kind
        if not continues:
            if start is not None:
                found.append((start, i, kind))
            start, kind = (None, "") if prefix == "O" else (i, tag_kind)
        if prefix in ("E", "S") and start is not None:
            found.append((start, i + 1, kind))
            start, kind = None, ""
    if start is not None:
        found.append((start, len(tags), kind))
    return found


def tags_for_spans(length: int, entities: list[tuple[int, int, str]], scheme: Scheme) -> list[str]:
    """Word-level tags for non-overlapping (start, end exclusive, type) spans."""
    tags = ["O"] * length
    inside = "M" if scheme == "bmes" else "I"
    for start, end, kind in sorted(entities):
        if any(tag != "O" for tag in tags[start:end]):
            raise ValueError(f"span {start}-{end} ({kind}) overlaps another; "
                             "tagging cannot hold nested entities (use kind: span_ner)")
        suffix = f"-{kind}" if kind else ""
        if scheme == "bio":
            tags[start:end] = [f"B{suffix}"] + [f"I{suffix}"] * (end - start - 1)
        elif end - start == 1:
            tags[start] = f"S{suffix}"
        else:
            tags[start:end] = [f"B{suffix}"] + [f"{inside}{suffix}"] * (end - start - 2) + [f"E{suffix}"]
    return tags


def without_overlaps(entities: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """The longest spans that do not overlap (ties: the earlier one), for tagging data with nested entities."""
    taken = bytearray(max((end for _, end, _ in entities), default=0))  # 1 on the words of a kept span
    kept: list[tuple[int, int, str]] = []
    for start, end, kind in sorted(entities, key=lambda s: (-(s[1] - s[0]), s[0])):
        if taken.find(1, start, end) == -1:  # one memchr per span: comparing with every kept span was quadratic
            taken[start:end] = b"\x01" * (end - start)
            kept.append((start, end, kind))
    return sorted(kept)


def subword_tags(tag: str, pieces: int, scheme: Scheme) -> list[str]:
    """Tags for every sub-word of one word (training on all sub-words): the word's span is kept intact."""
    if pieces <= 1:
        return [tag] * pieces
    prefix, kind = split_tag(tag)
    if scheme == "plain" or prefix == "O":
        return [tag] * pieces
    suffix = f"-{kind}" if kind else ""
    inside = "M" if scheme == "bmes" else "I"
    first = {"B": "B", "S": "B"}.get(prefix, inside)
    last = {"E": "E", "S": "E"}.get(prefix, inside) if scheme != "bio" else "I"
    return [f"{first}{suffix}"] + [f"{inside}{suffix}"] * (pieces - 2) + [f"{last}{suffix}"]


def word_tag(first: str, last: str, scheme: Scheme) -> str:
    """The word-level tag back from its first and last sub-word tags (inverse of `subword_tags`)."""
    if scheme in ("plain", "bio"):
        return first
    (f_prefix, kind), (l_prefix, _) = split_tag(first), split_tag(last)
    if f_prefix == "O":
        return first
    suffix = f"-{kind}" if kind else ""
    closes = l_prefix == "E"
    if f_prefix == "B":
        return f"{'S' if closes else 'B'}{suffix}"
    if f_prefix in ("I", "M"):
        return f"E{suffix}" if closes else first
    return first


def repair_tags(tags: list[str], scheme: Scheme) -> list[str]:
    """The same spans as a valid tag sequence: a window that starts mid-entity, a dropped word, or IOB1
    data (I-X opening an entity) would otherwise hand the CRF a path it forbids."""
    if scheme == "plain":
        return list(tags)
    return tags_for_spans(len(tags), spans(tags, scheme), scheme)
