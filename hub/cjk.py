"""CJK ideographs: the one test the metrics (each character a token, CMRC2018 style) and pre-training (a text is
Chinese: words come from a segmenter) share."""

from __future__ import annotations

import re

IDEOGRAPH = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff]")  # ext. A, unified,
# compatibility, and the supplementary planes' extensions B-F


def is_cjk(character: str) -> bool:
    return IDEOGRAPH.fullmatch(character) is not None
