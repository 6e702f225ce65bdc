"""Where stored responses live: one interface, several engines, chosen by ``open_store(spec)``.

The Responses API is stateful (``store`` defaults to true): clients chain turns with
``previous_response_id``, fetch and delete responses, and poll background jobs. Every engine here passes
the same test suite (tests/test_store.py), so the server never needs to know which one it talks to.

Engines:

* ``none``: keeps nothing (``get`` → None, ``conversation`` → None).
* ``memory``: dicts in this process; for tests and throw-away runs.
* ``sqlite:///path.db`` (or a bare path ending in ``.db``): the default, one file, WAL mode, every call on
  one dedicated worker thread so the event loop never blocks (server/store_sqlite.py).
* ``postgresql://…``: asyncpg with a pool, for many replicas sharing one database
  (server/store_postgres.py).

JSON goes through orjson everywhere. Records are scoped by ``owner`` (a fingerprint of the caller's API key,
or None when no keys are configured): a record is visible only to the owner it was stored with.
"""

from __future__ import annotations

import copy
import time
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

_ID_PREFIX = {
    "message": "msg",
    "function_call": "fc",
    "function_call_output": "fco",
    "custom_tool_call": "ctc",
    "custom_tool_call_output": "ctco",
    "reasoning": "rs",
}


@runtime_checkable
class ResponseStore(Protocol):
    """The contract the server codes against (docs/architecture.md, "server/store.py")."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def put(self, response: dict, input_items: list[dict], *, owner: str | None) -> None: ...

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

    async def cancel_requested(self, response_id: str) -> bool:
        """Whether the job running ``response_id`` should stop: a cancel was asked, or the response
        was deleted (or purged) meanwhile."""
        ...

    async def purge(self, older_than_days: float) -> int: ...


# --------------------------------------------------------------------------------------------- helpers


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
            kind = item.get("type") or ("message" if "role" in item else "item")
            prefix = _ID_PREFIX.get(kind, "item")
            suffix = response_id.removeprefix("resp_")
            item["id"] = f"{prefix}_{suffix}_in{index}"
        out.append(item)
    return out


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


def chain_items(records: list[tuple[list[dict], dict]]) -> list[dict]:
    """Flatten (input_items, response) pairs, oldest first, into the items the next turn is built on."""
    items: list[dict] = []
    for inputs, response in records:
        items.extend(inputs)
        items.extend(response.get("output") or [])
    return items


def cutoff(older_than_days: float) -> float:
    return time.time() - older_than_days * 86_400.0


# ---------------------------------------------------------------------------------------------- engines


class ItemLookup:
    """``get_item`` for one id, shared by the engines (the server resolves one ``item_reference`` at a
    time; ``get_items`` is the batch form)."""

    async def get_items(self, item_ids: list[str], *, owner: str | None) -> dict[str, dict]:
        raise NotImplementedError

    async def get_item(self, item_id: str, *, owner: str | None) -> dict | None:
        if not isinstance(item_id, str) or not item_id:
            return None
        return (await self.get_items([item_id], owner=owner)).get(item_id)


class NullStore(ItemLookup):
    """``--store none``: keeps nothing, so every lookup misses (previous_response_id → 404)."""

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def put(self, response: dict, input_items: list[dict], *, owner: str | None) -> None:
        return None

    async def get(self, response_id: str, *, owner: str | None) -> dict | None:
        return None

    async def delete(self, response_id: str, *, owner: str | None) -> bool:
        return False

    async def input_items(self, response_id: str, *, owner: str | None) -> list[dict] | None:
        return None

    async def conversation(self, response_id: str, *, owner: str | None) -> list[dict] | None:
        return None

    async def get_items(self, item_ids: list[str], *, owner: str | None) -> dict[str, dict]:
        return {}

    async def append_events(self, response_id: str, events: list[dict]) -> None:
        return None

    async def events(self, response_id: str, *, after: int | None) -> list[dict]:
        return []

    async def update_response(self, response: dict, *, owner: str | None) -> bool:
        return True

    async def request_cancel(self, response_id: str, *, owner: str | None) -> dict | None:
        return None

    async def cancel_requested(self, response_id: str) -> bool:
        return False

    async def purge(self, older_than_days: float) -> int:
        return 0


class _Record:
    __slots__ = ("cancel_requested", "created_at", "input_items", "owner", "previous_response_id", "response")

    def __init__(self, response: bytes, input_items: bytes, owner: str | None, created_at: float) -> None:
        self.response = response
        self.input_items = input_items
        self.owner = owner
        self.created_at = created_at
        self.previous_response_id: str | None = loads(response).get("previous_response_id")
        self.cancel_requested = False


class MemoryStore(ItemLookup):
    """``--store memory``: plain dicts holding serialised JSON.

    Values are kept as orjson bytes, so a caller mutating what it got back (or what it stored) never
    changes the stored record: the same isolation a database gives.
    """

    def __init__(self) -> None:
        self._records: dict[str, _Record] = {}
        self._events: dict[str, dict[int, bytes]] = {}

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def _visible(self, response_id: str, owner: str | None) -> _Record | None:
        record = self._records.get(response_id)
        if record is None or record.owner != owner:
            return None
        return record

    async def put(self, response: dict, input_items: list[dict], *, owner: str | None) -> None:
        response_id = response["id"]
        items = with_item_ids(input_items, response_id)
        record = _Record(orjson.dumps(response), orjson.dumps(items), owner, created_at_of(response))
        old = self._records.get(response_id)
        if old is not None:
            record.cancel_requested = old.cancel_requested
        self._records[response_id] = record

    async def get(self, response_id: str, *, owner: str | None) -> dict | None:
        record = self._visible(response_id, owner)
        return None if record is None else loads(record.response)

    async def delete(self, response_id: str, *, owner: str | None) -> bool:
        if self._visible(response_id, owner) is None:
            return False
        del self._records[response_id]
        self._events.pop(response_id, None)
        return True

    async def input_items(self, response_id: str, *, owner: str | None) -> list[dict] | None:
        record = self._visible(response_id, owner)
        return None if record is None else loads(record.input_items)

    async def conversation(self, response_id: str, *, owner: str | None) -> list[dict] | None:
        records: list[tuple[list[dict], dict]] = []
        current: str | None = response_id
        while current is not None:
            if len(records) >= MAX_CHAIN_DEPTH:
                return None
            record = self._visible(current, owner)
            if record is None:
                return None
            records.append((loads(record.input_items), loads(record.response)))
            current = record.previous_response_id
        records.reverse()
        return chain_items(records)

    async def get_items(self, item_ids: list[str], *, owner: str | None) -> dict[str, dict]:
        wanted = set(item_ids)
        found: dict[str, dict] = {}
        # Oldest first so that a later response's copy of an item wins, as in the SQL engines.
        for record in sorted(self._records.values(), key=lambda r: r.created_at):
            if record.owner != owner:
                continue
            response = loads(record.response)
            for item in [*loads(record.input_items), *(response.get("output") or [])]:
                if item.get("id") in wanted:
                    found[item["id"]] = item
        return found

    async def append_events(self, response_id: str, events: list[dict]) -> None:
        stored = self._events.setdefault(response_id, {})
        for event in events:
            stored[int(event["sequence_number"])] = orjson.dumps(event)

    async def events(self, response_id: str, *, after: int | None) -> list[dict]:
        stored = self._events.get(response_id, {})
        return [loads(stored[n]) for n in sorted(stored) if after is None or n > after]

    async def update_response(self, response: dict, *, owner: str | None) -> bool:
        record = self._visible(response["id"], owner)
        if record is None:
            return False
        if record.cancel_requested or loads(record.response).get("status") == "cancelled":
            return False
        record.response = orjson.dumps(response)
        return True

    async def request_cancel(self, response_id: str, *, owner: str | None) -> dict | None:
        record = self._visible(response_id, owner)
        if record is None:
            return None
        response = loads(record.response)
        if response.get("status") in CANCELLABLE_STATUSES:
            response = cancelled_copy(response)
            record.response = orjson.dumps(response)
            record.cancel_requested = True
        return response

    async def cancel_requested(self, response_id: str) -> bool:
        record = self._records.get(response_id)
        return record is None or record.cancel_requested

    async def purge(self, older_than_days: float) -> int:
        limit = cutoff(older_than_days)
        old = [rid for rid, record in self._records.items() if record.created_at < limit]
        for rid in old:
            del self._records[rid]
            self._events.pop(rid, None)
        return len(old)


# ------------------------------------------------------------------------------------------ retention


async def run_retention(store: ResponseStore, older_than_days: float, *, every_seconds: float = 3600.0) -> None:
    """Purge responses older than ``older_than_days`` now and then every ``every_seconds``, for ever
    (run it as a task in the app's lifespan and cancel it on shutdown).

    With several replicas each one purges; that is harmless (a DELETE of rows already gone deletes
    nothing) and keeps retention working when any replica is down."""
    import asyncio
    import logging

    log = logging.getLogger("responses_bridge")
    while True:
        try:
            removed = await store.purge(older_than_days)
            if removed:
                log.info("retention: purged %d stored response(s) older than %g day(s)", removed, older_than_days)
        except Exception:
            log.warning("retention: purge failed; trying again later", exc_info=True)
        await asyncio.sleep(every_seconds)


# ------------------------------------------------------------------------------------------ open_store


class StoreSpecError(ValueError):
    """A ``--store`` value that names no engine."""


def open_store(spec: str | None = None) -> ResponseStore:
    """The engine a ``--store`` value names, not yet opened (call ``await store.open()``).

    ``None`` or empty means the default, SQLite in ./responses-bridge.db.
    """
    spec = (spec or DEFAULT_STORE_SPEC).strip()
    lowered = spec.lower()
    if lowered == "none":
        return NullStore()
    if lowered == "memory":
        return MemoryStore()
    if lowered.startswith(("postgresql://", "postgres://")):
        from server.store_postgres import PostgresStore

        return PostgresStore(spec)
    if lowered.startswith("sqlite://"):
        from server.store_sqlite import SQLiteStore

        path = spec[len("sqlite://") :]
        # sqlite:///relative.db → "relative.db"; sqlite:////abs/path.db → "/abs/path.db"
        if path.startswith("/"):
            path = path[1:]
        if not path:
            raise StoreSpecError(f"--store {spec!r}: no file path after sqlite://")
        return SQLiteStore(path)
    if lowered.endswith((".db", ".sqlite", ".sqlite3")):
        from server.store_sqlite import SQLiteStore

        return SQLiteStore(spec)
    raise StoreSpecError(
        f"--store {spec!r} is not understood: use none, memory, sqlite:///path/to/file.db, a path ending "
        "in .db, or postgresql://user@host:port/database"
    )


__all__ = [
    "CANCELLABLE_STATUSES",
    "DEFAULT_STORE_SPEC",
    "TERMINAL_STATUSES",
    "ItemLookup",
    "MemoryStore",
    "NullStore",
    "ResponseStore",
    "StoreSpecError",
    "open_store",
    "run_retention",
]
