"""Task heads: one module per family, all on the contract of `heads.base.Head`."""

from pathlib import Path

from .base import Head, HeadConfig, HeadLoadError, HeadOptions, load_head_from, pool
from .sequence import ClassificationHead, RegressionHead
from .qa import QAHead
from .relation import RelationHead
from .span_ner import SpanNERHead
from .tagging import TaggingHead

HEAD_KINDS: dict[str, type[Head]] = {
    cls.kind: cls for cls in (ClassificationHead, RegressionHead, TaggingHead, QAHead, RelationHead, SpanNERHead)
}


def load_head(folder: Path) -> Head:
    """Rebuild the head stored in an adapter folder (`head_config.json` + `head.safetensors`)."""
    return load_head_from(Path(folder), HEAD_KINDS)


__all__ = ["HEAD_KINDS", "Head", "HeadConfig", "HeadLoadError", "HeadOptions", "load_head", "pool"]
