"""The PostgreSQL engine's response operations: responses, their items, background events,
retention, replicas and recovery.

Imports only server/stores/base.py, server/stores/common.py, server/stores/limits.py,
server/stores/postgres_schema.py and server/stores/postgres_engine.py.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from server.stores.base import (
    CANCELLABLE_STATUSES,
    DEFAULT_STALE_AFTER,
    MAX_CHAIN_DEPTH,
    ConversationNotFound,
    StoreUnavailable,
)
from server.stores.common import (
    ResponseRows,
    appended_rows,
    cancelled_copy,
    chain_items,
    cutoff,
    dumps,
    item_rows,
    loads,
    output_items,
    replica_gone,
    response_rows,
    restarted_copy,
    restarted_event,
    this_host,
)
from server.stores.limits import check_id, check_storable, usable_id
from server.stores.postgres_engine import PostgresEngine, _Put, claim_positions
from server.stores.postgres_schema import CHAIN_SQL, INSERT_CONVERSATION_ITEM, INSERT_ITEM, NOW


class PostgresResponses(PostgresEngine):
    """Responses, background events and replicas in one PostgreSQL database."""


    async def put(
        self, response: dict, input_items: list[dict], *, owner: str | None, conversation_id: str | None = None
    ) -> None:
        check_storable(response, input_items, conversation_id=conversation_id)
        if self._queue is None:
            raise StoreUnavailable("PostgreSQL store used before open() or after close()")
        rows = response_rows(response, input_items, owner, self.replica_id, conversation=conversation_id is not None)
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Put(rows, conversation_id, future))
        await future

    async def get(self, response_id: str, *, owner: str | None) -> dict | None:
        if not usable_id(response_id):
            return None
        value = await self._attempt(
            "get",
            lambda conn: conn.fetchval(
                "SELECT response FROM responses WHERE id = $1 AND owner IS NOT DISTINCT FROM $2", response_id, owner
            ),
        )
        return None if value is None else loads(value)

    async def delete(self, response_id: str, *, owner: str | None) -> bool:
        if not usable_id(response_id):
            return False

        async def run(conn: Any) -> bool:
            async with conn.transaction():
                deleted = await conn.fetchval(
                    "DELETE FROM responses WHERE id = $1 AND owner IS NOT DISTINCT FROM $2 RETURNING id",
                    response_id,
                    owner,
                )
                if deleted is None:
                    return False
                await conn.execute("DELETE FROM events WHERE response_id = $1", response_id)
                return True

        return await self._attempt("delete", run)

    async def input_items(self, response_id: str, *, owner: str | None) -> list[dict] | None:
        if not usable_id(response_id):
            return None
        value = await self._attempt(
            "input_items",
            lambda conn: conn.fetchval(
                "SELECT input_items FROM responses WHERE id = $1 AND owner IS NOT DISTINCT FROM $2",
                response_id,
                owner,
            ),
        )
        return None if value is None else loads(value)

    async def conversation(self, response_id: str, *, owner: str | None) -> list[dict] | None:
        if not usable_id(response_id):
            return None
        rows = await self._attempt(
            "conversation", lambda conn: conn.fetch(CHAIN_SQL, response_id, owner, MAX_CHAIN_DEPTH)
        )
        if not rows or rows[0]["prev"] is not None:
            return None
        return chain_items([(loads(row["input_items"]), loads(row["response"])) for row in rows])

    async def get_items(self, item_ids: list[str], *, owner: str | None) -> dict[str, dict]:
        wanted = sorted({i for i in item_ids if usable_id(i)})
        if not wanted:
            return {}
        rows = await self._attempt(
            "get_items",
            lambda conn: conn.fetch(
                "SELECT item_id, item FROM items WHERE item_id = ANY($1::text[]) "
                "AND owner IS NOT DISTINCT FROM $2 ORDER BY created_at, response_id, position",
                wanted,
                owner,
            ),
        )
        return {row["item_id"]: loads(row["item"]) for row in rows}

    async def _update_response(
        self, response: dict, owner: str | None, conversation_id: str | None, given: list[dict] | None
    ) -> bool:
        response_id = response["id"]

        async def run(conn: Any) -> bool:
            async with conn.transaction():
                if conversation_id is not None:
                    # Lock the conversation before the response, the order a group commit takes
                    # them in, so the two never deadlock.
                    await conn.execute("SELECT 1 FROM conversations WHERE id = $1 FOR UPDATE", conversation_id)
                # FOR UPDATE serialises this against request_cancel on another replica: whichever
                # commits first wins, and a cancelled response is never overwritten.
                row = await conn.fetchrow(
                    "SELECT cancel_requested, status, created_at, input_items FROM responses "
                    "WHERE id = $1 AND owner IS NOT DISTINCT FROM $2 FOR UPDATE",
                    response_id,
                    owner,
                )
                if row is None or row["cancel_requested"] or row["status"] == "cancelled":
                    return False  # the cancel wins: nothing is written, nothing appended
                inputs = loads(row["input_items"]) if given is None else given
                if conversation_id is not None:
                    rows = ResponseRows(response_id, owner, (), [], appended_rows(response, inputs))
                    claimed = await claim_positions(conn, conversation_id, rows)
                    if claimed is None:  # raising rolls the transaction back: nothing is written
                        raise ConversationNotFound(conversation_id)
                    if claimed:
                        await conn.executemany(INSERT_CONVERSATION_ITEM, claimed)
                await conn.execute(
                    "UPDATE responses SET status = $2, response = $3::json, input_items = $4::json WHERE id = $1",
                    response_id,
                    response.get("status"),
                    dumps(response),
                    dumps(inputs),
                )
                # Re-index the output items (and the input items when new ones were given).
                start = len(inputs) if given is None else 0
                indexed = output_items(response) if given is None else [*given, *output_items(response)]
                await conn.execute("DELETE FROM items WHERE response_id = $1 AND position >= $2", response_id, start)
                indexed_rows = item_rows(indexed, response_id, owner, row["created_at"], start)
                if indexed_rows:
                    await conn.executemany(INSERT_ITEM, indexed_rows)
                return True

        return await self._attempt("update_response", run)

    async def request_cancel(self, response_id: str, *, owner: str | None) -> dict | None:
        if not usable_id(response_id):
            return None

        async def run(conn: Any) -> dict | None:
            async with conn.transaction():
                value = await conn.fetchval(
                    "SELECT response FROM responses WHERE id = $1 AND owner IS NOT DISTINCT FROM $2 FOR UPDATE",
                    response_id,
                    owner,
                )
                if value is None:
                    return None
                response = loads(value)
                if response.get("status") in CANCELLABLE_STATUSES:
                    response = cancelled_copy(response)
                    await conn.execute(
                        "UPDATE responses SET status = 'cancelled', cancel_requested = TRUE, "
                        "response = $2::json WHERE id = $1",
                        response_id,
                        dumps(response),
                    )
                return response

        return await self._attempt("request_cancel", run)

    async def cancel_requested(self, response_id: str) -> bool:
        if not usable_id(response_id):
            return True
        value = await self._attempt(
            "cancel_requested",
            lambda conn: conn.fetchval("SELECT cancel_requested FROM responses WHERE id = $1", response_id),
        )
        return value is None or bool(value)

    # -- events (background mode) --------------------------------------------------------------------

    async def append_events(self, response_id: str, events: list[dict]) -> None:
        rows = [(response_id, int(event["sequence_number"]), dumps(event)) for event in events]
        if not rows:
            return

        async def run(conn: Any) -> None:
            async with conn.transaction():
                await conn.executemany(
                    "INSERT INTO events VALUES ($1, $2, $3::json) ON CONFLICT (response_id, sequence_number) "
                    "DO UPDATE SET event = EXCLUDED.event",
                    rows,
                )

        await self._attempt("append_events", run)

    async def events(self, response_id: str, *, after: int | None) -> list[dict]:
        if not usable_id(response_id):
            return []
        rows = await self._attempt(
            "events",
            lambda conn: conn.fetch(
                "SELECT event FROM events WHERE response_id = $1 AND sequence_number > $2 ORDER BY sequence_number",
                response_id,
                -1 if after is None else after,
            ),
        )
        return [loads(row["event"]) for row in rows]

    # -- retention -----------------------------------------------------------------------------------

    async def purge(self, older_than_days: float) -> int:
        async def run(conn: Any) -> int:
            async with conn.transaction():
                ids = await conn.fetch(
                    "DELETE FROM responses WHERE created_at < $1 RETURNING id", cutoff(older_than_days)
                )
                if ids:
                    await conn.execute(
                        "DELETE FROM events WHERE response_id = ANY($1::text[])", [row["id"] for row in ids]
                    )
                return len(ids)

        return await self._attempt("purge", run)

    # -- replicas and recovery -----------------------------------------------------------------------

    async def register_replica(self, replica_id: str) -> None:
        check_id(replica_id, "replica_id")
        host, pid = this_host(), os.getpid()
        await self._attempt(
            "register_replica",
            lambda conn: conn.execute(
                f"INSERT INTO replicas VALUES ($1, $2, $3, {NOW}, {NOW}) ON CONFLICT (replica_id) DO UPDATE "
                "SET host = EXCLUDED.host, pid = EXCLUDED.pid, heartbeat_at = EXCLUDED.heartbeat_at",
                replica_id,
                host,
                pid,
            ),
        )
        self.replica_id = replica_id

    async def heartbeat(self, replica_id: str) -> None:
        host, pid = this_host(), os.getpid()
        await self._attempt(
            "heartbeat",
            lambda conn: conn.execute(
                f"INSERT INTO replicas VALUES ($1, $2, $3, {NOW}, {NOW}) ON CONFLICT (replica_id) DO UPDATE "
                "SET heartbeat_at = EXCLUDED.heartbeat_at",
                replica_id,
                host,
                pid,
            ),
        )

    async def recover_orphans(self, replica_id: str, stale_after: float = DEFAULT_STALE_AFTER) -> list[str]:
        if self.replica_id != replica_id:
            await self.register_replica(replica_id)

        async def run(conn: Any) -> list[str]:
            ended: list[str] = []
            async with conn.transaction():
                rows = await conn.fetch(
                    f"SELECT r.id, r.response, p.host, p.pid, {NOW} - p.heartbeat_at AS age "
                    "FROM responses AS r LEFT JOIN replicas AS p ON p.replica_id = r.owner_replica "
                    "WHERE r.status IN ('queued', 'in_progress') AND r.owner_replica IS DISTINCT FROM $1 "
                    "FOR UPDATE OF r",
                    replica_id,
                )
                for row in rows:
                    if not replica_gone(row["host"], row["pid"], row["age"], stale_after):
                        continue
                    failed = restarted_copy(loads(row["response"]))
                    await conn.execute(
                        "UPDATE responses SET status = 'failed', cancel_requested = TRUE, response = $2::json "
                        "WHERE id = $1",
                        row["id"],
                        dumps(failed),
                    )
                    last = await conn.fetchval(
                        "SELECT MAX(sequence_number) FROM events WHERE response_id = $1", row["id"]
                    )
                    event = restarted_event(failed, last)
                    await conn.execute(
                        "INSERT INTO events VALUES ($1, $2, $3::json) ON CONFLICT (response_id, sequence_number) "
                        "DO UPDATE SET event = EXCLUDED.event",
                        row["id"],
                        event["sequence_number"],
                        dumps(event),
                    )
                    ended.append(row["id"])
            return ended

        return await self._attempt("recover_orphans", run)
