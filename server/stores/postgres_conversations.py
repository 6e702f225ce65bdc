"""The PostgreSQL engine's conversation operations (docs/store.md, "Conversations").

Imports only server/stores/common.py, server/stores/limits.py, server/stores/postgres_schema.py and
server/stores/postgres_engine.py.
"""

from __future__ import annotations

from typing import Any

from server.stores.common import conversation_object, dumps, items_page, loads, page_order
from server.stores.limits import check_metadata, usable_id
from server.stores.postgres_engine import PostgresEngine
from server.stores.postgres_schema import INSERT_CONVERSATION_ITEM


class PostgresConversations(PostgresEngine):
    """Conversations and their items in one PostgreSQL database."""

    async def _create_conversation(
        self, conversation_id: str, created_at: float, metadata: dict, items: list[dict], owner: str | None
    ) -> None:
        async def run(conn: Any) -> None:
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO conversations (id, owner, created_at, metadata, next_position) "
                    "VALUES ($1, $2, $3, $4::json, $5)",
                    conversation_id,
                    owner,
                    created_at,
                    dumps(metadata),
                    len(items),
                )
                await _insert_items(conn, conversation_id, 0, items)

        await self._attempt("create_conversation", run)

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

    async def _add_items(self, conversation_id: str, items: list[dict], owner: str | None) -> bool:
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
                await _insert_items(conn, conversation_id, start, items)
                return True

        return await self._attempt("add_conversation_items", run)

    async def _items_page(
        self, conversation_id: str, owner: str | None, limit: int, after: str | None, ascending: bool
    ) -> dict | None:
        op, direction, bound = page_order(ascending)

        async def run(conn: Any) -> dict | None:
            exists = await conn.fetchval(
                "SELECT 1 FROM conversations WHERE id = $1 AND owner IS NOT DISTINCT FROM $2", conversation_id, owner
            )
            if exists is None:
                return None
            position = bound
            if after is not None:
                found = None if not usable_id(after) else await conn.fetchval(
                    "SELECT position FROM conversation_items WHERE conversation_id = $1 AND item_id = $2 "
                    "ORDER BY position DESC LIMIT 1",
                    conversation_id,
                    after,
                )
                if found is None:
                    return items_page([], limit)
                position = found
            rows = await conn.fetch(
                f"SELECT item FROM conversation_items WHERE conversation_id = $1 AND position {op} $2 "
                f"ORDER BY position {direction} LIMIT $3",
                conversation_id,
                position,
                limit + 1,
            )
            return items_page([row["item"] for row in rows], limit)

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


async def _insert_items(conn: Any, conversation_id: str, start: int, items: list[dict]) -> None:
    """Insert items added by hand (no response) at positions ``start``… the caller has claimed."""
    if items:
        await conn.executemany(
            INSERT_CONVERSATION_ITEM,
            [(conversation_id, start + k, item["id"], None, dumps(item)) for k, item in enumerate(items)],
        )
