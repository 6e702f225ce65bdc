"""The final store write of a response, shared by every transport (JSON, SSE, WebSocket).

A stored response is acknowledged only after this write commits (`server.pump` runs it before the
terminal event); a response on a `conversation` appends its turn in the same transaction.
"""

from __future__ import annotations

import logging
from typing import Any

from server.body import ResponsesRequest
from server.conversation_turn import conversation_commit, conversation_of
from server.errors import ApiError
from server.pump import STORE_UNAVAILABLE, Commit
from server.state import BridgeState

__all__ = ["commit_or_503", "response_commit"]

log = logging.getLogger("responses_bridge")


def response_commit(state: BridgeState, asked: ResponsesRequest, items: list[dict[str, Any]], owner: str | None) -> Commit | None:
    """The store write of this request's final response, or None when nothing is to be stored."""
    store = state.store
    conversation_id = conversation_of(asked.payload)
    if conversation_id is not None and state.keeps_responses:  # items appended with the response
        return conversation_commit(store, items, owner, conversation_id, keep_response=asked.store)
    if not asked.store or not state.keeps_responses:
        return None

    async def commit(response: dict[str, Any]) -> bool:
        await store.put(response, items, owner=owner)
        return True

    return commit


async def commit_or_503(commit: Commit, response: dict[str, Any]) -> None:
    try:
        await commit(response)
    except Exception as exc:
        log.error("storing response %s failed, so the request is answered 503 (%s): %r",
                  response.get("id"), STORE_UNAVAILABLE, exc, exc_info=exc)  # fmt: skip
        raise ApiError(503, "The response could not be stored, so it was not kept; retry the request.",
                       code=STORE_UNAVAILABLE) from None  # fmt: skip
