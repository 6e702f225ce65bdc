"""The default store: one SQLite file, needing no set-up.

Why it looks like this (docs/store.md has the whole story):

* stdlib ``sqlite3`` is blocking, so every call runs on ONE dedicated worker thread with one
  connection; the event loop only awaits a future.
* **Group commit**: writes queue up while a commit is in flight, and the worker runs the whole queue
  as one transaction (one fsync for many responses). Each writer's await returns only after the
  commit holding its write; a failed commit fails every writer in it with :class:`StoreUnavailable`.
  Each write runs inside a savepoint, so a write that raises its own error (a conversation gone)
  undoes only itself. ``batch_window`` (seconds, default 0) makes the worker wait that long for more
  writes after the first; ``max_batch`` caps a transaction (1 = one transaction per write).
* WAL mode lets readers (another process, a backup, ``sqlite3`` on the command line) work while we
  write, and ``busy_timeout`` makes a second server process on the same file wait instead of failing.
* ``synchronous=FULL``: in WAL mode NORMAL may lose the last commits on power loss (not on a process
  crash). An acknowledged response must survive, so every commit fsyncs the WAL before the writers
  are told.
* Every ``sqlite3`` error (disk full, read-only file, I/O error) becomes :class:`StoreUnavailable`.
"""

from __future__ import annotations

import asyncio
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from server.store_base import (
    CANCELLABLE_STATUSES,
    DEFAULT_STALE_AFTER,
    MAX_CHAIN_DEPTH,
    ConversationNotFound,
    ItemLookup,
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

SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    owner TEXT,
    created_at REAL NOT NULL,
    previous_response_id TEXT,
    status TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    response TEXT NOT NULL,
    input_items TEXT NOT NULL,
    owner_replica TEXT
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
CREATE TABLE IF NOT EXISTS replicas (
    replica_id TEXT PRIMARY KEY,
    host TEXT,
    pid INTEGER,
    started_at REAL NOT NULL,
    heartbeat_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    owner TEXT,
    created_at REAL NOT NULL,
    metadata TEXT NOT NULL,
    next_position INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS conversation_items (
    conversation_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    item_id TEXT NOT NULL,
    response_id TEXT,
    item TEXT NOT NULL,
    PRIMARY KEY (conversation_id, position)
);
CREATE INDEX IF NOT EXISTS conversation_items_item_id ON conversation_items (conversation_id, item_id);
CREATE INDEX IF NOT EXISTS conversation_items_response ON conversation_items (conversation_id, response_id);
"""

#: Columns added after the first release: added to an older file on open.
MIGRATIONS = {"responses": {"owner_replica": "TEXT"}}

#: Created after MIGRATIONS ran (it names a column an old file lacks until then).
POST_MIGRATION = """
CREATE INDEX IF NOT EXISTS responses_running ON responses (status) WHERE status IN ('queued', 'in_progress');
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

#: Writes per transaction unless the caller says (a bound on one transaction's size and latency).
DEFAULT_MAX_BATCH = 256


@dataclass
class _Job:
    fn: Callable[..., Any]
    args: tuple
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    write: bool
    outcome: tuple[bool, Any] = field(default=(False, None))


def _settle(future: asyncio.Future, ok: bool, value: Any) -> None:
    if future.done():  # the awaiting task was cancelled; its write still happened (or not)
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


def _unavailable(exc: BaseException) -> StoreUnavailable:
    error = StoreUnavailable(f"SQLite store failed: {exc}")
    error.__cause__ = exc
    return error


class SQLiteStore(ItemLookup):
    """``--store sqlite:///path.db``: see the module docstring for the threading and durability choices."""

    keeps_responses = True

    def __init__(
        self, path: str | Path, *, batch_window: float = 0.0, max_batch: int = DEFAULT_MAX_BATCH
    ) -> None:
        """``batch_window``: seconds the worker waits for more writes after the first of a group
        (0: none, the group is whatever queued while the previous commit ran). ``max_batch``: most
        writes in one transaction (1 turns group commit off)."""
        if batch_window < 0 or max_batch < 1:
            raise ValueError("batch_window must be ≥ 0 and max_batch ≥ 1")
        self.path = Path(path)
        self.batch_window = batch_window
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        self.replica_id: str | None = None
        #: Commits done and writes committed (the benchmark and tests read these).
        self.commits = 0
        self.committed_writes = 0

    # -- the worker thread ---------------------------------------------------------------------------

    def _worker(self) -> None:
        stop = False
        while not stop:
            job = self._queue.get()
            if job is None:
                break
            jobs = [job]
            if job.write and self.batch_window > 0:
                deadline = time.monotonic() + self.batch_window
                while len(jobs) < self.max_batch and (left := deadline - time.monotonic()) > 0:
                    try:
                        nxt = self._queue.get(timeout=left)
                    except queue.Empty:
                        break
                    if nxt is None:
                        stop = True
                        break
                    jobs.append(nxt)
            while not stop and len(jobs) < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                jobs.append(nxt)
            try:
                writes = [j for j in jobs if j.write]
                if writes:
                    self._commit_group(writes)
                for j in jobs:
                    if not j.write:
                        self._read(j)
            except BaseException as exc:  # a bug here must not leave writers waiting for ever
                for j in jobs:
                    if j.outcome[1] is None and not j.outcome[0]:
                        j.outcome = (False, StoreUnavailable(f"SQLite store worker failed: {exc!r}"))
            for j in jobs:
                try:
                    j.loop.call_soon_threadsafe(_settle, j.future, *j.outcome)
                except RuntimeError:  # that event loop is closed: nobody is waiting any more
                    pass
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _read(self, job: _Job) -> None:
        try:
            job.outcome = (True, job.fn(*job.args))
        except sqlite3.Error as exc:
            job.outcome = (False, _unavailable(exc))
        except BaseException as exc:
            job.outcome = (False, exc)

    def _commit_group(self, writes: list[_Job]) -> None:
        """One transaction for ``writes``: each in a savepoint (its own error undoes only itself), one
        COMMIT (one fsync) for all; an engine error anywhere fails the whole group."""
        conn = self._conn
        if conn is None:
            for job in writes:
                job.outcome = (False, StoreUnavailable("SQLite store used before open() or after close()"))
            return
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job in writes:
                conn.execute("SAVEPOINT w")
                try:
                    job.outcome = (True, job.fn(conn, *job.args))
                except sqlite3.Error:
                    raise
                except Exception as exc:
                    conn.execute("ROLLBACK TO w")
                    job.outcome = (False, exc)
                conn.execute("RELEASE w")
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            error = _unavailable(exc)
            for job in writes:
                job.outcome = (False, error)
            return
        self.commits += 1
        self.committed_writes += len(writes)

    async def _submit(self, fn: Callable[..., T], args: tuple, *, write: bool) -> T:
        if self._thread is None:
            raise StoreUnavailable("SQLite store used before open() or after close()")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put(_Job(fn, args, future, loop, write))
        return await future

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the worker thread, outside any transaction (reads)."""
        return await self._submit(fn, args, write=False)

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` in the next group transaction; returns once that transaction committed."""
        return await self._submit(fn, (), write=True)

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreUnavailable("SQLite store used before open() or after close()")
        return self._conn

    def _connect(self) -> None:
        if self.path.parent and not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a commit happens exactly where
        # the code says (and the writers are told only after it).
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=30.0, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=30000")
            conn.executescript(SCHEMA)
            for table, columns in MIGRATIONS.items():
                have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
                for column, kind in columns.items():
                    if column not in have:
                        conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
            conn.executescript(POST_MIGRATION)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    async def open(self) -> None:
        if self._thread is None:
            self._queue = queue.SimpleQueue()
            self._thread = threading.Thread(target=self._worker, name="sqlite-store", daemon=True)
            self._thread.start()
        if self._conn is None:
            await self._run(self._connect)

    async def close(self) -> None:
        thread = self._thread
        if thread is None:
            return
        self._thread = None
        self._queue.put(None)
        await asyncio.to_thread(thread.join)

    # -- responses -----------------------------------------------------------------------------------

    def _put_rows(self, response: dict, input_items: list[dict], owner: str | None) -> Callable:
        response_id = response["id"]
        items = with_item_ids(input_items, response_id)
        created = created_at_of(response)
        running = response.get("status") in CANCELLABLE_STATUSES
        replica = self.replica_id if running else None
        row = (
            response_id,
            owner,
            created,
            response.get("previous_response_id"),
            response.get("status"),
            dumps(response),
            dumps(items),
            replica,
        )
        item_rows = [
            (item["id"], response_id, position, owner, created, dumps(item))
            for position, item in enumerate([*items, *(response.get("output") or [])])
            if isinstance(item, dict) and item.get("id")
        ]
        appended = [(item["id"], dumps(item)) for item in response_items(response, items)]

        def write(conn: sqlite3.Connection, conversation_id: str | None = None) -> None:
            if conversation_id is not None:
                self._append_for_response(conn, conversation_id, owner, response_id, appended)
            conn.execute(
                "INSERT INTO responses (id, owner, created_at, previous_response_id, status, response, "
                "input_items, owner_replica) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                "owner = excluded.owner, created_at = excluded.created_at, "
                "previous_response_id = excluded.previous_response_id, status = excluded.status, "
                "response = excluded.response, input_items = excluded.input_items, "
                "owner_replica = COALESCE(excluded.owner_replica, responses.owner_replica)",
                row,
            )
            conn.execute("DELETE FROM items WHERE response_id = ?", (response_id,))
            conn.executemany("INSERT INTO items VALUES (?, ?, ?, ?, ?, ?)", item_rows)

        return write

    @staticmethod
    def _append_for_response(
        conn: sqlite3.Connection,
        conversation_id: str,
        owner: str | None,
        response_id: str,
        appended: list[tuple[str, str]],
    ) -> None:
        row = conn.execute(
            "SELECT next_position FROM conversations WHERE id = ? AND owner IS ?", (conversation_id, owner)
        ).fetchone()
        if row is None:
            raise ConversationNotFound(conversation_id)
        done = conn.execute(
            "SELECT 1 FROM conversation_items WHERE conversation_id = ? AND response_id = ? LIMIT 1",
            (conversation_id, response_id),
        ).fetchone()
        if done is not None:  # stored before (a retried put): never append twice
            return
        _insert_conversation_items(conn, conversation_id, row[0], appended, response_id)

    async def put(
        self, response: dict, input_items: list[dict], *, owner: str | None, conversation_id: str | None = None
    ) -> None:
        check_storable(response, input_items, conversation_id=conversation_id)
        write = self._put_rows(response, input_items, owner)
        await self._submit(write, (conversation_id,), write=True)

    async def get(self, response_id: str, *, owner: str | None) -> dict | None:
        if not usable_id(response_id):
            return None

        def read() -> dict | None:
            row = self._db().execute(
                "SELECT response FROM responses WHERE id = ? AND owner IS ?", (response_id, owner)
            ).fetchone()
            return None if row is None else loads(row[0])

        return await self._run(read)

    async def delete(self, response_id: str, *, owner: str | None) -> bool:
        if not usable_id(response_id):
            return False

        def write(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute("DELETE FROM responses WHERE id = ? AND owner IS ?", (response_id, owner))
            if cursor.rowcount == 0:
                return False
            conn.execute("DELETE FROM items WHERE response_id = ?", (response_id,))
            conn.execute("DELETE FROM events WHERE response_id = ?", (response_id,))
            return True

        return await self._write(write)

    async def input_items(self, response_id: str, *, owner: str | None) -> list[dict] | None:
        if not usable_id(response_id):
            return None

        def read() -> list[dict] | None:
            row = self._db().execute(
                "SELECT input_items FROM responses WHERE id = ? AND owner IS ?", (response_id, owner)
            ).fetchone()
            return None if row is None else loads(row[0])

        return await self._run(read)

    async def conversation(self, response_id: str, *, owner: str | None) -> list[dict] | None:
        if not usable_id(response_id):
            return None

        def read() -> list[dict] | None:
            rows = self._db().execute(CHAIN_SQL, (response_id, owner, owner, MAX_CHAIN_DEPTH)).fetchall()
            # Oldest first: the first row must start the chain, else a link is missing (or the
            # depth cap was hit on a cycle).
            if not rows or rows[0][0] is not None:
                return None
            return chain_items([(loads(items), loads(response)) for _, items, response in rows])

        return await self._run(read)

    async def get_items(self, item_ids: list[str], *, owner: str | None) -> dict[str, dict]:
        wanted = sorted({i for i in item_ids if usable_id(i)})
        if not wanted:
            return {}

        def read() -> dict[str, dict]:
            found: dict[str, dict] = {}
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._db().execute(
                    f"SELECT item_id, item FROM items WHERE item_id IN ({marks}) AND owner IS ? "
                    "ORDER BY created_at, rowid",
                    (*chunk, owner),
                ).fetchall()
                found.update((item_id, loads(item)) for item_id, item in rows)  # later rows win
            return found

        return await self._run(read)

    async def update_response(self, response: dict, *, owner: str | None) -> bool:
        response_id = response.get("id")
        if not usable_id(response_id):
            return False
        check_storable(response, [])
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

        return await self._write(write)

    async def request_cancel(self, response_id: str, *, owner: str | None) -> dict | None:
        if not usable_id(response_id):
            return None

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

        return await self._write(write)

    async def cancel_requested(self, response_id: str) -> bool:
        if not usable_id(response_id):
            return True

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

        await self._write(write)

    async def events(self, response_id: str, *, after: int | None) -> list[dict]:
        if not usable_id(response_id):
            return []

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

        return await self._write(write)

    # -- replicas and recovery -----------------------------------------------------------------------

    async def register_replica(self, replica_id: str) -> None:
        check_id(replica_id, "replica_id")
        host, pid, now = this_host(), os.getpid(), time.time()

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO replicas VALUES (?, ?, ?, ?, ?) ON CONFLICT (replica_id) DO UPDATE SET "
                "host = excluded.host, pid = excluded.pid, heartbeat_at = excluded.heartbeat_at",
                (replica_id, host, pid, now, now),
            )

        await self._write(write)
        self.replica_id = replica_id

    async def heartbeat(self, replica_id: str) -> None:
        now = time.time()

        def write(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE replicas SET heartbeat_at = ? WHERE replica_id = ?", (now, replica_id))

        await self._write(write)

    async def recover_orphans(self, replica_id: str, stale_after: float = DEFAULT_STALE_AFTER) -> list[str]:
        if self.replica_id != replica_id:
            await self.register_replica(replica_id)

        def write(conn: sqlite3.Connection) -> list[str]:
            now = time.time()
            rows = conn.execute(
                "SELECT r.id, r.response, p.host, p.pid, p.heartbeat_at FROM responses AS r "
                "LEFT JOIN replicas AS p ON p.replica_id = r.owner_replica "
                "WHERE r.status IN ('queued', 'in_progress') AND r.owner_replica IS NOT ?",
                (replica_id,),
            ).fetchall()
            ended = []
            for response_id, response_json, host, pid, beat in rows:
                if not replica_gone(host, pid, None if beat is None else now - beat, stale_after):
                    continue
                failed = restarted_copy(loads(response_json))
                conn.execute(
                    "UPDATE responses SET status = 'failed', cancel_requested = 1, response = ? WHERE id = ?",
                    (dumps(failed), response_id),
                )
                last = conn.execute(
                    "SELECT MAX(sequence_number) FROM events WHERE response_id = ?", (response_id,)
                ).fetchone()[0]
                event = restarted_event(failed, last)
                conn.execute(
                    "INSERT OR REPLACE INTO events VALUES (?, ?, ?)",
                    (response_id, event["sequence_number"], dumps(event)),
                )
                ended.append(response_id)
            return ended

        return await self._write(write)

    # -- conversations -------------------------------------------------------------------------------

    async def create_conversation(self, conversation: dict, items: list[dict], *, owner: str | None) -> list[dict]:
        conversation_id = conversation.get("id")
        check_id(conversation_id, "id")
        metadata = check_metadata(conversation.get("metadata"))
        check_items(items)
        items = with_random_ids(items)
        created = float(conversation.get("created_at") or time.time())
        rows = [(item["id"], dumps(item)) for item in items]

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO conversations (id, owner, created_at, metadata, next_position) VALUES (?, ?, ?, ?, 0)",
                (conversation_id, owner, created, dumps(metadata)),
            )
            _insert_conversation_items(conn, conversation_id, 0, rows, None)

        await self._write(write)
        return items

    async def get_conversation(self, conversation_id: str, *, owner: str | None) -> dict | None:
        if not usable_id(conversation_id):
            return None

        def read() -> dict | None:
            row = self._db().execute(
                "SELECT created_at, metadata FROM conversations WHERE id = ? AND owner IS ?",
                (conversation_id, owner),
            ).fetchone()
            return None if row is None else conversation_object(conversation_id, row[0], loads(row[1]))

        return await self._run(read)

    async def update_conversation(self, conversation_id: str, metadata: dict, *, owner: str | None) -> dict | None:
        metadata = check_metadata(metadata)
        if not usable_id(conversation_id):
            return None

        def write(conn: sqlite3.Connection) -> dict | None:
            row = conn.execute(
                "UPDATE conversations SET metadata = ? WHERE id = ? AND owner IS ? RETURNING created_at",
                (dumps(metadata), conversation_id, owner),
            ).fetchone()
            return None if row is None else conversation_object(conversation_id, row[0], metadata)

        return await self._write(write)

    async def delete_conversation(self, conversation_id: str, *, owner: str | None) -> bool:
        if not usable_id(conversation_id):
            return False

        def write(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute("DELETE FROM conversations WHERE id = ? AND owner IS ?", (conversation_id, owner))
            if cursor.rowcount == 0:
                return False
            conn.execute("DELETE FROM conversation_items WHERE conversation_id = ?", (conversation_id,))
            return True

        return await self._write(write)

    async def add_conversation_items(
        self, conversation_id: str, items: list[dict], *, owner: str | None
    ) -> list[dict] | None:
        check_items(items)
        if not usable_id(conversation_id):
            return None
        items = with_random_ids(items)
        rows = [(item["id"], dumps(item)) for item in items]

        def write(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "SELECT next_position FROM conversations WHERE id = ? AND owner IS ?", (conversation_id, owner)
            ).fetchone()
            if row is None:
                return False
            _insert_conversation_items(conn, conversation_id, row[0], rows, None)
            return True

        return items if await self._write(write) else None

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

        def read() -> dict | None:
            db = self._db()
            if db.execute(
                "SELECT 1 FROM conversations WHERE id = ? AND owner IS ?", (conversation_id, owner)
            ).fetchone() is None:
                return None
            op, direction = (">", "ASC") if order == "asc" else ("<", "DESC")
            if after is None:
                bound = -1 if order == "asc" else 2**62
            else:
                found = None if not usable_id(after) else db.execute(
                    "SELECT position FROM conversation_items WHERE conversation_id = ? AND item_id = ? "
                    "ORDER BY position DESC LIMIT 1",
                    (conversation_id, after),
                ).fetchone()
                if found is None:
                    return page([], limit, False)
                bound = found[0]
            rows = db.execute(
                f"SELECT item FROM conversation_items WHERE conversation_id = ? AND position {op} ? "
                f"ORDER BY position {direction} LIMIT ?",
                (conversation_id, bound, limit + 1),
            ).fetchall()
            return page([loads(row[0]) for row in rows[:limit]], limit, len(rows) > limit)

        return await self._run(read)

    async def all_conversation_items(self, conversation_id: str, *, owner: str | None) -> list[dict] | None:
        if not usable_id(conversation_id):
            return None

        def read() -> list[dict] | None:
            db = self._db()
            if db.execute(
                "SELECT 1 FROM conversations WHERE id = ? AND owner IS ?", (conversation_id, owner)
            ).fetchone() is None:
                return None
            rows = db.execute(
                "SELECT item FROM conversation_items WHERE conversation_id = ? ORDER BY position",
                (conversation_id,),
            ).fetchall()
            return [loads(row[0]) for row in rows]

        return await self._run(read)

    async def get_conversation_item(self, conversation_id: str, item_id: str, *, owner: str | None) -> dict | None:
        if not (usable_id(conversation_id) and usable_id(item_id)):
            return None

        def read() -> dict | None:
            row = self._db().execute(
                "SELECT i.item FROM conversation_items AS i JOIN conversations AS c ON c.id = i.conversation_id "
                "WHERE i.conversation_id = ? AND c.owner IS ? AND i.item_id = ? ORDER BY i.position DESC LIMIT 1",
                (conversation_id, owner, item_id),
            ).fetchone()
            return None if row is None else loads(row[0])

        return await self._run(read)

    async def delete_conversation_item(self, conversation_id: str, item_id: str, *, owner: str | None) -> bool:
        if not (usable_id(conversation_id) and usable_id(item_id)):
            return False

        def write(conn: sqlite3.Connection) -> bool:
            if conn.execute(
                "SELECT 1 FROM conversations WHERE id = ? AND owner IS ?", (conversation_id, owner)
            ).fetchone() is None:
                return False
            cursor = conn.execute(
                "DELETE FROM conversation_items WHERE conversation_id = ? AND item_id = ?", (conversation_id, item_id)
            )
            return cursor.rowcount > 0

        return await self._write(write)


def _insert_conversation_items(
    conn: sqlite3.Connection,
    conversation_id: str,
    start: int,
    rows: list[tuple[str, str]],
    response_id: str | None,
) -> None:
    """Append ``rows`` (item id, item JSON) at positions ``start``… and move the conversation's
    counter past them (the caller holds the write lock, so positions never collide)."""
    conn.executemany(
        "INSERT INTO conversation_items VALUES (?, ?, ?, ?, ?)",
        [(conversation_id, start + i, item_id, response_id, item) for i, (item_id, item) in enumerate(rows)],
    )
    conn.execute(
        "UPDATE conversations SET next_position = ? WHERE id = ?", (start + len(rows), conversation_id)
    )
