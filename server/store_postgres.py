"""PostgreSQL store, for many replicas behind one load balancer sharing one database.

* asyncpg (optional dependency ``responses-bridge[postgres]``) with a small pool: no thread, no blocking.
* The schema is created on ``open`` with ``CREATE … IF NOT EXISTS`` inside a transaction holding a
  transaction-level advisory lock, so replicas starting at the same moment do not race on the catalog
  (concurrent ``CREATE TABLE IF NOT EXISTS`` can otherwise fail with a unique violation).
* Commits are durable with PostgreSQL's default ``synchronous_commit=on``: ``put`` returns after the
  WAL record is flushed on the server.
* **Group commit**: ``put`` calls queue for one committer task, which writes everything that queued
  while its previous commit ran as one transaction, the rows of all responses in one pipelined
  ``executemany`` per table (one round trip each), and tells each writer only after COMMIT.
  ``?batch_window_ms=N`` makes it wait N ms for more; ``?max_batch=N`` caps a group (1 = off).
* Failures: every engine error is :class:`StoreUnavailable`. A lost connection (a restarted server,
  ``pg_terminate_backend``, a network cut) is retried once on a fresh pool connection first; writes are
  idempotent (upserts, and a conversation append is skipped when that response's items are already
  there), so a retry after a commit whose answer was lost does not write twice.
* ``?schema=NAME`` in the spec puts the tables in their own schema (set as the connections'
  ``search_path``); the tests use it to keep parallel runs apart.
* JSON columns are ``json`` (not ``jsonb``) so a response comes back with its keys in the order it was
  stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from server.store_base import (
    CANCELLABLE_STATUSES,
    DEFAULT_STALE_AFTER,
    MAX_CHAIN_DEPTH,
    ConversationNotFound,
    ItemLookup,
    StoreError,
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
    dumps,
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

T = TypeVar("T")

log = logging.getLogger("responses_bridge")

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
    input_items JSON NOT NULL,
    owner_replica TEXT
);
ALTER TABLE responses ADD COLUMN IF NOT EXISTS owner_replica TEXT;
CREATE INDEX IF NOT EXISTS responses_created_at ON responses (created_at);
CREATE INDEX IF NOT EXISTS responses_running ON responses (status) WHERE status IN ('queued', 'in_progress');
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
CREATE TABLE IF NOT EXISTS replicas (
    replica_id TEXT PRIMARY KEY,
    host TEXT,
    pid INTEGER,
    started_at DOUBLE PRECISION NOT NULL,
    heartbeat_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    owner TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    metadata JSON NOT NULL,
    next_position INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS conversation_items (
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    item_id TEXT NOT NULL,
    response_id TEXT,
    item JSON NOT NULL,
    PRIMARY KEY (conversation_id, position)
);
CREATE INDEX IF NOT EXISTS conversation_items_item_id ON conversation_items (conversation_id, item_id);
CREATE INDEX IF NOT EXISTS conversation_items_response ON conversation_items (conversation_id, response_id);
"""

#: Database time in epoch seconds: heartbeats are compared on one clock, the server's.
NOW = "extract(epoch from clock_timestamp())"

UPSERT_RESPONSE = (
    "INSERT INTO responses (id, owner, created_at, previous_response_id, status, response, input_items, "
    "owner_replica) VALUES ($1, $2, $3, $4, $5, $6::json, $7::json, $8) ON CONFLICT (id) DO UPDATE "
    "SET owner = EXCLUDED.owner, created_at = EXCLUDED.created_at, "
    "previous_response_id = EXCLUDED.previous_response_id, status = EXCLUDED.status, "
    "response = EXCLUDED.response, input_items = EXCLUDED.input_items, "
    "owner_replica = COALESCE(EXCLUDED.owner_replica, responses.owner_replica)"
)
INSERT_ITEM = "INSERT INTO items VALUES ($1, $2, $3, $4, $5, $6::json)"
INSERT_CONVERSATION_ITEM = "INSERT INTO conversation_items VALUES ($1, $2, $3, $4, $5::json)"

#: Writes per group unless the spec says (bounds one transaction's size and latency).
DEFAULT_MAX_BATCH = 256

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
    dsn, schema, _ = parse_spec(spec)
    return dsn, schema


def parse_spec(spec: str) -> tuple[str, str | None, dict[str, Any]]:
    """(DSN for asyncpg, schema or None, our options): ``schema``, ``batch_window_ms`` and
    ``max_batch`` are ours and taken out; every other parameter is left for asyncpg."""
    parts = urlsplit(spec)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = None
    options: dict[str, Any] = {}
    kept = []
    for key, value in query:
        if key == "schema":
            schema = value
        elif key == "batch_window_ms":
            try:
                ms = float(value)
            except ValueError:
                ms = -1.0
            if not ms >= 0:
                raise ValueError(f"--store: batch_window_ms must be a number of milliseconds ≥ 0, not {value!r}")
            options["batch_window"] = ms / 1000.0
        elif key == "max_batch":
            if not value.isdigit() or int(value) < 1:
                raise ValueError(f"--store: max_batch must be a positive integer, not {value!r}")
            options["max_batch"] = int(value)
        else:
            kept.append((key, value))
    if schema is not None and not _SCHEMA_NAME.match(schema):
        raise ValueError(f"--store: schema {schema!r} must be a plain SQL identifier")
    dsn = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(kept), parts.fragment))
    return dsn, schema, options




@dataclass
class _Put:
    """One queued ``put``: its rows, prepared before queueing so the committer only talks to the
    database."""

    response_id: str
    owner: str | None
    row: tuple
    item_rows: list[tuple]
    conversation_id: str | None
    appended: list[tuple[str, str]]
    future: asyncio.Future


def _settle(future: asyncio.Future, ok: bool, value: Any) -> None:
    if future.done():  # the writer was cancelled; its write happened (or not) all the same
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


class PostgresStore(ItemLookup):
    """``--store postgresql://…``: the engine to use when several server processes share state."""

    keeps_responses = True

    def __init__(
        self,
        spec: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        batch_window: float | None = None,
        max_batch: int | None = None,
        committers: int = 2,
    ) -> None:
        """``batch_window``: seconds the committer waits for more puts after the first of a group
        (default 0: the group is whatever queued while the previous commit ran); ``max_batch``: most
        puts in one transaction (1 turns group commit off). Both may come from the spec's query
        (``batch_window_ms``, ``max_batch``); an argument given here wins. ``committers``: groups
        in flight at once, each on its own connection (2: one group forms while the other commits)."""
        self.dsn, self.schema, options = parse_spec(spec)
        self.batch_window = batch_window if batch_window is not None else options.get("batch_window", 0.0)
        self.max_batch = max_batch if max_batch is not None else options.get("max_batch", DEFAULT_MAX_BATCH)
        if self.batch_window < 0 or self.max_batch < 1:
            raise ValueError("batch_window must be ≥ 0 and max_batch ≥ 1")
        self._min_size = min_size
        self._max_size = max_size
        self._pool: Any = None
        self._queue: asyncio.Queue[_Put | None] | None = None
        self._committers: list[asyncio.Task] = []
        self.committer_count = committers
        self._lost: tuple[type[BaseException], ...] = (OSError,)
        self._engine_error: tuple[type[BaseException], ...] = ()
        self.replica_id: str | None = None
        #: Commits done by the committer and puts they held (the benchmark and tests read these).
        self.commits = 0
        self.committed_writes = 0
        #: Connection losses retried (tests read it).
        self.retries = 0

    async def open(self) -> None:
        if self._pool is not None:
            return
        try:
            import asyncpg
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise RuntimeError(
                "--store postgresql:// needs asyncpg: pip install 'responses-bridge[postgres]'"
            ) from exc
        self._lost = (
            asyncpg.PostgresConnectionError,
            asyncpg.InterfaceError,
            asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, pg_terminate_backend
            asyncpg.InternalClientError,  # a pooled connection left mid-operation by the loss
            OSError,
        )
        self._engine_error = (asyncpg.PostgresError,)
        try:
            if self.schema:
                # The schema must exist before a connection can use it as search_path, so create it
                # on a plain connection first, under the same advisory lock as the tables.
                conn = await asyncpg.connect(self.dsn)
                try:
                    async with conn.transaction():
                        await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK_KEY)
                        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
                finally:
                    await conn.close()
            settings = {"search_path": f'"{self.schema}"'} if self.schema else None
            pool = await asyncpg.create_pool(
                self.dsn, min_size=self._min_size, max_size=self._max_size, server_settings=settings
            )
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK_KEY)
                await conn.execute(TABLES)
        except (*self._lost, *self._engine_error) as exc:
            raise _unavailable(exc, "open") from exc
        self._pool = pool
        self._queue = asyncio.Queue()
        self._committers = [
            asyncio.create_task(self._commit_loop(), name=f"postgres-store-committer-{n}")
            for n in range(self.committer_count)
        ]

    async def close(self) -> None:
        if self._committers and self._queue is not None:
            for _ in self._committers:
                self._queue.put_nowait(None)  # after every put already queued: one stop each
            for task in self._committers:
                with contextlib.suppress(Exception):
                    await task
            self._committers = []
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @property
    def pool(self) -> Any:
        if self._pool is None:
            raise StoreUnavailable("PostgreSQL store used before open() or after close()")
        return self._pool

    # -- plumbing ------------------------------------------------------------------------------------

    async def _attempt(self, what: str, fn: Callable[[Any], Awaitable[T]]) -> T:
        """``fn(conn)`` on a pool connection; a lost connection is retried once on a fresh one, and
        any engine error (then or otherwise) is :class:`StoreUnavailable`."""
        for attempt in (1, 2):
            try:
                async with self.pool.acquire() as conn:
                    return await fn(conn)
            except StoreError:
                raise
            except self._lost as exc:
                if attempt == 1:
                    self.retries += 1
                    log.warning("PostgreSQL store: connection lost during %s (%s); retrying once", what, exc)
                    # When one connection is lost the others usually are too (a restarted server):
                    # have the pool open fresh ones rather than hand out another dead one.
                    with contextlib.suppress(Exception):
                        await self.pool.expire_connections()
                    continue
                raise _unavailable(exc, what) from exc
            except self._engine_error as exc:
                raise _unavailable(exc, what) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def _commit_loop(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            job = await self._queue.get()
            if job is None:
                return
            group, stop = [job], False
            if self.batch_window > 0:
                deadline = loop.time() + self.batch_window
                while len(group) < self.max_batch and (left := deadline - loop.time()) > 0:
                    try:
                        nxt = await asyncio.wait_for(self._queue.get(), left)
                    except TimeoutError:
                        break
                    if nxt is None:
                        stop = True
                        break
                    group.append(nxt)
            while not stop and len(group) < self.max_batch and not self._queue.empty():
                nxt = self._queue.get_nowait()
                if nxt is None:
                    stop = True
                    break
                group.append(nxt)
            try:
                outcomes = await self._attempt("put", lambda conn, g=group: self._write_group(conn, g))
            except Exception as exc:
                for j in group:
                    _settle(j.future, False, exc)
            else:
                self.commits += 1
                self.committed_writes += len(group)
                for j, (ok, value) in zip(group, outcomes, strict=True):
                    _settle(j.future, ok, value)
            if stop:
                return

    async def _write_group(self, conn: Any, group: list[_Put]) -> list[tuple[bool, Any]]:
        """One transaction for a group of puts: conversation appends first (each conversation row
        locked, in id order so two replicas never deadlock, positions taken from its counter), then
        every response row in one pipelined executemany, their items in another."""
        outcomes: list[tuple[bool, Any]] = [(True, None)] * len(group)
        async with conn.transaction():
            conversation_rows: list[tuple] = []
            refused: set[int] = set()
            appending = sorted(
                (i for i, j in enumerate(group) if j.conversation_id is not None),
                key=lambda i: group[i].conversation_id or "",
            )
            for i in appending:
                j = group[i]
                done = await conn.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM conversation_items WHERE conversation_id = $1 AND response_id = $2)",
                    j.conversation_id,
                    j.response_id,
                )
                if done:  # a retried group whose first commit did land: never append twice
                    continue
                start = await conn.fetchval(
                    "UPDATE conversations SET next_position = next_position + $3 "
                    "WHERE id = $1 AND owner IS NOT DISTINCT FROM $2 RETURNING next_position - $3",
                    j.conversation_id,
                    j.owner,
                    len(j.appended),
                )
                if start is None:
                    outcomes[i] = (False, ConversationNotFound(j.conversation_id or ""))
                    refused.add(i)
                    continue
                conversation_rows.extend(
                    (j.conversation_id, start + k, item_id, j.response_id, item)
                    for k, (item_id, item) in enumerate(j.appended)
                )
            latest: dict[str, _Put] = {}
            for i, j in enumerate(group):
                if i not in refused:
                    latest[j.response_id] = j  # the same id twice in a group: the later put wins
            kept = [latest[rid] for rid in sorted(latest)]
            if kept:
                await conn.executemany(UPSERT_RESPONSE, [j.row for j in kept])
                await conn.execute("DELETE FROM items WHERE response_id = ANY($1::text[])", [j.response_id for j in kept])
                item_rows = [row for j in kept for row in j.item_rows]
                if item_rows:
                    await conn.executemany(INSERT_ITEM, item_rows)
            if conversation_rows:
                await conn.executemany(INSERT_CONVERSATION_ITEM, conversation_rows)
        return outcomes

    # -- responses -----------------------------------------------------------------------------------

    async def put(
        self, response: dict, input_items: list[dict], *, owner: str | None, conversation_id: str | None = None
    ) -> None:
        check_storable(response, input_items, conversation_id=conversation_id)
        if self._queue is None:
            raise StoreUnavailable("PostgreSQL store used before open() or after close()")
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
            self.replica_id if running else None,
        )
        item_rows = [
            (item["id"], response_id, position, owner, created, dumps(item))
            for position, item in enumerate([*items, *(response.get("output") or [])])
            if isinstance(item, dict) and item.get("id")
        ]
        appended = [(item["id"], dumps(item)) for item in response_items(response, items)]
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Put(response_id, owner, row, item_rows, conversation_id, appended, future))
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

    async def update_response(self, response: dict, *, owner: str | None) -> bool:
        response_id = response.get("id")
        if not usable_id(response_id):
            return False
        check_storable(response, [])
        items = [item for item in response.get("output") or [] if isinstance(item, dict) and item.get("id")]

        async def run(conn: Any) -> bool:
            async with conn.transaction():
                # FOR UPDATE serialises this against request_cancel on another replica: whichever
                # commits first wins, and a cancelled response is never overwritten.
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
                        INSERT_ITEM,
                        [
                            (item["id"], response_id, n_inputs + i, owner, row["created_at"], dumps(item))
                            for i, item in enumerate(items)
                        ],
                    )
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

    # -- conversations -------------------------------------------------------------------------------

    async def create_conversation(self, conversation: dict, items: list[dict], *, owner: str | None) -> list[dict]:
        conversation_id = conversation.get("id")
        check_id(conversation_id, "id")
        metadata = check_metadata(conversation.get("metadata"))
        check_items(items)
        items = with_random_ids(items)
        created = float(conversation.get("created_at") or time.time())

        async def run(conn: Any) -> None:
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO conversations (id, owner, created_at, metadata, next_position) "
                    "VALUES ($1, $2, $3, $4::json, $5)",
                    conversation_id,
                    owner,
                    created,
                    dumps(metadata),
                    len(items),
                )
                if items:
                    await conn.executemany(
                        INSERT_CONVERSATION_ITEM,
                        [(conversation_id, k, item["id"], None, dumps(item)) for k, item in enumerate(items)],
                    )

        await self._attempt("create_conversation", run)
        return items

    async def get_conversation(self, conversation_id: str, *, owner: str | None) -> dict | None:
        if not usable_id(conversation_id):
            return None
        row = await self._attempt(
            "get_conversation",
            lambda conn: conn.fetchrow(
                "SELECT created_at, metadata FROM conversations WHERE id = $1 AND owner IS NOT DISTINCT FROM $2",
                conversation_id,
                owner,
            ),
        )
        return None if row is None else conversation_object(conversation_id, row["created_at"], loads(row["metadata"]))

    async def update_conversation(self, conversation_id: str, metadata: dict, *, owner: str | None) -> dict | None:
        metadata = check_metadata(metadata)
        if not usable_id(conversation_id):
            return None
        created = await self._attempt(
            "update_conversation",
            lambda conn: conn.fetchval(
                "UPDATE conversations SET metadata = $3::json WHERE id = $1 AND owner IS NOT DISTINCT FROM $2 "
                "RETURNING created_at",
                conversation_id,
                owner,
                dumps(metadata),
            ),
        )
        return None if created is None else conversation_object(conversation_id, created, metadata)

    async def delete_conversation(self, conversation_id: str, *, owner: str | None) -> bool:
        if not usable_id(conversation_id):
            return False
        deleted = await self._attempt(
            "delete_conversation",
            lambda conn: conn.fetchval(
                "DELETE FROM conversations WHERE id = $1 AND owner IS NOT DISTINCT FROM $2 RETURNING id",
                conversation_id,
                owner,
            ),
        )
        return deleted is not None  # its items go with it (ON DELETE CASCADE)

    async def add_conversation_items(
        self, conversation_id: str, items: list[dict], *, owner: str | None
    ) -> list[dict] | None:
        check_items(items)
        if not usable_id(conversation_id):
            return None
        items = with_random_ids(items)

        async def run(conn: Any) -> bool:
            async with conn.transaction():
                start = await conn.fetchval(
                    "UPDATE conversations SET next_position = next_position + $3 "
                    "WHERE id = $1 AND owner IS NOT DISTINCT FROM $2 RETURNING next_position - $3",
                    conversation_id,
                    owner,
                    len(items),
                )
                if start is None:
                    return False
                if items:
                    await conn.executemany(
                        INSERT_CONVERSATION_ITEM,
                        [(conversation_id, start + k, item["id"], None, dumps(item)) for k, item in enumerate(items)],
                    )
                return True

        return items if await self._attempt("add_conversation_items", run) else None

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
        if not usable_id(conversation_id):
            return None
        op, direction = (">", "ASC") if order == "asc" else ("<", "DESC")

        async def run(conn: Any) -> dict | None:
            exists = await conn.fetchval(
                "SELECT 1 FROM conversations WHERE id = $1 AND owner IS NOT DISTINCT FROM $2", conversation_id, owner
            )
            if exists is None:
                return None
            if after is None:
                bound = -1 if order == "asc" else 2**31 - 1
            else:
                found = None if not usable_id(after) else await conn.fetchval(
                    "SELECT position FROM conversation_items WHERE conversation_id = $1 AND item_id = $2 "
                    "ORDER BY position DESC LIMIT 1",
                    conversation_id,
                    after,
                )
                if found is None:
                    return page([], limit, False)
                bound = found
            rows = await conn.fetch(
                f"SELECT item FROM conversation_items WHERE conversation_id = $1 AND position {op} $2 "
                f"ORDER BY position {direction} LIMIT $3",
                conversation_id,
                bound,
                limit + 1,
            )
            return page([loads(row["item"]) for row in rows[:limit]], limit, len(rows) > limit)

        return await self._attempt("conversation_items", run)

    async def all_conversation_items(self, conversation_id: str, *, owner: str | None) -> list[dict] | None:
        if not usable_id(conversation_id):
            return None

        async def run(conn: Any) -> list[dict] | None:
            # One indexed read: the conversation's row is joined in so ownership is checked in the
            # same statement; a conversation without items still answers (the LEFT JOIN's one row).
            rows = await conn.fetch(
                "SELECT i.item FROM conversations AS c LEFT JOIN conversation_items AS i "
                "ON i.conversation_id = c.id WHERE c.id = $1 AND c.owner IS NOT DISTINCT FROM $2 "
                "ORDER BY i.position",
                conversation_id,
                owner,
            )
            if not rows:
                return None
            return [loads(row["item"]) for row in rows if row["item"] is not None]

        return await self._attempt("all_conversation_items", run)

    async def get_conversation_item(self, conversation_id: str, item_id: str, *, owner: str | None) -> dict | None:
        if not (usable_id(conversation_id) and usable_id(item_id)):
            return None
        value = await self._attempt(
            "get_conversation_item",
            lambda conn: conn.fetchval(
                "SELECT i.item FROM conversation_items AS i JOIN conversations AS c ON c.id = i.conversation_id "
                "WHERE i.conversation_id = $1 AND c.owner IS NOT DISTINCT FROM $2 AND i.item_id = $3 "
                "ORDER BY i.position DESC LIMIT 1",
                conversation_id,
                owner,
                item_id,
            ),
        )
        return None if value is None else loads(value)

    async def delete_conversation_item(self, conversation_id: str, item_id: str, *, owner: str | None) -> bool:
        if not (usable_id(conversation_id) and usable_id(item_id)):
            return False
        deleted = await self._attempt(
            "delete_conversation_item",
            lambda conn: conn.fetch(
                "DELETE FROM conversation_items AS i USING conversations AS c "
                "WHERE c.id = i.conversation_id AND i.conversation_id = $1 AND c.owner IS NOT DISTINCT FROM $2 "
                "AND i.item_id = $3 RETURNING i.position",
                conversation_id,
                owner,
                item_id,
            ),
        )
        return bool(deleted)


def _unavailable(exc: BaseException, what: str) -> StoreUnavailable:
    error = StoreUnavailable(f"PostgreSQL store failed during {what}: {type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error
