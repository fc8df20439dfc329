"""Checks every request's text once, before any codec or tokenizer sees it (`Hub.prepare` calls `check_text`).

JSON (and Python) allow strings that no tokenizer can read: lone UTF-16 surrogates such as "\\ud800", or a
surrogate pair left as two code units. UTF-8 cannot encode them, so the fast tokenizers fail with a
TypeError or UnicodeEncodeError; here they become an InputError naming the field and the position.
"""

from __future__ import annotations

from typing import Any

from .errors import InputError

_MAX_DEPTH = 2  # inputs nest at most one level below a container: {"tokens": [...]}, {"head": [4, 10]}


def check_text(value: Any, where: str) -> None:
    """Raise InputError if a string in `value` (a str, tuple/list items, dict values; two levels deep) is not valid
    Unicode. `where` names the field in the message, e.g. "input['context']"."""
    _walk(value, where, _MAX_DEPTH)


def _walk(value: Any, where: str, depth: int) -> None:
    if isinstance(value, str):
        _check_string(value, where)
    elif depth > 0 and isinstance(value, (tuple, list)):
        for index, item in enumerate(value):
            _walk(item, f"{where}[{index}]", depth - 1)
    elif depth > 0 and isinstance(value, dict):
        for key, item in value.items():
            _walk(item, f"{where}[{key!r}]", depth - 1)  # repr: a bad key never puts a surrogate into the message


def _check_string(text: str, where: str) -> None:
    try:
        text.encode("utf-8")  # C speed on any length; the error gives the first bad position
    except UnicodeEncodeError as exc:
        raise InputError(f"{where} {_describe(text, exc.start)}") from None


def _describe(text: str, at: int) -> str:
    """What the surrogate at `at` is, and the fix."""
    code = ord(text[at])
    following = ord(text[at + 1]) if at + 1 < len(text) else 0
    if 0xD800 <= code <= 0xDBFF and 0xDC00 <= following <= 0xDFFF:
        joined = 0x10000 + ((code - 0xD800) << 10) + (following - 0xDC00)
        return (f"has a surrogate pair (U+{code:04X} U+{following:04X}) at character {at} left as two code units; "
                f"send the character itself (U+{joined:04X}) as valid Unicode text (UTF-8 cannot encode surrogates).")
    return (f"has a lone surrogate (U+{code:04X}) at character {at}; "
            "send valid Unicode text (UTF-8 cannot encode lone surrogates).")
