"""Task kinds: one folder each (head, serving and training codecs, data reading), registered into `KINDS`.

Every sub-folder of `heads/` is imported here and registers its kind (heads/kind.py), so adding a kind is
adding a folder. Shared parts: the head contract (base.py), the codec contracts (codec.py), losses.
"""

import importlib
import pkgutil

from .base import ExtraInput, Head, HeadConfig, HeadLoadError, HeadOptions, pool
from .codec import Codec, ExampleCodec, Row
from .kind import KINDS, KindError, TaskKind, kind, register_kind

for _found in pkgutil.iter_modules(__path__):
    if _found.ispkg:
        importlib.import_module(f"{__name__}.{_found.name}")

__all__ = [
    "KINDS", "Codec", "ExampleCodec", "ExtraInput", "Head", "HeadConfig", "HeadLoadError", "HeadOptions", "KindError",
    "Row", "TaskKind", "kind", "pool", "register_kind",
]
