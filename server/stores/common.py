"""Helpers every engine shares: JSON, ids, the copies a cancel or a recovery leaves, the rows a
response is stored as, paging, replicas, and how a write's outcome reaches its awaiting task.

What is written once here is what the SQL engines would otherwise each write again; what differs
between engines (SQL text, connection handling) stays in the engine modules. Imports only
server/stores/base.py.
"""

from __future__ import annotations

import asyncio
import copy
import os
import secrets
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from server.stores.base import CANCELLABLE_STATUSES, SERVER_RESTARTED, StoreUnavailable

_ID_PREFIX = {
    "message": "msg",
    "function_call": "fc",
    "function_call_output": "fco",
    "custom_tool_call": "ctc",
    "custom_tool_call_output": "ctco",
    "reasoning": "rs",
}

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


def this_host() -> str:
    return socket.gethostname()


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (signal 0 checks without sending). A
    zombie (dead, not yet reaped by its parent: a killed worker its supervisor has not waited for)
    is dead: it answers signal 0 but will never write, heartbeat or serve again."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except OSError:  # no /proc (not Linux): signal 0 is all there is
        return True
    return fields[:1] != ["Z"]


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


# ------------------------------------------------------------------------------------- stored rows


@dataclass(frozen=True)
class ResponseRows:
    """A response as the SQL engines store it, prepared before the write is queued so the writer
    only talks to the database."""

    response_id: str
    owner: str | None
    #: (id, owner, created_at, previous_response_id, status, response JSON, input JSON, owner_replica)
    row: tuple
    #: (item_id, response_id, position, owner, created_at, item JSON): input items, then output items
    item_rows: list[tuple]
    #: (item id, item JSON) that a conversation gets: input items, then output items
    appended: list[tuple[str, str]]


def response_rows(
    response: dict, input_items: list[dict], owner: str | None, replica_id: str | None, *, conversation: bool = True
) -> ResponseRows:
    """The rows of ``put``. A running (queued, in progress) response records ``replica_id``, the
    replica whose job it is, so recovery can tell whose jobs died with it. ``conversation=False``
    (the put appends to no conversation) leaves ``appended`` empty: its JSON of every item again
    would be made for nothing."""
    response_id = response["id"]
    items = with_item_ids(input_items, response_id)
    created = created_at_of(response)
    running = response.get("status") in CANCELLABLE_STATUSES
    row = (
        response_id,
        owner,
        created,
        response.get("previous_response_id"),
        response.get("status"),
        dumps(response),
        dumps(items),
        replica_id if running else None,
    )
    return ResponseRows(
        response_id, owner, row, item_rows([*items, *(response.get("output") or [])], response_id, owner, created),
        appended_rows(response, items) if conversation else [],
    )


def item_rows(items: list, response_id: str, owner: str | None, created_at: float, start: int = 0) -> list[tuple]:
    """Rows of the items index (what ``get_items`` reads) for ``items`` at positions ``start``…;
    an entry without an id is not indexed (nothing could look it up)."""
    return [
        (item["id"], response_id, start + position, owner, created_at, dumps(item))
        for position, item in enumerate(items)
        if isinstance(item, dict) and item.get("id")
    ]


def output_items(response: dict) -> list[dict]:
    """The output items ``update_response`` indexes (those with an id)."""
    return [item for item in response.get("output") or [] if isinstance(item, dict) and item.get("id")]


def appended_rows(response: dict, input_items: list[dict]) -> list[tuple[str, str]]:
    """(item id, item JSON) of what a finished response adds to its conversation."""
    return [(item["id"], dumps(item)) for item in response_items(response, input_items)]


# ------------------------------------------------------------------------------------------ paging


#: Above every position a conversation item can have (positions are 32-bit integers on PostgreSQL).
LAST_POSITION = 2**31 - 1


def page_order(ascending: bool) -> tuple[str, str, int]:
    """(comparison, ORDER BY direction, first bound) of a page of conversation items by position."""
    return (">", "ASC", -1) if ascending else ("<", "DESC", LAST_POSITION)


def items_page(rows: list[Any], limit: int) -> dict:
    """A page from ``limit + 1`` rows of item JSON (the extra row only says there is more)."""
    return page([loads(item) for item in rows[:limit]], limit, len(rows) > limit)


# ------------------------------------------------------------------------------------- group commit


def settle(future: asyncio.Future, ok: bool, value: Any) -> None:
    """Hand a write's outcome to the task awaiting it. A task cancelled meanwhile is not told: its
    write happened (or not) all the same, so a cancel never undoes a commit."""
    if future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


def unavailable(engine: str, exc: BaseException, what: str | None = None) -> StoreUnavailable:
    """The :class:`StoreUnavailable` an engine error becomes (the engine's exception as its cause)."""
    during = f" during {what}: {type(exc).__name__}" if what else ""
    error = StoreUnavailable(f"{engine} store failed{during}: {exc}")
    error.__cause__ = exc
    return error


def group_option(key: str, value: str) -> tuple[str, float | int] | None:
    """A group-commit setting from a spec's query (``batch_window_ms``, ``max_batch``) as a keyword
    of the engine (``batch_window`` in seconds, ``max_batch``); None for any other key. Raises
    ValueError for a value out of range."""
    if key == "batch_window_ms":
        try:
            ms = float(value)
        except ValueError:
            ms = -1.0
        if not ms >= 0:
            raise ValueError(f"batch_window_ms must be a number of milliseconds ≥ 0, not {value!r}")
        return "batch_window", ms / 1000.0
    if key == "max_batch":
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"max_batch must be a positive integer, not {value!r}")
        return "max_batch", int(value)
    return None
