"""What the store can hold, checked the same way before any engine sees a write.

A request that the store could not hold is refused with the field and the reason (a 400 naming
``param``), instead of an engine error after the model already ran. Imports only server/stores/base.py
(for :class:`StoreRefused`).
"""

from __future__ import annotations

from typing import Any

from server.stores.base import StoreRefused

#: indexes, and a PostgreSQL btree entry must fit in a third of a page (about 2.7 kB); 256 characters
#: (at most 1 kB of UTF-8) stays far below that on every engine, and OpenAI's own ids are ~50.
MAX_ID_LENGTH = 256
#: Deepest JSON nesting the store accepts. orjson refuses to serialise deeper than 254 levels and
#: PostgreSQL's JSON parser runs out of stack long before 1,000; 128 is below both with room for the
#: envelope the store wraps around an item (response → output → item → content → part).
MAX_JSON_DEPTH = 128

#: Fields that hold ids: they end up in indexed text columns, so NUL and length are checked there.
ID_FIELDS = frozenset({"id", "call_id", "previous_response_id", "item_id", "response_id", "conversation_id"})


def usable_id(value: object) -> bool:
    """Whether ``value`` can be an id in the store: a non-empty str without NUL, at most
    :data:`MAX_ID_LENGTH` long. Lookups with any other value miss (None / False / []) on every engine
    rather than reaching the database (PostgreSQL rejects NUL in text with an error)."""
    return isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH and "\x00" not in value


def check_id(value: object, field: str) -> None:
    """Raise :class:`StoreRefused` unless ``value`` is a usable id (see :func:`usable_id`)."""
    if not isinstance(value, str) or not value:
        raise StoreRefused(field, "must be a non-empty string")
    check_id_text(value, field)


def check_id_text(value: str, field: str) -> None:
    """NUL and length checks of an id-like string (an empty one is left to the caller's rules)."""
    if "\x00" in value:
        raise StoreRefused(field, "must not contain NUL characters")
    if len(value) > MAX_ID_LENGTH:
        raise StoreRefused(field, f"is {len(value)} characters long; the longest id stored is {MAX_ID_LENGTH}")


#: Leaf types `_fits` passes without a look (what JSON parsing makes besides str, dict and list).
_SCALARS = frozenset({int, float, bool, type(None)})


def _fits(value: Any, depth: int) -> bool:
    """True only when `_check_json(value, …, depth)` would pass: the same rules without the field
    paths (an f-string per key was most of the check's cost, on every stored response, twice per
    request) and with exact-type tests. False sends the value through `_check_json`, which names the
    field; so does any type but the plain JSON ones, which keeps a str subclass and the like on the
    full rules."""
    if depth > MAX_JSON_DEPTH:
        return False
    if type(value) is dict:
        for key, child in value.items():
            if type(key) is not str or "\x00" in key:
                return False
            kind = type(child)
            if kind is str:
                if key in ID_FIELDS and ("\x00" in child or len(child) > MAX_ID_LENGTH):
                    return False
            elif kind is dict or kind is list:
                if not _fits(child, depth + 1):
                    return False
            elif kind not in _SCALARS:
                return False
        return True
    if type(value) is list:
        for child in value:
            kind = type(child)
            if kind is dict or kind is list:
                if not _fits(child, depth + 1):
                    return False
            elif kind is not str and kind not in _SCALARS:
                return False
        return True
    return False


def _check(value: Any, path: str, depth: int) -> None:
    """`_check_json`, taking the fast way when the value fits (the common case)."""
    if not _fits(value, depth):
        _check_json(value, path, depth)


def _check_json(value: Any, path: str, depth: int) -> None:
    # Iterative over siblings, recursive over depth: the depth is capped, so the recursion is too.
    if depth > MAX_JSON_DEPTH:
        raise StoreRefused(path, f"is nested more than {MAX_JSON_DEPTH} levels deep")
    if isinstance(value, dict):
        for key, child in value.items():
            if not isinstance(key, str):
                raise StoreRefused(path, "has a key that is not a string")
            if "\x00" in key:
                raise StoreRefused(path, "has a key containing a NUL character")
            child_path = f"{path}.{key}" if path else key
            if key in ID_FIELDS and isinstance(child, str):
                check_id_text(child, child_path)
            elif isinstance(child, dict | list):
                _check_json(child, child_path, depth + 1)
    elif isinstance(value, list):
        for index, child in enumerate(value):
            if isinstance(child, dict | list):
                _check_json(child, f"{path}[{index}]", depth + 1)


def check_storable(response: dict, input_items: list, *, conversation_id: str | None = None) -> None:
    """Raise :class:`StoreRefused` (field path + reason) when the store could not hold this response.

    Call it before the request goes upstream (on the request's input) and ``put`` calls it again on
    what is written, so the answer is the same on every engine: a 400 naming the field instead of an
    engine error after the model already ran. Checked: ids (``id``, ``call_id``,
    ``previous_response_id`` … anywhere) are non-empty, NUL-free and at most :data:`MAX_ID_LENGTH`
    long; object keys hold no NUL; nesting is at most :data:`MAX_JSON_DEPTH` deep. NUL inside other
    strings (message text) is stored as is: it is escaped in JSON on every engine."""
    if not isinstance(response, dict):
        raise StoreRefused("response", "must be an object")
    check_id(response.get("id"), "id")
    if conversation_id is not None:
        check_id(conversation_id, "conversation")
    # response fields: depth counted from the response itself
    _check(response, "", 1)
    if not isinstance(input_items, list):
        raise StoreRefused("input", "must be a list")
    for index, item in enumerate(input_items):
        if isinstance(item, dict | list) and not _fits(item, 2):
            _check_json(item, f"input[{index}]", 2)


def check_items(items: list, field: str = "items") -> None:
    """:func:`check_storable` for a list of conversation items (``field[i]…`` in the error)."""
    if not isinstance(items, list):
        raise StoreRefused(field, "must be a list")
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise StoreRefused(f"{field}[{index}]", "must be an object")
        if not _fits(item, 2):
            _check_json(item, f"{field}[{index}]", 2)


def check_metadata(metadata: object) -> dict:
    """The metadata as stored (``{}`` for None); :class:`StoreRefused` when it is not JSON the store
    can hold. The API's own rules (16 keys, 64/512 characters) belong to the route."""
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise StoreRefused("metadata", "must be an object")
    _check(metadata, "metadata", 1)
    return metadata


def check_order(order: str, limit: int) -> None:
    if order not in ("asc", "desc"):
        raise ValueError(f"order must be 'asc' or 'desc', not {order!r}")
    if not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be a positive integer, not {limit!r}")

