"""The SQLite engine's response operations: responses, their items, background events, retention,
replicas and recovery.

Imports only server/stores/base.py, server/stores/common.py, server/stores/limits.py,
server/stores/sqlite_engine.py and server/stores/sqlite_conversations.py (for the append a finished
response makes to its conversation in the same transaction).
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable

from server.stores.base import CANCELLABLE_STATUSES, DEFAULT_STALE_AFTER, MAX_CHAIN_DEPTH
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
from server.stores.sqlite_conversations import append_for_response
from server.stores.sqlite_engine import SQLiteEngine, concatenated_rows

#: The chain of a response as ONE row: whether its oldest link starts it (no previous response), then
#: the links' depths, input items and responses, each column the stored texts joined by commas (in
#: the same order: one aggregate). One row, not a row per turn: each row fetched is a statement step,
#: and every step lets go of the GIL and waits to get it back from a busy event loop
#: (server/stores/sqlite_engine.py), so a long chain read row by row could wait once per turn. Plain
#: `group_concat` columns, no `||` splicing per row, which cost SQLite twice the time of the scan.
CHAIN_SQL = """
WITH RECURSIVE chain(id, prev, depth) AS (
    SELECT id, previous_response_id, 0 FROM responses WHERE id = ? AND owner IS ?
    UNION ALL
    SELECT r.id, r.previous_response_id, c.depth + 1
    FROM chain AS c JOIN responses AS r ON r.id = c.prev AND r.owner IS ?
    WHERE c.depth < ?
)
SELECT max(c.prev IS NULL), group_concat(c.depth), group_concat(r.input_items), group_concat(r.response)
FROM chain AS c JOIN responses AS r ON r.id = c.id
"""

INSERT_ITEM = "INSERT INTO items VALUES (?, ?, ?, ?, ?, ?)"

def _write_runs(batch: list[tuple]) -> list[list[ResponseRows]]:
    """The puts of one run, split where an id comes again: within one multi-row statement the second
    copy's items would collide with the first's (the same key), while one statement after the other
    gives what two puts in a row give."""
    runs: list[list[ResponseRows]] = [[]]
    seen: set[str] = set()
    for (rows,) in batch:
        if rows.response_id in seen:
            runs.append([])
            seen.clear()
        seen.add(rows.response_id)
        runs[-1].append(rows)
    return runs


def put_rows(conn: sqlite3.Connection, batch: list[tuple]) -> None:
    """A run of plain puts as one statement per run (the ``put_batch`` trigger,
    server/stores/sqlite_engine.py): the same rows as ``put``'s one-by-one write. Called outside a
    transaction (a group of nothing else), a single run commits itself; several make one transaction."""
    runs = _write_runs(batch)
    alone = len(runs) > 1 and not conn.in_transaction
    if alone:
        conn.execute("BEGIN IMMEDIATE")
    for run in runs:
        payload = dumps([[r.response_id for r in run], [r.row for r in run], [i for r in run for i in r.item_rows]])
        conn.execute("INSERT INTO put_batch VALUES (?)", (payload,))
    if alone:
        conn.execute("COMMIT")


class SQLiteResponses(SQLiteEngine):
    """Responses, background events and replicas on one SQLite file."""

    # -- responses -----------------------------------------------------------------------------------

    def _put_write(self, response: dict, input_items: list[dict], owner: str | None) -> Callable:
        """The write of a put that appends to a conversation (in a savepoint of its own: the
        conversation may be gone)."""
        rows = response_rows(response, input_items, owner, self.replica_id)

        def write(conn: sqlite3.Connection, conversation_id: str) -> None:
            append_for_response(conn, conversation_id, owner, rows.response_id, rows.appended)
            put_rows(conn, [(rows,)])  # inside the group's transaction: the same rows as a plain put

        return write

    async def put(
        self, response: dict, input_items: list[dict], *, owner: str | None, conversation_id: str | None = None
    ) -> None:
        check_storable(response, input_items, conversation_id=conversation_id)
        if conversation_id is None:  # nothing can fail on its own: batched with its neighbours
            rows = response_rows(response, input_items, owner, self.replica_id, conversation=False)
            await self._submit(put_rows, (rows,), write=True, many=put_rows)
            return
        write = self._put_write(response, input_items, owner)
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
            starts, depths, inputs, responses = self._db().execute(
                CHAIN_SQL, (response_id, owner, owner, MAX_CHAIN_DEPTH)
            ).fetchone()
            # No row, or the oldest link has a previous response: a link is missing (or the depth
            # cap was hit on a cycle).
            if not starts:
                return None
            oldest_first = concatenated_rows(depths, inputs, responses, descending=True)
            return chain_items([(items, response) for _, items, response in oldest_first])

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

    async def _update_response(
        self, response: dict, owner: str | None, conversation_id: str | None, given: list[dict] | None
    ) -> bool:
        response_id = response["id"]
        response_json = dumps(response)

        def write(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "SELECT cancel_requested, status, created_at, input_items FROM responses "
                "WHERE id = ? AND owner IS ?",
                (response_id, owner),
            ).fetchone()
            if row is None or row[0] or row[1] == "cancelled":
                return False  # the cancel wins: nothing is written, nothing appended
            inputs = loads(row[3]) if given is None else given
            if conversation_id is not None:  # raises ConversationNotFound: the savepoint undoes all
                append_for_response(conn, conversation_id, owner, response_id, appended_rows(response, inputs))
            conn.execute(
                "UPDATE responses SET status = ?, response = ?, input_items = ? WHERE id = ?",
                (response.get("status"), response_json, dumps(inputs), response_id),
            )
            # Re-index the output items (and the input items when new ones were given).
            start = len(inputs) if given is None else 0
            indexed = output_items(response) if given is None else [*given, *output_items(response)]
            conn.execute("DELETE FROM items WHERE response_id = ? AND position >= ?", (response_id, start))
            conn.executemany(INSERT_ITEM, item_rows(indexed, response_id, owner, row[2], start))
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
            numbers, events = self._db().execute(
                "SELECT group_concat(sequence_number), group_concat(event) FROM events "
                "WHERE response_id = ? AND sequence_number > ?",
                (response_id, -1 if after is None else after),
            ).fetchone()
            return [event for _, event in concatenated_rows(numbers, events)]

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
