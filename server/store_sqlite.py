"""The default store: one SQLite file, needing no set-up.

Why it looks like this:

* stdlib ``sqlite3`` is blocking, so every call runs on ONE dedicated worker thread (a thread pool of
  one). One thread means one connection, no locking between our own calls, and calls applied in the
  order they were made; the event loop only awaits a future.
* WAL mode lets readers (another process, a backup, ``sqlite3`` on the command line) work while we
  write, and ``busy_timeout`` makes a second server process on the same file wait instead of failing.
* ``synchronous=FULL``: in WAL mode NORMAL may lose the last commits on power loss (not on a process
  crash). The issue asks that an acknowledged response survive a restart, so a commit fsyncs the WAL
  before ``put`` returns. The cost is one fsync per stored response, small next to a model call.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

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

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    owner TEXT,
    created_at REAL NOT NULL,
    previous_response_id TEXT,
    status TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    response TEXT NOT NULL,
    input_items TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS responses_created_at ON responses (created_at);
CREATE TABLE IF NOT EXISTS items (
    item_id TEXT NOT NULL,
    response_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    owner TEXT,
    created_at REAL NOT NULL,
    item TEXT NOT NULL,
    PRIMARY KEY (response_id, position)
);
CREATE INDEX IF NOT EXISTS items_item_id ON items (item_id);
CREATE TABLE IF NOT EXISTS events (
    response_id TEXT NOT NULL,
    sequence_number INTEGER NOT NULL,
    event TEXT NOT NULL,
    PRIMARY KEY (response_id, sequence_number)
);
"""

CHAIN_SQL = """
WITH RECURSIVE chain(id, prev, depth) AS (
    SELECT id, previous_response_id, 0 FROM responses WHERE id = ? AND owner IS ?
    UNION ALL
    SELECT r.id, r.previous_response_id, c.depth + 1
    FROM chain AS c JOIN responses AS r ON r.id = c.prev AND r.owner IS ?
    WHERE c.depth < ?
)
SELECT c.prev, r.input_items, r.response FROM chain AS c JOIN responses AS r ON r.id = c.id
ORDER BY c.depth DESC
"""


class SQLiteStore(ItemLookup):
    """``--store sqlite:///path.db``: see the module docstring for the threading and durability choices."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None

    # -- plumbing ------------------------------------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise RuntimeError("SQLiteStore used before open()")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("SQLiteStore used before open()")
        return self._conn

    def _connect(self) -> None:
        if self.path.parent and not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a commit happens exactly where
        # the code says (and put() is durable when it returns).
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=30000")
        conn.executescript(SCHEMA)
        self._conn = conn

    async def open(self) -> None:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-store")
        if self._conn is None:
            await self._run(self._connect)

    async def close(self) -> None:
        if self._executor is None:
            return
        if self._conn is not None:
            await self._run(self._close_conn)
        self._executor.shutdown(wait=True)
        self._executor = None

    def _close_conn(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in one IMMEDIATE transaction (taking the write lock up front avoids the
        deadlock-prone upgrade from a read to a write lock when two processes share the file)."""
        conn = self._db()
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    # -- responses -----------------------------------------------------------------------------------

    async def put(self, response: dict, input_items: list[dict], *, owner: str | None) -> None:
        response_id = response["id"]
        items = with_item_ids(input_items, response_id)
        created = created_at_of(response)
        response_json = dumps(response)
        items_json = dumps(items)
        item_rows = [
            (item["id"], response_id, position, owner, created, dumps(item))
            for position, item in enumerate([*items, *(response.get("output") or [])])
            if isinstance(item, dict) and item.get("id")
        ]

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO responses (id, owner, created_at, previous_response_id, status, response, "
                "input_items) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                "owner = excluded.owner, created_at = excluded.created_at, "
                "previous_response_id = excluded.previous_response_id, status = excluded.status, "
                "response = excluded.response, input_items = excluded.input_items",
                (
                    response_id,
                    owner,
                    created,
                    response.get("previous_response_id"),
                    response.get("status"),
                    response_json,
                    items_json,
                ),
            )
            conn.execute("DELETE FROM items WHERE response_id = ?", (response_id,))
            conn.executemany("INSERT INTO items VALUES (?, ?, ?, ?, ?, ?)", item_rows)

        await self._run(self._write, write)

    async def get(self, response_id: str, *, owner: str | None) -> dict | None:
        def read() -> dict | None:
            row = self._db().execute(
                "SELECT response FROM responses WHERE id = ? AND owner IS ?", (response_id, owner)
            ).fetchone()
            return None if row is None else loads(row[0])

        return await self._run(read)

    async def delete(self, response_id: str, *, owner: str | None) -> bool:
        def write(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute("DELETE FROM responses WHERE id = ? AND owner IS ?", (response_id, owner))
            if cursor.rowcount == 0:
                return False
            conn.execute("DELETE FROM items WHERE response_id = ?", (response_id,))
            conn.execute("DELETE FROM events WHERE response_id = ?", (response_id,))
            return True

        return await self._run(self._write, write)

    async def input_items(self, response_id: str, *, owner: str | None) -> list[dict] | None:
        def read() -> list[dict] | None:
            row = self._db().execute(
                "SELECT input_items FROM responses WHERE id = ? AND owner IS ?", (response_id, owner)
            ).fetchone()
            return None if row is None else loads(row[0])

        return await self._run(read)

    async def conversation(self, response_id: str, *, owner: str | None) -> list[dict] | None:
        def read() -> list[dict] | None:
            rows = self._db().execute(CHAIN_SQL, (response_id, owner, owner, MAX_CHAIN_DEPTH)).fetchall()
            # Oldest first: the first row must start the chain, else a link is missing (or the
            # depth cap was hit on a cycle).
            if not rows or rows[0][0] is not None:
                return None
            return chain_items([(loads(items), loads(response)) for _, items, response in rows])

        return await self._run(read)

    async def get_items(self, item_ids: list[str], *, owner: str | None) -> dict[str, dict]:
        wanted = sorted(set(item_ids))
        if not wanted:
            return {}

        def read() -> dict[str, dict]:
            marks = ",".join("?" * len(wanted))
            rows = self._db().execute(
                f"SELECT item_id, item FROM items WHERE item_id IN ({marks}) AND owner IS ? "
                "ORDER BY created_at, rowid",
                (*wanted, owner),
            ).fetchall()
            return {item_id: loads(item) for item_id, item in rows}  # later rows win

        return await self._run(read)

    async def update_response(self, response: dict, *, owner: str | None) -> bool:
        response_id = response["id"]
        response_json = dumps(response)
        items = [item for item in response.get("output") or [] if isinstance(item, dict) and item.get("id")]

        def write(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "SELECT cancel_requested, status, created_at, input_items FROM responses "
                "WHERE id = ? AND owner IS ?",
                (response_id, owner),
            ).fetchone()
            if row is None or row[0] or row[1] == "cancelled":
                return False
            conn.execute(
                "UPDATE responses SET status = ?, response = ? WHERE id = ?",
                (response.get("status"), response_json, response_id),
            )
            n_inputs = len(loads(row[3]))
            conn.execute("DELETE FROM items WHERE response_id = ? AND position >= ?", (response_id, n_inputs))
            conn.executemany(
                "INSERT INTO items VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (item["id"], response_id, n_inputs + i, owner, row[2], dumps(item))
                    for i, item in enumerate(items)
                ],
            )
            return True

        return await self._run(self._write, write)

    async def request_cancel(self, response_id: str, *, owner: str | None) -> dict | None:
        def write(conn: sqlite3.Connection) -> dict | None:
            row = conn.execute(
                "SELECT response FROM responses WHERE id = ? AND owner IS ?", (response_id, owner)
            ).fetchone()
            if row is None:
                return None
            response = loads(row[0])
            if response.get("status") in CANCELLABLE_STATUSES:
                response = cancelled_copy(response)
                conn.execute(
                    "UPDATE responses SET status = 'cancelled', cancel_requested = 1, response = ? "
                    "WHERE id = ?",
                    (dumps(response), response_id),
                )
            return response

        return await self._run(self._write, write)

    async def cancel_requested(self, response_id: str) -> bool:
        def read() -> bool:
            row = self._db().execute(
                "SELECT cancel_requested FROM responses WHERE id = ?", (response_id,)
            ).fetchone()
            return row is None or bool(row[0])

        return await self._run(read)

    # -- events (background mode) --------------------------------------------------------------------

    async def append_events(self, response_id: str, events: list[dict]) -> None:
        rows = [(response_id, int(event["sequence_number"]), dumps(event)) for event in events]
        if not rows:
            return

        def write(conn: sqlite3.Connection) -> None:
            conn.executemany("INSERT OR REPLACE INTO events VALUES (?, ?, ?)", rows)

        await self._run(self._write, write)

    async def events(self, response_id: str, *, after: int | None) -> list[dict]:
        def read() -> list[dict]:
            rows = self._db().execute(
                "SELECT event FROM events WHERE response_id = ? AND sequence_number > ? "
                "ORDER BY sequence_number",
                (response_id, -1 if after is None else after),
            ).fetchall()
            return [loads(row[0]) for row in rows]

        return await self._run(read)

    # -- retention -----------------------------------------------------------------------------------

    async def purge(self, older_than_days: float) -> int:
        limit = cutoff(older_than_days)

        def write(conn: sqlite3.Connection) -> int:
            ids = [row[0] for row in conn.execute("SELECT id FROM responses WHERE created_at < ?", (limit,))]
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                conn.execute(f"DELETE FROM items WHERE response_id IN ({marks})", chunk)
                conn.execute(f"DELETE FROM events WHERE response_id IN ({marks})", chunk)
                conn.execute(f"DELETE FROM responses WHERE id IN ({marks})", chunk)
            return len(ids)

        return await self._run(self._write, write)
