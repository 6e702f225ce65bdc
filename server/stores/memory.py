"""``--store memory``: the engine in this process's dicts, for tests and throw-away runs.

Imports only server/stores/base.py, server/stores/limits.py, server/stores/common.py and
server/stores/engine.py.
"""

from __future__ import annotations

import os
import time

import orjson

from server.stores.base import (
    CANCELLABLE_STATUSES,
    DEFAULT_STALE_AFTER,
    MAX_CHAIN_DEPTH,
    ConversationNotFound,
)
from server.stores.common import (
    cancelled_copy,
    chain_items,
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
    with_item_ids,
)
from server.stores.engine import StoreEngine
from server.stores.limits import check_metadata, check_storable, usable_id


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


class MemoryStore(StoreEngine):
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
        conv = None if conversation_id is None else self._appending_to(conversation_id, owner)
        record = _Record(orjson.dumps(response), orjson.dumps(items), owner, created_at_of(response))
        old = self._records.get(response_id)
        if old is not None:
            record.cancel_requested = old.cancel_requested
            record.owner_replica = old.owner_replica
        if response.get("status") in CANCELLABLE_STATUSES:
            record.owner_replica = self.replica_id
        self._records[response_id] = record
        if conv is not None:
            self._append(conv, response_id, response, items)

    def _appending_to(self, conversation_id: str, owner: str | None) -> _Conversation:
        conv = self._conversations.get(conversation_id)
        if conv is None or conv.owner != owner:
            raise ConversationNotFound(conversation_id)
        return conv

    @staticmethod
    def _append(conv: _Conversation, response_id: str, response: dict, input_items: list[dict]) -> None:
        if response_id not in conv.appended:  # never twice for one response
            conv.appended.add(response_id)
            conv.items.extend((item["id"], orjson.dumps(item)) for item in response_items(response, input_items))

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

    async def _update_response(
        self, response: dict, owner: str | None, conversation_id: str | None, input_items: list[dict] | None
    ) -> bool:
        record = self._visible(response["id"], owner)
        if record is None or record.cancel_requested or loads(record.response).get("status") == "cancelled":
            return False
        conv = None if conversation_id is None else self._appending_to(conversation_id, owner)
        if input_items is not None:
            record.input_items = orjson.dumps(input_items)
        record.response = orjson.dumps(response)
        if conv is not None:
            self._append(conv, response["id"], response, loads(record.input_items))
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

    async def _create_conversation(
        self, conversation_id: str, created_at: float, metadata: dict, items: list[dict], owner: str | None
    ) -> None:
        conv = _Conversation(owner, created_at, orjson.dumps(metadata))
        conv.items = [(item["id"], orjson.dumps(item)) for item in items]
        self._conversations[conversation_id] = conv

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

    async def _add_items(self, conversation_id: str, items: list[dict], owner: str | None) -> bool:
        conv = self._conv(conversation_id, owner)
        if conv is None:
            return False
        conv.items.extend((item["id"], orjson.dumps(item)) for item in items)
        return True

    async def _items_page(
        self, conversation_id: str, owner: str | None, limit: int, after: str | None, ascending: bool
    ) -> dict | None:
        conv = self._conv(conversation_id, owner)
        if conv is None:
            return None
        rows = list(conv.items) if ascending else list(reversed(conv.items))
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
