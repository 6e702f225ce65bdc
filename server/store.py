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

The interface, the errors (``StoreUnavailable``, ``StoreRefused``, ``ConversationNotFound``), the limits
and ``check_storable`` live in server/store_base.py and are re-exported here; the SQL engines import only
that module, and ``open_store`` imports an engine only when a spec names it. docs/store.md describes
group commit, failures, limits, recovery and conversations.
"""

from __future__ import annotations

import asyncio
import logging
import time
from urllib.parse import parse_qsl

import orjson

from server.store_base import (
    CANCELLABLE_STATUSES,
    DEFAULT_STALE_AFTER,
    DEFAULT_STORE_SPEC,
    MAX_CHAIN_DEPTH,
    MAX_ID_LENGTH,
    MAX_JSON_DEPTH,
    SERVER_RESTARTED,
    TERMINAL_STATUSES,
    ConversationNotFound,
    ItemLookup,
    ResponseStore,
    StoreError,
    StoreRefused,
    StoreUnavailable,
    cancelled_copy,
    chain_items,
    check_id,
    check_items,
    check_metadata,
    check_order,
    check_storable,
    conversation_object,
    created_at_of,
    cutoff,
    loads,
    page,
    replica_gone,
    response_items,
    restarted_copy,
    restarted_event,
    this_host,
    usable_id,
    with_item_ids,
    with_random_ids,
)

log = logging.getLogger("responses_bridge")

# ---------------------------------------------------------------------------------------------- engines


class NullStore(ItemLookup):
    """``--store none``: keeps nothing, so every lookup misses (previous_response_id → 404)."""

    #: The server checks this (not the class name) to refuse what needs storage (background mode).
    keeps_responses = False

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def put(
        self, response: dict, input_items: list[dict], *, owner: str | None, conversation_id: str | None = None
    ) -> None:
        if conversation_id is not None:
            raise ConversationNotFound(conversation_id)
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

    async def register_replica(self, replica_id: str) -> None:
        return None

    async def heartbeat(self, replica_id: str) -> None:
        return None

    async def recover_orphans(self, replica_id: str, stale_after: float = DEFAULT_STALE_AFTER) -> list[str]:
        return []

    async def create_conversation(self, conversation: dict, items: list[dict], *, owner: str | None) -> list[dict]:
        raise StoreUnavailable("--store none keeps no conversations")

    async def get_conversation(self, conversation_id: str, *, owner: str | None) -> dict | None:
        return None

    async def update_conversation(self, conversation_id: str, metadata: dict, *, owner: str | None) -> dict | None:
        return None

    async def delete_conversation(self, conversation_id: str, *, owner: str | None) -> bool:
        return False

    async def add_conversation_items(
        self, conversation_id: str, items: list[dict], *, owner: str | None
    ) -> list[dict] | None:
        return None

    async def conversation_items(
        self,
        conversation_id: str,
        *,
        owner: str | None,
        limit: int = 20,
        after: str | None = None,
        order: str = "desc",
    ) -> dict | None:
        return None

    async def all_conversation_items(self, conversation_id: str, *, owner: str | None) -> list[dict] | None:
        return None

    async def get_conversation_item(self, conversation_id: str, item_id: str, *, owner: str | None) -> dict | None:
        return None

    async def delete_conversation_item(self, conversation_id: str, item_id: str, *, owner: str | None) -> bool:
        return False


class _Record:
    __slots__ = (
        "cancel_requested",
        "created_at",
        "input_items",
        "owner",
        "owner_replica",
        "previous_response_id",
        "response",
    )

    def __init__(self, response: bytes, input_items: bytes, owner: str | None, created_at: float) -> None:
        self.response = response
        self.input_items = input_items
        self.owner = owner
        self.created_at = created_at
        self.previous_response_id: str | None = loads(response).get("previous_response_id")
        self.cancel_requested = False
        self.owner_replica: str | None = None


class _Conversation:
    __slots__ = ("appended", "created_at", "items", "metadata", "owner")

    def __init__(self, owner: str | None, created_at: float, metadata: bytes) -> None:
        self.owner = owner
        self.created_at = created_at
        self.metadata = metadata
        self.items: list[tuple[str, bytes]] = []  # (item id, item JSON), oldest first
        self.appended: set[str] = set()  # responses whose items are in (never appended twice)


class MemoryStore(ItemLookup):
    """``--store memory``: plain dicts holding serialised JSON.

    Values are kept as orjson bytes, so a caller mutating what it got back (or what it stored) never
    changes the stored record: the same isolation a database gives. Every method runs without an
    ``await`` in the middle, so each one is atomic on the event loop.
    """

    keeps_responses = True

    def __init__(self) -> None:
        self._records: dict[str, _Record] = {}
        self._events: dict[str, dict[int, bytes]] = {}
        self._conversations: dict[str, _Conversation] = {}
        self._replicas: dict[str, tuple[str, int, float]] = {}  # id → (host, pid, heartbeat_at)
        self.replica_id: str | None = None

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def _visible(self, response_id: str, owner: str | None) -> _Record | None:
        if not usable_id(response_id):
            return None
        record = self._records.get(response_id)
        if record is None or record.owner != owner:
            return None
        return record

    async def put(
        self, response: dict, input_items: list[dict], *, owner: str | None, conversation_id: str | None = None
    ) -> None:
        check_storable(response, input_items, conversation_id=conversation_id)
        response_id = response["id"]
        items = with_item_ids(input_items, response_id)
        conv = None
        if conversation_id is not None:
            conv = self._conversations.get(conversation_id)
            if conv is None or conv.owner != owner:
                raise ConversationNotFound(conversation_id)
        record = _Record(orjson.dumps(response), orjson.dumps(items), owner, created_at_of(response))
        old = self._records.get(response_id)
        if old is not None:
            record.cancel_requested = old.cancel_requested
            record.owner_replica = old.owner_replica
        if response.get("status") in CANCELLABLE_STATUSES:
            record.owner_replica = self.replica_id
        self._records[response_id] = record
        if conv is not None and response_id not in conv.appended:
            conv.appended.add(response_id)
            conv.items.extend((item["id"], orjson.dumps(item)) for item in response_items(response, items))

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
        wanted = {i for i in item_ids if usable_id(i)}
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
        record = self._visible(response.get("id"), owner)
        if record is None:
            return False
        if record.cancel_requested or loads(record.response).get("status") == "cancelled":
            return False
        check_storable(response, [])
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
        record = self._records.get(response_id) if usable_id(response_id) else None
        return record is None or record.cancel_requested

    async def purge(self, older_than_days: float) -> int:
        limit = cutoff(older_than_days)
        old = [rid for rid, record in self._records.items() if record.created_at < limit]
        for rid in old:
            del self._records[rid]
            self._events.pop(rid, None)
        return len(old)

    # -- replicas and recovery -------------------------------------------------------------------------

    async def register_replica(self, replica_id: str) -> None:
        import os

        self._replicas[replica_id] = (this_host(), os.getpid(), time.time())
        self.replica_id = replica_id

    async def heartbeat(self, replica_id: str) -> None:
        host, pid, _ = self._replicas.get(replica_id, (this_host(), 0, 0.0))
        self._replicas[replica_id] = (host, pid, time.time())

    async def recover_orphans(self, replica_id: str, stale_after: float = DEFAULT_STALE_AFTER) -> list[str]:
        if self.replica_id != replica_id:
            await self.register_replica(replica_id)
        ended = []
        for rid, record in self._records.items():
            response = loads(record.response)
            if response.get("status") not in CANCELLABLE_STATUSES or record.owner_replica == replica_id:
                continue
            host, pid, beat = self._replicas.get(record.owner_replica or "", (None, None, None))
            age = None if beat is None else time.time() - beat
            if not replica_gone(host, pid, age, stale_after):
                continue
            failed = restarted_copy(response)
            record.response = orjson.dumps(failed)
            record.cancel_requested = True  # a job still running somewhere after all stops at once
            stored = self._events.setdefault(rid, {})
            event = restarted_event(failed, max(stored) if stored else None)
            stored[event["sequence_number"]] = orjson.dumps(event)
            ended.append(rid)
        return ended

    # -- conversations ---------------------------------------------------------------------------------

    def _conv(self, conversation_id: str, owner: str | None) -> _Conversation | None:
        if not usable_id(conversation_id):
            return None
        conv = self._conversations.get(conversation_id)
        return conv if conv is not None and conv.owner == owner else None

    async def create_conversation(self, conversation: dict, items: list[dict], *, owner: str | None) -> list[dict]:
        conversation_id = conversation.get("id")
        check_id(conversation_id, "id")
        metadata = check_metadata(conversation.get("metadata"))
        check_items(items)
        items = with_random_ids(items)
        conv = _Conversation(owner, float(conversation.get("created_at") or time.time()), orjson.dumps(metadata))
        conv.items = [(item["id"], orjson.dumps(item)) for item in items]
        self._conversations[conversation_id] = conv
        return items

    async def get_conversation(self, conversation_id: str, *, owner: str | None) -> dict | None:
        conv = self._conv(conversation_id, owner)
        return None if conv is None else conversation_object(conversation_id, conv.created_at, loads(conv.metadata))

    async def update_conversation(self, conversation_id: str, metadata: dict, *, owner: str | None) -> dict | None:
        metadata = check_metadata(metadata)
        conv = self._conv(conversation_id, owner)
        if conv is None:
            return None
        conv.metadata = orjson.dumps(metadata)
        return conversation_object(conversation_id, conv.created_at, metadata)

    async def delete_conversation(self, conversation_id: str, *, owner: str | None) -> bool:
        if self._conv(conversation_id, owner) is None:
            return False
        del self._conversations[conversation_id]
        return True

    async def add_conversation_items(
        self, conversation_id: str, items: list[dict], *, owner: str | None
    ) -> list[dict] | None:
        check_items(items)
        conv = self._conv(conversation_id, owner)
        if conv is None:
            return None
        items = with_random_ids(items)
        conv.items.extend((item["id"], orjson.dumps(item)) for item in items)
        return items

    async def conversation_items(
        self,
        conversation_id: str,
        *,
        owner: str | None,
        limit: int = 20,
        after: str | None = None,
        order: str = "desc",
    ) -> dict | None:
        check_order(order, limit)
        conv = self._conv(conversation_id, owner)
        if conv is None:
            return None
        rows = list(conv.items) if order == "asc" else list(reversed(conv.items))
        if after is not None:
            index = next((i for i, (item_id, _) in enumerate(rows) if item_id == after), None)
            rows = [] if index is None else rows[index + 1 :]
        return page([loads(item) for _, item in rows[:limit]], limit, len(rows) > limit)

    async def all_conversation_items(self, conversation_id: str, *, owner: str | None) -> list[dict] | None:
        conv = self._conv(conversation_id, owner)
        return None if conv is None else [loads(item) for _, item in conv.items]

    async def get_conversation_item(self, conversation_id: str, item_id: str, *, owner: str | None) -> dict | None:
        conv = self._conv(conversation_id, owner)
        if conv is None or not usable_id(item_id):
            return None
        found = [item for iid, item in conv.items if iid == item_id]
        return loads(found[-1]) if found else None

    async def delete_conversation_item(self, conversation_id: str, item_id: str, *, owner: str | None) -> bool:
        conv = self._conv(conversation_id, owner)
        if conv is None or not usable_id(item_id):
            return False
        kept = [(iid, item) for iid, item in conv.items if iid != item_id]
        deleted = len(kept) != len(conv.items)
        conv.items = kept
        return deleted


# ------------------------------------------------------------------------------------------ retention


async def run_retention(store: ResponseStore, older_than_days: float, *, every_seconds: float = 3600.0) -> None:
    """Purge responses older than ``older_than_days`` now and then every ``every_seconds``, for ever
    (run it as a task in the app's lifespan and cancel it on shutdown).

    With several replicas each one purges; that is harmless (a DELETE of rows already gone deletes
    nothing) and keeps retention working when any replica is down."""
    while True:
        try:
            removed = await store.purge(older_than_days)
            if removed:
                log.info("retention: purged %d stored response(s) older than %g day(s)", removed, older_than_days)
        except Exception:
            log.warning("retention: purge failed; trying again later", exc_info=True)
        await asyncio.sleep(every_seconds)


async def run_heartbeat(
    store: ResponseStore, replica_id: str, *, every_seconds: float = 5.0, recover_after: float | None = None
) -> None:
    """Renew this replica's heartbeat every ``every_seconds``, for ever (a lifespan task, cancelled on
    shutdown). Keep ``every_seconds`` well below the ``stale_after`` that ``recover_orphans`` is given
    (default 30 s, i.e. six missed beats) so a busy replica is never taken for a dead one.

    With ``recover_after`` (seconds), each beat also runs ``recover_orphans(replica_id, recover_after)``,
    so the jobs of a replica that dies while this one runs end too, not only at the next start."""
    while True:
        try:
            await store.heartbeat(replica_id)
            if recover_after is not None:
                ended = await store.recover_orphans(replica_id, recover_after)
                if ended:
                    log.warning("recovery: %d background response(s) of a stopped replica failed: %s",
                                len(ended), ", ".join(ended))  # fmt: skip
        except Exception:
            log.warning("heartbeat of replica %s failed; trying again", replica_id, exc_info=True)
        await asyncio.sleep(every_seconds)


# ------------------------------------------------------------------------------------------ open_store


class StoreSpecError(ValueError):
    """A ``--store`` value that names no engine."""


def _sqlite_params(spec: str, query: str) -> dict:
    options: dict = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key == "batch_window_ms":
            options["batch_window"] = _window(spec, value)
        elif key == "max_batch":
            options["max_batch"] = _positive_int(spec, key, value)
        else:
            raise StoreSpecError(f"--store {spec!r}: unknown parameter {key!r} (batch_window_ms, max_batch)")
    return options


def _window(spec: str, value: str) -> float:
    try:
        ms = float(value)
    except ValueError:
        ms = -1.0
    if not ms >= 0:
        raise StoreSpecError(f"--store {spec!r}: batch_window_ms must be a number of milliseconds ≥ 0")
    return ms / 1000.0


def _positive_int(spec: str, key: str, value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise StoreSpecError(f"--store {spec!r}: {key} must be a positive integer")
    return int(value)


def open_store(spec: str | None = None) -> ResponseStore:
    """The engine a ``--store`` value names, not yet opened (call ``await store.open()``).

    ``None`` or empty means the default, SQLite in ./responses-bridge.db. SQL engines take
    ``?batch_window_ms=N`` (how long a group commit waits for more writes; default 0: the batch is
    whatever queued during the previous commit) and ``?max_batch=N`` (writes per transaction, default
    256; 1 turns group commit off).
    """
    spec = (spec or DEFAULT_STORE_SPEC).strip()
    lowered = spec.lower()
    if lowered == "none":
        return NullStore()
    if lowered == "memory":
        return MemoryStore()
    if lowered.startswith(("postgresql://", "postgres://")):
        from server.store_postgres import PostgresStore

        try:
            return PostgresStore(spec)
        except ValueError as exc:
            raise StoreSpecError(str(exc)) from exc
    path, _, query = spec.partition("?")
    if lowered.startswith("sqlite://"):
        from server.store_sqlite import SQLiteStore

        path = path[len("sqlite://") :]
        # sqlite:///relative.db → "relative.db"; sqlite:////abs/path.db → "/abs/path.db"
        if path.startswith("/"):
            path = path[1:]
        if not path:
            raise StoreSpecError(f"--store {spec!r}: no file path after sqlite://")
        return SQLiteStore(path, **_sqlite_params(spec, query))
    if path.lower().endswith((".db", ".sqlite", ".sqlite3")):
        from server.store_sqlite import SQLiteStore

        return SQLiteStore(path, **_sqlite_params(spec, query))
    raise StoreSpecError(
        f"--store {spec!r} is not understood: use none, memory, sqlite:///path/to/file.db, a path ending "
        "in .db, or postgresql://user@host:port/database"
    )


__all__ = [
    "CANCELLABLE_STATUSES",
    "DEFAULT_STALE_AFTER",
    "DEFAULT_STORE_SPEC",
    "MAX_ID_LENGTH",
    "MAX_JSON_DEPTH",
    "SERVER_RESTARTED",
    "TERMINAL_STATUSES",
    "ConversationNotFound",
    "ItemLookup",
    "MemoryStore",
    "NullStore",
    "ResponseStore",
    "StoreError",
    "StoreRefused",
    "StoreSpecError",
    "StoreUnavailable",
    "check_storable",
    "open_store",
    "run_heartbeat",
    "run_retention",
]
