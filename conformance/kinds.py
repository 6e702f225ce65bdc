"""JSON value predicates and the compact rendering used in messages (shared by every checker).

A separate module because bool is an int in Python and never in JSON: every checker must use the same
definition of "an integer", or two reports would disagree about the same field. Imports nothing of the kit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import orjson

__all__ = [
    "KINDS",
    "is_bool",
    "is_dict",
    "is_int",
    "is_list",
    "is_num",
    "is_str",
    "nullable",
    "short",
    "type_of",
]


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_num(v: Any) -> bool:
    """A finite JSON number (NaN and infinities are not JSON)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def is_str(v: Any) -> bool:
    return isinstance(v, str)


def is_bool(v: Any) -> bool:
    return isinstance(v, bool)


def is_list(v: Any) -> bool:
    return isinstance(v, list)


def is_dict(v: Any) -> bool:
    return isinstance(v, dict)


def type_of(value: Any) -> str | None:
    """The string ``type`` of an object, else None (servers send lists and numbers there too)."""
    kind = value.get("type") if isinstance(value, dict) else None
    return kind if isinstance(kind, str) else None


def nullable(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


#: The field kinds the event catalogue uses (``conformance.catalogue.EVENT_FIELDS``): check, and the
#: words a message uses for it.
KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "int": (is_int, "an integer"),
    "str": (is_str, "a string"),
    "list": (is_list, "a list"),
    "dict": (is_dict, "an object"),
    "str?": (nullable(is_str), "a string or null"),
}


def short(value: Any, limit: int = 80) -> str:
    """A compact JSON rendering for messages (long values cut)."""
    try:
        text = orjson.dumps(value).decode()
    except TypeError:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
