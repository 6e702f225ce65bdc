"""What every store engine shares: the interface, the errors, the limits and small JSON helpers.

The engines (server/store.py for memory and none, server/store_sqlite.py, server/store_postgres.py)
import from here and nothing imports them back, so there is no import circle; ``open_store`` in
server/store.py loads an engine module only when a spec names it. docs/store.md describes the
behaviour this module pins down (failures, limits, recovery, conversations).
"""

from __future__ import annotations

import copy
import os
import secrets
import socket
import time
from collections.abc import Iterable
from typing import Any, Protocol, runtime_checkable

import orjson

DEFAULT_STORE_SPEC = "sqlite:///./responses-bridge.db"

#: A response in one of these states will not change any more (background jobs stop here).
TERMINAL_STATUSES = frozenset({"completed", "failed", "incomplete", "cancelled"})
#: A background response in one of these states may still be cancelled.
CANCELLABLE_STATUSES = frozenset({"queued", "in_progress"})

#: How many previous_response_id links ``conversation`` follows before it gives up (a guard against
#: cycles written by hand into the database; real chains are far shorter).
MAX_CHAIN_DEPTH = 10_000

# ------------------------------------------------------------------------------------------- limits

#: Longest id the store accepts (response, item, call, conversation ids). Ids are keys of btree
#: indexes, and a PostgreSQL btree entry must fit in a third of a page (about 2.7 kB); 256 characters
#: (at most 1 kB of UTF-8) stays far below that on every engine, and OpenAI's own ids are ~50.
MAX_ID_LENGTH = 256
#: Deepest JSON nesting the store accepts. orjson refuses to serialise deeper than 254 levels and
#: PostgreSQL's JSON parser runs out of stack long before 1,000; 128 is below both with room for the
#: envelope the store wraps around an item (response → output → item → content → part).
MAX_JSON_DEPTH = 128

#: Fields that hold ids: they end up in indexed text columns, so NUL and length are checked there.
ID_FIELDS = frozenset({"id", "call_id", "previous_response_id", "item_id", "response_id", "conversation_id"})

#: Which replica a job belongs to once its heartbeat is this old (seconds), unless the caller says.
DEFAULT_STALE_AFTER = 30.0
#: The error a job gets when recovery finds its replica gone.
SERVER_RESTARTED = {
    "code": "server_restarted",
    "message": "The server running this background response stopped before it finished.",
}

_ID_PREFIX = {
    "message": "msg",
    "function_call": "fc",
    "function_call_output": "fco",
    "custom_tool_call": "ctc",
    "custom_tool_call_output": "ctco",
    "reasoning": "rs",
}

# ------------------------------------------------------------------------------------------- errors


class StoreError(Exception):
    """Base of the store's own errors."""


class StoreUnavailable(StoreError):
    """The engine failed a call (disk full, read-only file, connection lost after one retry, …).

    Every engine raises this, and only this, for engine failures, so the server can answer
    ``store_unavailable`` (503, or ``response.failed`` on a stream) instead of acknowledging a response
    that was not stored. ``str(exc)`` is a one-line reason fit for the log; ``__cause__`` holds the
    engine's exception."""


class StoreRefused(StoreError, ValueError):
    """The store cannot hold this input (checked before any write, the same on every engine).

    ``field`` is the JSON path of the offending value (e.g. ``input[3].id``), ``reason`` says what is
    wrong; the server maps this to a 400 ``invalid_request_error`` with ``param = field``."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class ConversationNotFound(StoreError, LookupError):
    """``put(..., conversation_id=…)`` named a conversation this owner cannot see (deleted meanwhile,
    or another owner's). Nothing was written."""

    def __init__(self, conversation_id: str) -> None:
        super().__init__(f"No conversation found with id {conversation_id!r}.")
        self.conversation_id = conversation_id


# ---------------------------------------------------------------------------------------- interface


@runtime_checkable
class ResponseStore(Protocol):
    """The contract the server codes against (docs/store.md, "The interface").

    Writes raise :class:`StoreUnavailable` on engine failure and :class:`StoreRefused` for input that
    fails :func:`check_storable`; lookups with an id no engine can hold (NUL, over-long) miss."""

    keeps_responses: bool

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def put(
        self, response: dict, input_items: list[dict], *, owner: str | None, conversation_id: str | None = None
    ) -> None: ...

    async def get(self, response_id: str, *, owner: str | None) -> dict | None: ...

    async def delete(self, response_id: str, *, owner: str | None) -> bool: ...

    async def input_items(self, response_id: str, *, owner: str | None) -> list[dict] | None: ...

    async def conversation(self, response_id: str, *, owner: str | None) -> list[dict] | None: ...

    async def get_items(self, item_ids: list[str], *, owner: str | None) -> dict[str, dict]: ...

    async def get_item(self, item_id: str, *, owner: str | None) -> dict | None: ...

    async def append_events(self, response_id: str, events: list[dict]) -> None: ...

    async def events(self, response_id: str, *, after: int | None) -> list[dict]: ...

    async def update_response(self, response: dict, *, owner: str | None) -> bool: ...

    async def request_cancel(self, response_id: str, *, owner: str | None) -> dict | None: ...

    async def cancel_requested(self, response_id: str) -> bool: ...

    async def purge(self, older_than_days: float) -> int: ...

    # replicas and recovery
    async def register_replica(self, replica_id: str) -> None: ...

    async def heartbeat(self, replica_id: str) -> None: ...

    async def recover_orphans(self, replica_id: str, stale_after: float = DEFAULT_STALE_AFTER) -> list[str]: ...

    # conversations
    async def create_conversation(
        self, conversation: dict, items: list[dict], *, owner: str | None
    ) -> list[dict]: ...

    async def get_conversation(self, conversation_id: str, *, owner: str | None) -> dict | None: ...

    async def update_conversation(
        self, conversation_id: str, metadata: dict, *, owner: str | None
    ) -> dict | None: ...

    async def delete_conversation(self, conversation_id: str, *, owner: str | None) -> bool: ...

    async def add_conversation_items(
        self, conversation_id: str, items: list[dict], *, owner: str | None
    ) -> list[dict] | None: ...

    async def conversation_items(
        self,
        conversation_id: str,
        *,
        owner: str | None,
        limit: int = 20,
        after: str | None = None,
        order: str = "desc",
    ) -> dict | None: ...

    async def all_conversation_items(self, conversation_id: str, *, owner: str | None) -> list[dict] | None: ...

    async def get_conversation_item(
        self, conversation_id: str, item_id: str, *, owner: str | None
    ) -> dict | None: ...

    async def delete_conversation_item(self, conversation_id: str, item_id: str, *, owner: str | None) -> bool: ...


class ItemLookup:
    """``get_item`` for one id, shared by the engines (the server resolves one ``item_reference`` at a
    time; ``get_items`` is the batch form)."""

    async def get_items(self, item_ids: list[str], *, owner: str | None) -> dict[str, dict]:
        raise NotImplementedError

    async def get_item(self, item_id: str, *, owner: str | None) -> dict | None:
        if not usable_id(item_id):
            return None
        return (await self.get_items([item_id], owner=owner)).get(item_id)


# ------------------------------------------------------------------------------------------ checks


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
    _check_json(response, "", 1)
    if not isinstance(input_items, list):
        raise StoreRefused("input", "must be a list")
    for index, item in enumerate(input_items):
        if isinstance(item, dict | list):
            _check_json(item, f"input[{index}]", 2)


def check_items(items: list, field: str = "items") -> None:
    """:func:`check_storable` for a list of conversation items (``field[i]…`` in the error)."""
    if not isinstance(items, list):
        raise StoreRefused(field, "must be a list")
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise StoreRefused(f"{field}[{index}]", "must be an object")
        _check_json(item, f"{field}[{index}]", 2)


def check_metadata(metadata: object) -> dict:
    """The metadata as stored (``{}`` for None); :class:`StoreRefused` when it is not JSON the store
    can hold. The API's own rules (16 keys, 64/512 characters) belong to the route."""
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise StoreRefused("metadata", "must be an object")
    _check_json(metadata, "metadata", 1)
    return metadata


# ----------------------------------------------------------------------------------------- helpers


def dumps(value: Any) -> str:
    """orjson to ``str``: both SQLite TEXT and PostgreSQL ``json`` columns want text."""
    return orjson.dumps(value).decode()


def loads(value: str | bytes) -> Any:
    return orjson.loads(value)


def with_item_ids(items: list[dict], response_id: str) -> list[dict]:
    """Copies of ``items``, each with an ``id``.

    input_items pages by item id and ``item_reference`` looks items up by id, so an item stored without
    one would be unreachable. The server is expected to give ids already; this is the safety net, and the
    ids it makes are deterministic so storing the same request twice gives the same ids.
    """
    out: list[dict] = []
    for index, item in enumerate(items):
        item = dict(item)
        if not item.get("id"):
            suffix = response_id.removeprefix("resp_")
            item["id"] = f"{item_prefix(item)}_{suffix}_in{index}"
        out.append(item)
    return out


def item_prefix(item: dict) -> str:
    kind = item.get("type") or ("message" if "role" in item else "item")
    return _ID_PREFIX.get(kind, "item")


def with_random_ids(items: list[dict]) -> list[dict]:
    """Copies of ``items``, each with an ``id`` (a random one when missing): items added to a
    conversation by hand have no response to derive an id from."""
    out = []
    for item in items:
        item = dict(item)
        if not item.get("id"):
            item["id"] = f"{item_prefix(item)}_{secrets.token_hex(16)}"
        out.append(item)
    return out


def response_items(response: dict, input_items: list[dict]) -> list[dict]:
    """What a completed response adds to its conversation: its input items, then its output items."""
    return [*input_items, *(item for item in response.get("output") or [] if isinstance(item, dict))]


def created_at_of(response: dict) -> float:
    """The response's creation time in epoch seconds (now when missing): what retention measures."""
    value = response.get("created_at")
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return time.time()


def cancelled_copy(response: dict) -> dict:
    """The response as a cancel leaves it: status ``cancelled``, output kept as it was."""
    out = copy.deepcopy(response)
    out["status"] = "cancelled"
    return out


def restarted_copy(response: dict) -> dict:
    """The response as recovery leaves it: ``failed`` with error ``server_restarted``."""
    out = copy.deepcopy(response)
    out["status"] = "failed"
    out["error"] = dict(SERVER_RESTARTED)
    return out


def restarted_event(response: dict, last_sequence_number: int | None) -> dict:
    """The terminal event recovery appends so that followers of the job end."""
    seq = 0 if last_sequence_number is None else last_sequence_number + 1
    return {"type": "response.failed", "sequence_number": seq, "response": response}


def chain_items(records: list[tuple[list[dict], dict]]) -> list[dict]:
    """Flatten (input_items, response) pairs, oldest first, into the items the next turn is built on."""
    items: list[dict] = []
    for inputs, response in records:
        items.extend(inputs)
        items.extend(response.get("output") or [])
    return items


def cutoff(older_than_days: float) -> float:
    return time.time() - older_than_days * 86_400.0


def conversation_object(conversation_id: str, created_at: float, metadata: dict) -> dict:
    """OpenAI's conversation object shape."""
    return {"id": conversation_id, "object": "conversation", "created_at": int(created_at), "metadata": metadata}


def page(items: list[dict], limit: int, has_more: bool) -> dict:
    """A list page in OpenAI's shape (the route adds ``"object": "list"``)."""
    return {
        "object": "list",
        "data": items,
        "first_id": items[0]["id"] if items else None,
        "last_id": items[-1]["id"] if items else None,
        "has_more": has_more,
    }


def check_order(order: str, limit: int) -> None:
    if order not in ("asc", "desc"):
        raise ValueError(f"order must be 'asc' or 'desc', not {order!r}")
    if not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be a positive integer, not {limit!r}")


# ---------------------------------------------------------------------------------------- replicas


def this_host() -> str:
    return socket.gethostname()


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (signal 0 checks without sending)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def replica_gone(host: str | None, pid: int | None, heartbeat_age: float | None, stale_after: float) -> bool:
    """The recovery rule (docs/store.md, "Recovery at start"): a replica is gone when its last
    heartbeat is more than ``stale_after`` seconds old, or it ran on this machine and its process no
    longer exists (or is this very process: a predecessor whose pid was reused, as for pid 1 in a
    restarted container). A replica with no row (never registered, or a job stored before replicas
    were recorded) is gone too. Only call it for replicas other than the caller's own."""
    if heartbeat_age is None or heartbeat_age > stale_after:
        return True
    if host == this_host() and pid is not None:
        return pid == os.getpid() or not pid_alive(pid)
    return False


def ids_of(items: Iterable[dict]) -> list[str]:
    return [item["id"] for item in items]
