"""`conversation` on `POST /v1/responses` (docs/conversations.md): what the responses path calls
(from server/history.py, server/turn.py, server/commit.py, server/responses.py and server/background.py).

- `conversation_of(payload)`: the conversation id a request names (`"conv_…"` or `{"id": …}`), or
  None; a 400 for a bad shape or together with `previous_response_id`;
- `conversation_history(store, id, owner)`: its items, oldest first, in one indexed read; 404 when
  missing;
- `echo_conversation(translator, request)` / `with_conversation(response, request)`: the Response
  carries `conversation: {"id": …}`;
- `conversation_commit(...)` / `append_on_completion(...)`: on a completed (or incomplete) response
  its input then output items are appended in the same transaction that stores it (`put(...,
  conversation_id=)`, or for a background job `update_response(..., conversation_id=, input_items=)`);
  a failed or cancelled one appends nothing.

Why apart from the routes (server/conversations.py): the responses path needs these and nothing of
the Conversations API's handlers, and the routes need none of these.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from server.conversation_items import conversation_unavailable, missing_conversation, stored_form
from server.errors import invalid
from server.store import StoreUnavailable
from server.stores.common import response_items

__all__ = [
    "APPENDING_STATUSES",
    "ConversationEcho",
    "append_on_completion",
    "conversation_commit",
    "conversation_history",
    "conversation_of",
    "echo_conversation",
    "with_conversation",
]

#: A response in one of these states adds its items to its conversation; failed and cancelled ones
#: add nothing (the turn did not happen).
APPENDING_STATUSES = frozenset({"completed", "incomplete"})


# ------------------------------------------------------------------- `conversation` on a response


def conversation_of(payload: dict[str, Any]) -> str | None:
    """The conversation a `POST /v1/responses` body names, or None. 400 for a bad shape, and for
    `conversation` together with `previous_response_id` (OpenAI's wording and code)."""
    value = payload.get("conversation")
    if value is None:
        return None
    if isinstance(value, dict):
        value = value.get("id")
        if not isinstance(value, str) or not value:
            raise invalid("Invalid 'conversation': expected a conversation id or an object with an 'id'.",
                          "conversation.id", "invalid_value")  # fmt: skip
    if not isinstance(value, str) or not value:
        raise invalid("Invalid 'conversation': expected a conversation id or an object with an 'id'.",
                      "conversation", "invalid_value")  # fmt: skip
    if payload.get("previous_response_id") is not None:
        raise invalid("Mutually exclusive parameters: Ensure you are only providing one of: "
                      "'previous_response_id' or 'conversation'.", None, "mutually_exclusive_parameters")  # fmt: skip
    return value


async def conversation_history(store: Any, conversation_id: str, owner: str | None) -> list[dict[str, Any]]:
    """The conversation's items, oldest first (one read on the store's position index); 404 when it
    does not exist for this owner (or the bridge keeps nothing)."""
    items = None
    if store is not None and getattr(store, "keeps_responses", True):
        try:
            items = await store.all_conversation_items(conversation_id, owner=owner)
        except StoreUnavailable as exc:
            raise conversation_unavailable(exc) from None
    if items is None:
        raise missing_conversation(conversation_id, "conversation")
    return list(items)


def _conversation_field(request: dict[str, Any]) -> dict[str, str] | None:
    value = request.get("conversation")
    if isinstance(value, dict):
        value = value.get("id")
    return {"id": value} if isinstance(value, str) and value else None


def with_conversation(response: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
    """`response` echoing the request's conversation as `{"id": …}` (unchanged without one)."""
    field = _conversation_field(request)
    if field is not None and isinstance(response, dict):
        response["conversation"] = field
    return response


class ConversationEcho:
    """A stream translator whose every response snapshot carries `conversation: {"id": …}`: the
    created, in-progress and terminal events, and `.response` (what the pump stores)."""

    def __init__(self, inner: Any, field: dict[str, str]) -> None:
        self._inner = inner
        self._field = field

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def _patch(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for event in events:
            snapshot = event.get("response")
            if isinstance(snapshot, dict):
                snapshot["conversation"] = self._field
        return events

    @property
    def response(self) -> dict[str, Any]:
        return {**self._inner.response, "conversation": self._field}

    def start(self) -> list[dict[str, Any]]:
        return self._patch(self._inner.start())

    def feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        return self._patch(self._inner.feed(chunk))

    def finish(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        return self._patch(self._inner.finish(*args, **kwargs))

    def fail(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        return self._patch(self._inner.fail(*args, **kwargs))


def echo_conversation(stream_translator: Any, request: dict[str, Any]) -> Any:
    """`stream_translator`, wrapped so its responses echo the request's conversation (as is without)."""
    field = _conversation_field(request)
    return stream_translator if field is None else ConversationEcho(stream_translator, field)


def conversation_commit(
    store: Any, items: list[dict[str, Any]], owner: str | None, conversation_id: str, *, keep_response: bool
) -> Callable[[dict[str, Any]], Awaitable[bool]]:
    """The final write of a response on a conversation (a `server.pump.Commit`).

    Completed (or incomplete): the response and its input items are stored and its input then output
    items appended to the conversation in one transaction (`put(..., conversation_id=)`); with
    `store: false` only the items are appended. Failed: stored like any response, nothing appended.
    Raises (the pump answers `store_unavailable`) when the conversation is gone or the store fails,
    so no client is told `completed` for a turn its conversation does not hold."""
    stored_items = stored_form(items)

    async def commit(response: dict[str, Any]) -> bool:
        if response.get("status") not in APPENDING_STATUSES:
            if keep_response:
                await store.put(response, stored_items, owner=owner)
            return True
        if keep_response:
            await store.put(response, stored_items, owner=owner, conversation_id=conversation_id)
            return True
        added = await store.add_conversation_items(
            conversation_id, stored_form(response_items(response, stored_items)), owner=owner
        )
        if added is None:
            raise LookupError(f"conversation {conversation_id} is gone")
        return True

    return commit


def append_on_completion(response: dict[str, Any], items: list[dict[str, Any]]) -> dict[str, Any]:
    """The arguments that make a background job's final `update_response` append its turn
    (`items`, then its output) to its conversation in the same transaction: a kill can never leave
    the response completed and the conversation without that turn, and a cancel that won appends
    nothing. `{}` when the response has no conversation or did not complete (or end incomplete)."""
    field = response.get("conversation")
    conversation_id = field.get("id") if isinstance(field, dict) else None
    if isinstance(conversation_id, str) and response.get("status") in APPENDING_STATUSES:
        return {"conversation_id": conversation_id, "input_items": stored_form(items)}
    return {}
