"""``--store none``: the engine that keeps nothing (every lookup misses, every write is a no-op).

Imports only server/stores/base.py and server/stores/engine.py.
"""

from __future__ import annotations

from server.stores.base import DEFAULT_STALE_AFTER, ConversationNotFound, StoreUnavailable
from server.stores.engine import StoreEngine


class NullStore(StoreEngine):
    """``--store none``: keeps nothing, so every lookup misses (previous_response_id → 404)."""

    #: The server checks this (not the class name) to refuse what needs storage (background mode).
    keeps_responses = False

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def put(
        self, response: dict, input_items: list[dict], *, owner: str | None, conversation_id: str | None = None
    ) -> None:
        if conversation_id is not None:
            raise ConversationNotFound(conversation_id)
        return None

    async def get(self, response_id: str, *, owner: str | None) -> dict | None:
        return None

    async def delete(self, response_id: str, *, owner: str | None) -> bool:
        return False

    async def input_items(self, response_id: str, *, owner: str | None) -> list[dict] | None:
        return None

    async def conversation(self, response_id: str, *, owner: str | None) -> list[dict] | None:
        return None

    async def get_items(self, item_ids: list[str], *, owner: str | None) -> dict[str, dict]:
        return {}

    async def append_events(self, response_id: str, events: list[dict]) -> None:
        return None

    async def events(self, response_id: str, *, after: int | None) -> list[dict]:
        return []

    async def _update_response(
        self, response: dict, owner: str | None, conversation_id: str | None, input_items: list[dict] | None
    ) -> bool:
        if conversation_id is not None:
            raise ConversationNotFound(conversation_id)
        return True

    async def request_cancel(self, response_id: str, *, owner: str | None) -> dict | None:
        return None

    async def cancel_requested(self, response_id: str) -> bool:
        return False

    async def purge(self, older_than_days: float) -> int:
        return 0

    async def register_replica(self, replica_id: str) -> None:
        return None

    async def heartbeat(self, replica_id: str) -> None:
        return None

    async def recover_orphans(self, replica_id: str, stale_after: float = DEFAULT_STALE_AFTER) -> list[str]:
        return []

    async def create_conversation(self, conversation: dict, items: list[dict], *, owner: str | None) -> list[dict]:
        raise StoreUnavailable("--store none keeps no conversations")

    async def get_conversation(self, conversation_id: str, *, owner: str | None) -> dict | None:
        return None

    async def update_conversation(self, conversation_id: str, metadata: dict, *, owner: str | None) -> dict | None:
        return None

    async def delete_conversation(self, conversation_id: str, *, owner: str | None) -> bool:
        return False

    async def _add_items(self, conversation_id: str, items: list[dict], owner: str | None) -> bool:
        return False

    async def _items_page(
        self, conversation_id: str, owner: str | None, limit: int, after: str | None, ascending: bool
    ) -> dict | None:
        return None

    async def all_conversation_items(self, conversation_id: str, *, owner: str | None) -> list[dict] | None:
        return None

    async def get_conversation_item(self, conversation_id: str, item_id: str, *, owner: str | None) -> dict | None:
        return None


    async def delete_conversation_item(self, conversation_id: str, item_id: str, *, owner: str | None) -> bool:
        return False
