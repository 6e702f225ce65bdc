"""The PostgreSQL engine's core (for many replicas sharing one database): the pool, the retry on a
lost connection and group commit.

* asyncpg (optional dependency ``responses-bridge[postgres]``) with a small pool: no thread, no blocking.
* The schema is created on ``open`` with ``CREATE … IF NOT EXISTS`` inside a transaction holding a
  transaction-level advisory lock, so replicas starting at the same moment do not race on the catalog
  (concurrent ``CREATE TABLE IF NOT EXISTS`` can otherwise fail with a unique violation).
* Commits are durable with PostgreSQL's default ``synchronous_commit=on``: ``put`` returns after the
  WAL record is flushed on the server.
* **Group commit**: ``put`` calls queue for one committer task, which writes everything that queued
  while its previous commit ran as one statement (``PUT_GROUP``: one round trip, and the statement's
  own commit; a group with conversation appends is one transaction around it), and tells each writer
  only after the commit.
  ``?batch_window_ms=N`` makes it wait N ms for more; ``?max_batch=N`` caps a group (1 = off).
* Failures: every engine error is :class:`StoreUnavailable`. A lost connection (a restarted server,
  ``pg_terminate_backend``, a network cut) is retried once on a fresh pool connection first; writes are
  idempotent (upserts, and a conversation append is skipped when that response's items are already
  there), so a retry after a commit whose answer was lost does not write twice.
* ``?schema=NAME`` in the spec puts the tables in their own schema (set as the connections'
  ``search_path``); the tests use it to keep parallel runs apart.
* JSON columns are ``json`` (not ``jsonb``) so a response comes back with its keys in the order it was
  stored.

The operations live beside it (server/stores/postgres_responses.py,
server/stores/postgres_conversations.py) as subclasses of :class:`PostgresEngine`, joined in
server/stores/postgres.py. Imports only server/stores/base.py, server/stores/common.py,
and server/stores/postgres_schema.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from server.stores.base import ConversationNotFound, StoreError, StoreUnavailable
from server.stores.common import ResponseRows, settle, unavailable
from server.stores.engine import StoreEngine
from server.stores.postgres_schema import (
    DEFAULT_MAX_BATCH,
    INSERT_CONVERSATION_ITEM,
    PUT_GROUP,
    SCHEMA_LOCK_KEY,
    TABLES,
    parse_spec,
    put_group_args,
)

T = TypeVar("T")

log = logging.getLogger("responses_bridge")


@dataclass
class _Put:
    """One queued ``put``: its rows (prepared before queueing, so the committer only talks to the
    database), the conversation it appends to, and the future its writer awaits."""

    rows: ResponseRows
    conversation_id: str | None
    future: asyncio.Future


def _unavailable(exc: BaseException, what: str) -> StoreUnavailable:
    return unavailable("PostgreSQL", exc, what)


class PostgresEngine(StoreEngine):
    """The pool, ``_attempt`` (one retry on a lost connection) and the committer tasks."""

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
                    settle(j.future, False, exc)
            else:
                self.commits += 1
                self.committed_writes += len(group)
                for j, (ok, value) in zip(group, outcomes, strict=True):
                    settle(j.future, ok, value)
            if stop:
                return

    async def _write_group(self, conn: Any, group: list[_Put]) -> list[tuple[bool, Any]]:
        """One commit for a group of puts. Without conversation appends (almost every group) it is
        the single statement `PUT_GROUP`; with them, one transaction: the appends first (each
        conversation row locked, in id order so two replicas never deadlock, positions taken from
        its counter), then the same statement, then the conversation rows."""
        if all(j.conversation_id is None for j in group):
            await self._put_rows(conn, group)
            return [(True, None)] * len(group)
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
                claimed = await claim_positions(conn, j.conversation_id or "", j.rows)
                if claimed is None:
                    outcomes[i] = (False, ConversationNotFound(j.conversation_id or ""))
                    refused.add(i)
                    continue
                conversation_rows.extend(claimed)
            await self._put_rows(conn, [j for i, j in enumerate(group) if i not in refused])
            if conversation_rows:
                await conn.executemany(INSERT_CONVERSATION_ITEM, conversation_rows)
        return outcomes

    @staticmethod
    async def _put_rows(conn: Any, puts: list[_Put]) -> None:
        """The response and item rows of `puts` (`PUT_GROUP`); of an id put twice, the later put's."""
        latest: dict[str, _Put] = {}
        for j in puts:
            latest[j.rows.response_id] = j
        kept = [latest[rid] for rid in sorted(latest)]  # in id order: two replicas lock rows alike
        if kept:
            await conn.execute(PUT_GROUP, *put_group_args([j.rows.row for j in kept],
                                                          [row for j in kept for row in j.rows.item_rows]))  # fmt: skip


async def claim_positions(conn: Any, conversation_id: str, rows: ResponseRows) -> list[tuple] | None:
    """The conversation rows a finished response appends, at positions taken from the conversation's
    counter (its row stays locked until the transaction ends, so positions never collide across
    replicas). ``[]`` when that response's items are in already (a retried write whose first commit
    did land: never append twice); None when this owner has no such conversation."""
    done = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM conversation_items WHERE conversation_id = $1 AND response_id = $2)",
        conversation_id,
        rows.response_id,
    )
    if done:
        return []
    start = await conn.fetchval(
        "UPDATE conversations SET next_position = next_position + $3 "
        "WHERE id = $1 AND owner IS NOT DISTINCT FROM $2 RETURNING next_position - $3",
        conversation_id,
        rows.owner,
        len(rows.appended),
    )
    if start is None:
        return None
    return [
        (conversation_id, start + k, item_id, rows.response_id, item) for k, (item_id, item) in enumerate(rows.appended)
    ]
