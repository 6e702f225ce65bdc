"""The contract every store engine keeps: the interface, the errors and the constants.

This module imports nothing of the project, so every other store module may import it (and it
imports none of them back). docs/store.md describes the behaviour pinned down here.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

DEFAULT_STORE_SPEC = "sqlite:///./responses-bridge.db"

#: A response in one of these states will not change any more (background jobs stop here).
TERMINAL_STATUSES = frozenset({"completed", "failed", "incomplete", "cancelled"})
#: A background response in one of these states may still be cancelled.
CANCELLABLE_STATUSES = frozenset({"queued", "in_progress"})

#: How many previous_response_id links ``conversation`` follows before it gives up (a guard against
#: cycles written by hand into the database; real chains are far shorter).
MAX_CHAIN_DEPTH = 10_000

#: Which replica a job belongs to once its heartbeat is this old (seconds), unless the caller says.
DEFAULT_STALE_AFTER = 30.0
#: The error a job gets when recovery finds its replica gone.
SERVER_RESTARTED = {
    "code": "server_restarted",
    "message": "The server running this background response stopped before it finished.",
}

# ------------------------------------------------------------------------------------------- errors


class StoreError(Exception):
    """Base of the store's own errors."""


class StoreUnavailable(StoreError):
    """The engine failed a call (disk full, read-only file, connection lost after one retry, …).

    Every engine raises this, and only this, for engine failures, so the server can answer
    ``store_unavailable`` (503, or ``response.failed`` on a stream) instead of acknowledging a response
    that was not stored. ``str(exc)`` is a one-line reason fit for the log; ``__cause__`` holds the
    engine's exception."""


class StoreRefused(StoreError, ValueError):
    """The store cannot hold this input (checked before any write, the same on every engine).

    ``field`` is the JSON path of the offending value (e.g. ``input[3].id``), ``reason`` says what is
    wrong; the server maps this to a 400 ``invalid_request_error`` with ``param = field``."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class ConversationNotFound(StoreError, LookupError):
    """``put(..., conversation_id=…)`` named a conversation this owner cannot see (deleted meanwhile,
    or another owner's). Nothing was written."""

    def __init__(self, conversation_id: str) -> None:
        super().__init__(f"No conversation found with id {conversation_id!r}.")
        self.conversation_id = conversation_id


# ---------------------------------------------------------------------------------------- interface


@runtime_checkable
class ResponseStore(Protocol):
    """The contract the server codes against (docs/store.md, "The interface").

    Writes raise :class:`StoreUnavailable` on engine failure and :class:`StoreRefused` for input that
    fails :func:`check_storable`; lookups with an id no engine can hold (NUL, over-long) miss."""

    keeps_responses: bool

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def put(
        self, response: dict, input_items: list[dict], *, owner: str | None, conversation_id: str | None = None
    ) -> None: ...

    async def get(self, response_id: str, *, owner: str | None) -> dict | None: ...

    async def delete(self, response_id: str, *, owner: str | None) -> bool: ...

    async def input_items(self, response_id: str, *, owner: str | None) -> list[dict] | None: ...

    async def conversation(self, response_id: str, *, owner: str | None) -> list[dict] | None: ...

    async def get_items(self, item_ids: list[str], *, owner: str | None) -> dict[str, dict]: ...

    async def get_item(self, item_id: str, *, owner: str | None) -> dict | None: ...

    async def append_events(self, response_id: str, events: list[dict]) -> None: ...

    async def events(self, response_id: str, *, after: int | None) -> list[dict]: ...

    async def update_response(
        self,
        response: dict,
        *,
        owner: str | None,
        conversation_id: str | None = None,
        input_items: list[dict] | None = None,
    ) -> bool:
        """Replace a stored response unless it was cancelled (False then, and when it is gone).
        With ``conversation_id``, the same transaction appends its input items (``input_items``, or
        the stored ones when None) then its output items to that conversation, once: a response
        whose items are in already is not appended again; nothing is appended when it refuses."""
        ...

    async def request_cancel(self, response_id: str, *, owner: str | None) -> dict | None: ...

    async def cancel_requested(self, response_id: str) -> bool: ...

    async def purge(self, older_than_days: float) -> int: ...

    # replicas and recovery
    async def register_replica(self, replica_id: str) -> None: ...

    async def heartbeat(self, replica_id: str) -> None: ...

    async def recover_orphans(self, replica_id: str, stale_after: float = DEFAULT_STALE_AFTER) -> list[str]: ...

    # conversations
    async def create_conversation(
        self, conversation: dict, items: list[dict], *, owner: str | None
    ) -> list[dict]: ...

    async def get_conversation(self, conversation_id: str, *, owner: str | None) -> dict | None: ...

    async def update_conversation(
        self, conversation_id: str, metadata: dict, *, owner: str | None
    ) -> dict | None: ...

    async def delete_conversation(self, conversation_id: str, *, owner: str | None) -> bool: ...

    async def add_conversation_items(
        self, conversation_id: str, items: list[dict], *, owner: str | None
    ) -> list[dict] | None: ...

    async def conversation_items(
        self,
        conversation_id: str,
        *,
        owner: str | None,
        limit: int = 20,
        after: str | None = None,
        order: str = "desc",
    ) -> dict | None: ...

    async def all_conversation_items(self, conversation_id: str, *, owner: str | None) -> list[dict] | None: ...

    async def get_conversation_item(
        self, conversation_id: str, item_id: str, *, owner: str | None
    ) -> dict | None: ...

    async def delete_conversation_item(self, conversation_id: str, item_id: str, *, owner: str | None) -> bool: ...
