"""The base class of every engine: the checks made in front of an engine's own work, written once.

An engine implements the underscore methods (``_update_response``, ``_create_conversation``,
``_add_items``, ``_items_page``) and gets the public ones, so every engine refuses the same input
with the same error before it touches its storage. Imports only server/stores/common.py and
server/stores/limits.py.
"""

from __future__ import annotations

import time

from server.stores.common import with_item_ids, with_random_ids
from server.stores.limits import check_id, check_items, check_metadata, check_order, check_storable, usable_id


class ItemLookup:
    """``get_item`` for one id, shared by the engines (the server resolves one ``item_reference`` at
    a time; ``get_items`` is the batch form)."""

    async def get_items(self, item_ids: list[str], *, owner: str | None) -> dict[str, dict]:
        raise NotImplementedError

    async def get_item(self, item_id: str, *, owner: str | None) -> dict | None:
        if not usable_id(item_id):
            return None
        return (await self.get_items([item_id], owner=owner)).get(item_id)


class StoreEngine(ItemLookup):
    """What :class:`ItemLookup` gives, plus the checks in front of updates and conversation writes."""

    async def update_response(
        self,
        response: dict,
        *,
        owner: str | None,
        conversation_id: str | None = None,
        input_items: list[dict] | None = None,
    ) -> bool:
        response_id = response.get("id")
        if not usable_id(response_id):
            return False
        check_storable(response, input_items or [], conversation_id=conversation_id)
        given = None if input_items is None else with_item_ids(input_items, response_id)
        return await self._update_response(response, owner, conversation_id, given)

    async def _update_response(
        self, response: dict, owner: str | None, conversation_id: str | None, input_items: list[dict] | None
    ) -> bool:
        """Replace the response unless cancelled or gone (False); with ``conversation_id``, append
        ``input_items`` (ids given; None: the stored ones) then its output in the same transaction,
        raising :class:`ConversationNotFound` (nothing written) when that conversation is missing."""
        raise NotImplementedError

    async def create_conversation(self, conversation: dict, items: list[dict], *, owner: str | None) -> list[dict]:
        conversation_id = conversation.get("id")
        check_id(conversation_id, "id")
        metadata = check_metadata(conversation.get("metadata"))
        check_items(items)
        items = with_random_ids(items)
        created = float(conversation.get("created_at") or time.time())
        await self._create_conversation(conversation_id, created, metadata, items, owner)
        return items

    async def _create_conversation(
        self, conversation_id: str, created_at: float, metadata: dict, items: list[dict], owner: str | None
    ) -> None:
        raise NotImplementedError

    async def add_conversation_items(
        self, conversation_id: str, items: list[dict], *, owner: str | None
    ) -> list[dict] | None:
        check_items(items)
        if not usable_id(conversation_id):
            return None
        items = with_random_ids(items)
        return items if await self._add_items(conversation_id, items, owner) else None

    async def _add_items(self, conversation_id: str, items: list[dict], owner: str | None) -> bool:
        """Append ``items`` (ids given); False when this owner has no such conversation."""
        raise NotImplementedError

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
        return await self._items_page(conversation_id, owner, limit, after, order == "asc")

    async def _items_page(
        self, conversation_id: str, owner: str | None, limit: int, after: str | None, ascending: bool
    ) -> dict | None:
        """One page of a conversation's items (None when this owner has no such conversation)."""
        raise NotImplementedError
