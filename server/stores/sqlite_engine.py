"""The SQLite engine's core: the file, its schema, the one worker thread and group commit.

Why it looks like this (docs/store.md has the whole story):

* stdlib ``sqlite3`` is blocking, so every call runs on ONE dedicated worker thread with one
  connection; the event loop only awaits a future.
* **Group commit**: writes queue up while a commit is in flight, and the worker runs the whole queue
  as one transaction (one fsync for many responses). Each writer's await returns only after the
  commit holding its write; a failed commit fails every writer in it with :class:`StoreUnavailable`.
  Each write runs inside a savepoint, so a write that raises its own error (a conversation gone)
  undoes only itself. Writes that cannot raise their own error (a response's plain ``put``) carry a
  ``many`` function instead: a run of them in the queue is one statement and no savepoint, and a
  group of nothing else is that one statement, which commits itself (``TEMP_SCHEMA``). That matters
  beyond the statements saved: ``sqlite3`` lets go of the GIL around every statement, and winning it
  back from a busy uvloop loop can take tens of milliseconds, so a busy bridge paid that wait per
  statement and per response (docs/store.md, "Why SQLite counts statements"). ``batch_window`` (seconds, default 0) makes the worker wait that long for more
  writes after the first; ``max_batch`` caps a transaction (1 = one transaction per write).
* WAL mode lets readers (another process, a backup, ``sqlite3`` on the command line) work while we
  write, and ``busy_timeout`` makes a second server process on the same file wait instead of failing.
* ``synchronous=FULL``: in WAL mode NORMAL may lose the last commits on power loss (not on a process
  crash). An acknowledged response must survive, so every commit fsyncs the WAL before the writers
  are told.
* Every ``sqlite3`` error (disk full, read-only file, I/O error) becomes :class:`StoreUnavailable`.

The operations live beside it (server/stores/sqlite_responses.py, server/stores/sqlite_conversations.py)
as subclasses of :class:`SQLiteEngine`, joined in server/stores/sqlite.py. Imports only
server/stores/base.py and server/stores/common.py.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from server.stores.base import StoreUnavailable
from server.stores.common import loads, settle, unavailable
from server.stores.engine import StoreEngine

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

#: Per connection (TEMP): the one statement a run of plain puts is written with. Inserting
#: ``[[response ids], [response rows], [item rows]]`` (JSON, the rows in the column order of
#: ``responses`` and ``items``) into the view runs the trigger: the same three writes as one put's
#: (drop the ids' old items, upsert the responses, insert the items), for all of them, in ONE
#: statement step. Outside a transaction that step commits itself, so a group of puts costs the
#: worker one wait for the GIL instead of one per statement (see ``_commit_group``).
TEMP_SCHEMA = """
CREATE TEMP VIEW IF NOT EXISTS put_batch (payload) AS SELECT NULL;
CREATE TEMP TRIGGER IF NOT EXISTS put_batch_insert INSTEAD OF INSERT ON put_batch BEGIN
    DELETE FROM items WHERE response_id IN (SELECT value FROM json_each(NEW.payload, '$[0]'));
    INSERT INTO responses (id, owner, created_at, previous_response_id, status, response, input_items,
                           owner_replica)
        SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'),
               json_extract(value, '$[3]'), json_extract(value, '$[4]'), json_extract(value, '$[5]'),
               json_extract(value, '$[6]'), json_extract(value, '$[7]')
        FROM json_each(NEW.payload, '$[1]') WHERE true
        ON CONFLICT (id) DO UPDATE SET owner = excluded.owner, created_at = excluded.created_at,
            previous_response_id = excluded.previous_response_id, status = excluded.status,
            response = excluded.response, input_items = excluded.input_items,
            owner_replica = COALESCE(excluded.owner_replica, responses.owner_replica);
    INSERT INTO items (item_id, response_id, position, owner, created_at, item)
        SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'),
               json_extract(value, '$[3]'), json_extract(value, '$[4]'), json_extract(value, '$[5]')
        FROM json_each(NEW.payload, '$[2]');
END;
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
    #: ``many(conn, [args, ...])`` writes a run of such jobs at once and cannot fail but as the engine
    #: fails (a ``sqlite3.Error``, which fails the group); called inside the group's transaction, or
    #: outside any when the whole group is its kind (then it makes its own: see ``_commit_group``).
    #: None: ``fn(conn, *args)`` in a savepoint.
    many: Callable[[sqlite3.Connection, list[tuple]], None] | None = None
    outcome: tuple[bool, Any] = field(default=(False, None))


def concatenated_rows(keys: str | None, *columns: str | None, descending: bool = False) -> list[tuple]:
    """The rows of a one-row read made of ``group_concat`` columns (integer keys, then JSON texts,
    each column joined by commas in the same order), as tuples sorted by key. One row instead of a
    row per result: every row fetched is a statement step, and every step lets go of the GIL and
    waits to get it back from a busy event loop (docs/store.md, "Why SQLite counts statements")."""
    if keys is None:  # no row matched (group_concat of nothing is NULL)
        return []
    parsed = [loads(f"[{keys}]"), *(loads(f"[{column}]") for column in columns)]
    return sorted(zip(*parsed, strict=True), key=lambda row: row[0], reverse=descending)


def _write_many(conn: sqlite3.Connection, many: Callable[[sqlite3.Connection, list[tuple]], None],
                run: list[_Job]) -> None:
    """A run of jobs sharing ``many``: written at once, each told it is done (an engine error raises
    and fails the whole group)."""
    many(conn, [job.args for job in run])
    for job in run:
        job.outcome = (True, None)


def _unavailable(exc: BaseException) -> StoreUnavailable:
    return unavailable("SQLite", exc)


def _settle_all(outcomes: list[tuple[asyncio.Future, bool, Any]]) -> None:
    for future, ok, value in outcomes:
        settle(future, ok, value)


def _hand_back(jobs: list[_Job]) -> None:
    """Tell the waiting tasks their outcomes: one `call_soon_threadsafe` (one wake-up of the event
    loop) per loop for the whole group, not one per job; in the jobs' order."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future, bool, Any]]] = {}
    for j in jobs:
        by_loop.setdefault(j.loop, []).append((j.future, *j.outcome))
    for loop, outcomes in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle_all, outcomes)
        except RuntimeError:  # that event loop is closed: nobody is waiting any more
            pass


class SQLiteEngine(StoreEngine):
    """The file, the worker thread and group commit that every SQLite operation runs through."""

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
                stop = self._gather(jobs, time.monotonic() + self.batch_window)
            if not stop:
                stop = self._gather(jobs, None)
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
            _hand_back(jobs)
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _gather(self, jobs: list[_Job], deadline: float | None) -> bool:
        """Add queued jobs to ``jobs`` up to ``max_batch``, waiting until ``deadline`` (monotonic
        seconds) for more when given, else taking only what is queued now. True when the stop mark
        (None, from ``close``) came: the jobs before it still run."""
        while len(jobs) < self.max_batch:
            try:
                if deadline is None:
                    nxt = self._queue.get_nowait()
                elif (left := deadline - time.monotonic()) > 0:
                    nxt = self._queue.get(timeout=left)
                else:
                    break
            except queue.Empty:
                break
            if nxt is None:
                return True
            jobs.append(nxt)
        return False

    def _read(self, job: _Job) -> None:
        try:
            job.outcome = (True, job.fn(*job.args))
        except sqlite3.Error as exc:
            job.outcome = (False, _unavailable(exc))
        except BaseException as exc:
            job.outcome = (False, exc)

    def _commit_group(self, writes: list[_Job]) -> None:
        """One transaction for ``writes``: each in a savepoint (its own error undoes only itself), one
        COMMIT (one fsync) for all; an engine error anywhere fails the whole group. A group made only
        of one kind of ``many`` job is handed to its ``many`` outside any transaction: it makes its
        own, and the common one (a run of plain puts) is one statement that commits itself."""
        conn = self._conn
        if conn is None:
            for job in writes:
                job.outcome = (False, StoreUnavailable("SQLite store used before open() or after close()"))
            return
        try:
            many = writes[0].many
            if many is not None and all(job.many is many for job in writes):
                _write_many(conn, many, writes)
            else:
                self._savepoints(conn, writes)
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

    @staticmethod
    def _savepoints(conn: sqlite3.Connection, writes: list[_Job]) -> None:
        """The general group: BEGIN, each write in a savepoint (a run of ``many`` jobs together, with
        none), COMMIT."""
        conn.execute("BEGIN IMMEDIATE")
        start = 0
        while start < len(writes):
            job = writes[start]
            if job.many is not None:
                end = start + 1
                while end < len(writes) and writes[end].many is job.many:
                    end += 1
                _write_many(conn, job.many, writes[start:end])
                start = end
                continue
            conn.execute("SAVEPOINT w")
            try:
                job.outcome = (True, job.fn(conn, *job.args))
            except sqlite3.Error:
                raise
            except Exception as exc:
                conn.execute("ROLLBACK TO w")
                job.outcome = (False, exc)
            conn.execute("RELEASE w")
            start += 1
        conn.execute("COMMIT")

    async def _submit(
        self, fn: Callable[..., T], args: tuple, *, write: bool,
        many: Callable[[sqlite3.Connection, list[tuple]], None] | None = None,
    ) -> T:
        if self._thread is None:
            raise StoreUnavailable("SQLite store used before open() or after close()")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put(_Job(fn, args, future, loop, write, many))
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
            conn.executescript(TEMP_SCHEMA)
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
