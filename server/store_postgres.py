"""PostgreSQL store, for many replicas behind one load balancer sharing one database.

* asyncpg (optional dependency ``responses-bridge[postgres]``) with a small pool: no thread, no blocking.
* The schema is created on ``open`` with ``CREATE … IF NOT EXISTS`` inside a transaction holding a
  transaction-level advisory lock, so replicas starting at the same moment do not race on the catalog
  (concurrent ``CREATE TABLE IF NOT EXISTS`` can otherwise fail with a unique violation).
* Commits are durable with PostgreSQL's default ``synchronous_commit=on``: ``put`` returns after the
  WAL record is flushed on the server.
* ``?schema=NAME`` in the spec puts the tables in their own schema (set as the connections'
  ``search_path``); the tests use it to keep parallel runs apart.
* JSON columns are ``json`` (not ``jsonb``) so a response comes back with its keys in the order it was
  stored.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from server.store import (
    CANCELLABLE_STATUSES,
    MAX_CHAIN_DEPTH,
    ItemLookup,
    cancelled_copy,
    chain_items,
    created_at_of,
    cutoff,
    dumps,
    loads,
    with_item_ids,
)

#: Advisory-lock key shared by every replica (any fixed 64-bit number; this one spells "rbstore").
SCHEMA_LOCK_KEY = 0x7262_7374_6F72_65

_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")

TABLES = """
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    owner TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    previous_response_id TEXT,
    status TEXT,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    response JSON NOT NULL,
    input_items JSON NOT NULL
);
CREATE INDEX IF NOT EXISTS responses_created_at ON responses (created_at);
CREATE TABLE IF NOT EXISTS items (
    item_id TEXT NOT NULL,
    response_id TEXT NOT NULL REFERENCES responses (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    owner TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    item JSON NOT NULL,
    PRIMARY KEY (response_id, position)
);
CREATE INDEX IF NOT EXISTS items_item_id ON items (item_id);
CREATE TABLE IF NOT EXISTS events (
    response_id TEXT NOT NULL,
    sequence_number INTEGER NOT NULL,
    event JSON NOT NULL,
    PRIMARY KEY (response_id, sequence_number)
);
"""

CHAIN_SQL = """
WITH RECURSIVE chain(id, prev, depth) AS (
    SELECT id, previous_response_id, 0 FROM responses WHERE id = $1 AND owner IS NOT DISTINCT FROM $2
    UNION ALL
    SELECT r.id, r.previous_response_id, c.depth + 1
    FROM chain AS c JOIN responses AS r ON r.id = c.prev AND r.owner IS NOT DISTINCT FROM $2
    WHERE c.depth < $3
)
SELECT c.prev, r.input_items, r.response FROM chain AS c JOIN responses AS r ON r.id = c.id
ORDER BY c.depth DESC
"""


def split_spec(spec: str) -> tuple[str, str | None]:
    """(DSN for asyncpg, schema name or None): ``schema`` is ours, asyncpg would take it for a server
    setting."""
    parts = urlsplit(spec)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = None
    kept = []
    for key, value in query:
        if key == "schema":
            schema = value
        else:
            kept.append((key, value))
    if schema is not None and not _SCHEMA_NAME.match(schema):
        raise ValueError(f"--store: schema {schema!r} must be a plain SQL identifier")
    dsn = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(kept), parts.fragment))
    return dsn, schema


class PostgresStore(ItemLookup):
    """``--store postgresql://…``: the engine to use when several server processes share state."""

    def __init__(self, spec: str, *, min_size: int = 1, max_size: int = 10) -> None:
        self.dsn, self.schema = split_spec(spec)
        self._min_size = min_size
        self._max_size = max_size
        self._pool: Any = None

    async def open(self) -> None:
        if self._pool is not None:
            return
        try:
            import asyncpg
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise RuntimeError(
                "--store postgresql:// needs asyncpg: pip install 'responses-bridge[postgres]'"
            ) from exc
        if self.schema:
            # The schema must exist before a connection can use it as search_path, so create it on a
            # plain connection first, under the same advisory lock as the tables.
            conn = await asyncpg.connect(self.dsn)
            try:
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK_KEY)
                    await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            finally:
                await conn.close()
        settings = {"search_path": f'"{self.schema}"'} if self.schema else None
        self._pool = await asyncpg.create_pool(
            self.dsn, min_size=self._min_size, max_size=self._max_size, server_settings=settings
        )
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK_KEY)
            await conn.execute(TABLES)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @property
    def pool(self) -> Any:
        if self._pool is None:
            raise RuntimeError("PostgresStore used before open()")
        return self._pool

    # -- responses -----------------------------------------------------------------------------------

    async def put(self, response: dict, input_items: list[dict], *, owner: str | None) -> None:
        response_id = response["id"]
        items = with_item_ids(input_items, response_id)
        created = created_at_of(response)
        item_rows = [
            (item["id"], response_id, position, owner, created, dumps(item))
            for position, item in enumerate([*items, *(response.get("output") or [])])
            if isinstance(item, dict) and item.get("id")
        ]
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO responses (id, owner, created_at, previous_response_id, status, response, "
                "input_items) VALUES ($1, $2, $3, $4, $5, $6::json, $7::json) ON CONFLICT (id) DO UPDATE "
                "SET owner = EXCLUDED.owner, created_at = EXCLUDED.created_at, "
                "previous_response_id = EXCLUDED.previous_response_id, status = EXCLUDED.status, "
                "response = EXCLUDED.response, input_items = EXCLUDED.input_items",
                response_id,
                owner,
                created,
                response.get("previous_response_id"),
                response.get("status"),
                dumps(response),
                dumps(items),
            )
            await conn.execute("DELETE FROM items WHERE response_id = $1", response_id)
            if item_rows:
                await conn.executemany("INSERT INTO items VALUES ($1, $2, $3, $4, $5, $6::json)", item_rows)

    async def get(self, response_id: str, *, owner: str | None) -> dict | None:
        value = await self.pool.fetchval(
            "SELECT response FROM responses WHERE id = $1 AND owner IS NOT DISTINCT FROM $2",
            response_id,
            owner,
        )
        return None if value is None else loads(value)

    async def delete(self, response_id: str, *, owner: str | None) -> bool:
        async with self.pool.acquire() as conn, conn.transaction():
            deleted = await conn.fetchval(
                "DELETE FROM responses WHERE id = $1 AND owner IS NOT DISTINCT FROM $2 RETURNING id",
                response_id,
                owner,
            )
            if deleted is None:
                return False
            await conn.execute("DELETE FROM events WHERE response_id = $1", response_id)
            return True

    async def input_items(self, response_id: str, *, owner: str | None) -> list[dict] | None:
        value = await self.pool.fetchval(
            "SELECT input_items FROM responses WHERE id = $1 AND owner IS NOT DISTINCT FROM $2",
            response_id,
            owner,
        )
        return None if value is None else loads(value)

    async def conversation(self, response_id: str, *, owner: str | None) -> list[dict] | None:
        rows = await self.pool.fetch(CHAIN_SQL, response_id, owner, MAX_CHAIN_DEPTH)
        if not rows or rows[0]["prev"] is not None:
            return None
        return chain_items([(loads(row["input_items"]), loads(row["response"])) for row in rows])

    async def get_items(self, item_ids: list[str], *, owner: str | None) -> dict[str, dict]:
        wanted = sorted(set(item_ids))
        if not wanted:
            return {}
        rows = await self.pool.fetch(
            "SELECT item_id, item FROM items WHERE item_id = ANY($1::text[]) "
            "AND owner IS NOT DISTINCT FROM $2 ORDER BY created_at, response_id, position",
            wanted,
            owner,
        )
        return {row["item_id"]: loads(row["item"]) for row in rows}

    async def update_response(self, response: dict, *, owner: str | None) -> bool:
        response_id = response["id"]
        items = [item for item in response.get("output") or [] if isinstance(item, dict) and item.get("id")]
        async with self.pool.acquire() as conn, conn.transaction():
            # FOR UPDATE serialises this against request_cancel on another replica: whichever commits
            # first wins, and a cancelled response is never overwritten.
            row = await conn.fetchrow(
                "SELECT cancel_requested, status, created_at, json_array_length(input_items) AS n "
                "FROM responses WHERE id = $1 AND owner IS NOT DISTINCT FROM $2 FOR UPDATE",
                response_id,
                owner,
            )
            if row is None or row["cancel_requested"] or row["status"] == "cancelled":
                return False
            await conn.execute(
                "UPDATE responses SET status = $2, response = $3::json WHERE id = $1",
                response_id,
                response.get("status"),
                dumps(response),
            )
            n_inputs = row["n"]
            await conn.execute(
                "DELETE FROM items WHERE response_id = $1 AND position >= $2", response_id, n_inputs
            )
            if items:
                await conn.executemany(
                    "INSERT INTO items VALUES ($1, $2, $3, $4, $5, $6::json)",
                    [
                        (item["id"], response_id, n_inputs + i, owner, row["created_at"], dumps(item))
                        for i, item in enumerate(items)
                    ],
                )
            return True

    async def request_cancel(self, response_id: str, *, owner: str | None) -> dict | None:
        async with self.pool.acquire() as conn, conn.transaction():
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
                    "UPDATE responses SET status = 'cancelled', cancel_requested = TRUE, response = $2::json "
                    "WHERE id = $1",
                    response_id,
                    dumps(response),
                )
            return response

    async def cancel_requested(self, response_id: str) -> bool:
        value = await self.pool.fetchval("SELECT cancel_requested FROM responses WHERE id = $1", response_id)
        return value is None or bool(value)

    # -- events (background mode) --------------------------------------------------------------------

    async def append_events(self, response_id: str, events: list[dict]) -> None:
        rows = [(response_id, int(event["sequence_number"]), dumps(event)) for event in events]
        if not rows:
            return
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.executemany(
                "INSERT INTO events VALUES ($1, $2, $3::json) ON CONFLICT (response_id, sequence_number) "
                "DO UPDATE SET event = EXCLUDED.event",
                rows,
            )

    async def events(self, response_id: str, *, after: int | None) -> list[dict]:
        rows = await self.pool.fetch(
            "SELECT event FROM events WHERE response_id = $1 AND sequence_number > $2 ORDER BY sequence_number",
            response_id,
            -1 if after is None else after,
        )
        return [loads(row["event"]) for row in rows]

    # -- retention -----------------------------------------------------------------------------------

    async def purge(self, older_than_days: float) -> int:
        async with self.pool.acquire() as conn, conn.transaction():
            ids = await conn.fetch(
                "DELETE FROM responses WHERE created_at < $1 RETURNING id", cutoff(older_than_days)
            )
            if ids:
                await conn.execute(
                    "DELETE FROM events WHERE response_id = ANY($1::text[])", [row["id"] for row in ids]
                )
            return len(ids)
