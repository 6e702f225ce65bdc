"""The SQLite engine's conversation operations (docs/store.md, "Conversations").

Imports only server/stores/base.py, server/stores/common.py, server/stores/limits.py and
server/stores/sqlite_engine.py.
"""

from __future__ import annotations

import sqlite3

from server.stores.base import ConversationNotFound
from server.stores.common import conversation_object, dumps, items_page, loads, page_order
from server.stores.limits import check_metadata, usable_id
from server.stores.sqlite_engine import SQLiteEngine, concatenated_rows


class SQLiteConversations(SQLiteEngine):
    """Conversations and their items on one SQLite file."""

    async def _create_conversation(
        self, conversation_id: str, created_at: float, metadata: dict, items: list[dict], owner: str | None
    ) -> None:
        rows = [(item["id"], dumps(item)) for item in items]

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO conversations (id, owner, created_at, metadata, next_position) VALUES (?, ?, ?, ?, 0)",
                (conversation_id, owner, created_at, dumps(metadata)),
            )
            _insert_conversation_items(conn, conversation_id, 0, rows, None)

        await self._write(write)

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

    async def _add_items(self, conversation_id: str, items: list[dict], owner: str | None) -> bool:
        rows = [(item["id"], dumps(item)) for item in items]

        def write(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "SELECT next_position FROM conversations WHERE id = ? AND owner IS ?", (conversation_id, owner)
            ).fetchone()
            if row is None:
                return False
            _insert_conversation_items(conn, conversation_id, row[0], rows, None)
            return True

        return await self._write(write)

    async def _items_page(
        self, conversation_id: str, owner: str | None, limit: int, after: str | None, ascending: bool
    ) -> dict | None:
        op, direction, bound = page_order(ascending)

        def read() -> dict | None:
            db = self._db()
            if db.execute(
                "SELECT 1 FROM conversations WHERE id = ? AND owner IS ?", (conversation_id, owner)
            ).fetchone() is None:
                return None
            position = bound
            if after is not None:
                found = None if not usable_id(after) else db.execute(
                    "SELECT position FROM conversation_items WHERE conversation_id = ? AND item_id = ? "
                    "ORDER BY position DESC LIMIT 1",
                    (conversation_id, after),
                ).fetchone()
                if found is None:
                    return items_page([], limit)
                position = found[0]
            rows = db.execute(
                f"SELECT item FROM conversation_items WHERE conversation_id = ? AND position {op} ? "
                f"ORDER BY position {direction} LIMIT ?",
                (conversation_id, position, limit + 1),
            ).fetchall()
            return items_page([row[0] for row in rows], limit)

        return await self._run(read)

    async def all_conversation_items(self, conversation_id: str, *, owner: str | None) -> list[dict] | None:
        if not usable_id(conversation_id):
            return None

        def read() -> list[dict] | None:
            # One row (the conversation's existence, then its items): see `concatenated_rows`.
            exists, positions, items = self._db().execute(
                "SELECT (SELECT 1 FROM conversations WHERE id = ? AND owner IS ?), group_concat(position), "
                "group_concat(item) FROM conversation_items WHERE conversation_id = ?",
                (conversation_id, owner, conversation_id),
            ).fetchone()
            if exists is None:
                return None
            return [item for _, item in concatenated_rows(positions, items)]

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


def append_for_response(
    conn: sqlite3.Connection,
    conversation_id: str,
    owner: str | None,
    response_id: str,
    appended: list[tuple[str, str]],
) -> None:
    """Append a finished response's items (``appended``) to its conversation, once: a response whose
    items are in already (a retried write) appends nothing. Raises :class:`ConversationNotFound`
    when this owner has no such conversation (the caller's savepoint then undoes the whole write)."""
    row = conn.execute(
        "SELECT next_position FROM conversations WHERE id = ? AND owner IS ?", (conversation_id, owner)
    ).fetchone()
    if row is None:
        raise ConversationNotFound(conversation_id)
    done = conn.execute(
        "SELECT 1 FROM conversation_items WHERE conversation_id = ? AND response_id = ? LIMIT 1",
        (conversation_id, response_id),
    ).fetchone()
    if done is not None:
        return
    _insert_conversation_items(conn, conversation_id, row[0], appended, response_id)
