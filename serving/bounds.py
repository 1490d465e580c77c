"""Bounds on what a client sends, applied before it is read: nesting depth, and text that is safe to quote back.

A value quoted in an error message is the client's own: it may be megabytes long, nested a thousand levels deep
(Python's `repr` and `json` recurse, and fail with RecursionError long before a JSON parser gives up) or hold a
lone surrogate (valid in JSON's `\\ud800` escape, invalid in the UTF-8 the error is written in). Each would turn a
client's mistake into a server error; these helpers keep it a 400.
"""

from __future__ import annotations

import reprlib
from typing import Any

from kserve.errors import InvalidInput

MAX_DEPTH = 8  # the deepest body any predictor reads is {"instances": [{"candidates": [..]}]}: 4 levels
_SUMMARY = reprlib.Repr()  # keyword arguments only from Python 3.12
_SUMMARY.maxlevel, _SUMMARY.maxstring, _SUMMARY.maxother, _SUMMARY.maxlist, _SUMMARY.maxdict = 2, 40, 40, 4, 4


def check_depth(value: Any, where: str, limit: int = MAX_DEPTH) -> None:
    """InvalidInput when `value` nests lists and objects deeper than `limit`, measured level by level without
    recursing, so a body of any depth is measured safely."""
    level = [value]
    for _ in range(limit + 1):
        level = [
            child
            for item in level
            for child in (item.values() if isinstance(item, dict) else item if isinstance(item, list) else ())
        ]
        if not level:
            return
    raise InvalidInput(f"{where}: nested deeper than {limit} levels; no predictor reads a body that deep")


def is_int(value: Any) -> bool:
    """A JSON integer: an int that is not a bool (JSON's true would otherwise pass as 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def summary(value: Any, limit: int = 80) -> str:
    """A client's value as short text to quote: bounded in depth and length, invalid UTF-8 escaped."""
    text = printable(_SUMMARY.repr(value if not isinstance(value, str) else value[:limit]))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def field_name(name: Any) -> str:
    """A client's field name as text to quote: its first 40 characters, invalid UTF-8 escaped."""
    return printable(str(name)[:40])


def printable(text: str) -> str:
    """`text` with anything UTF-8 cannot encode (a lone surrogate) written as a backslash escape."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
