"""The Conversations API, and `conversation` on `POST /v1/responses` (docs/conversations.md).

Routes (mounted by server/app.py), each a thin layer over the store's conversation methods
(docs/store.md, "Conversations"), owner-scoped per API key exactly as stored responses are (another
key's conversation answers like a missing one, 404):

    POST   /v1/conversations                          {items?, metadata?}  → conversation
    GET    /v1/conversations/{id}                                          → conversation
    POST   /v1/conversations/{id}                     {metadata}           → conversation
    DELETE /v1/conversations/{id}                                          → conversation.deleted
    GET    /v1/conversations/{id}/items               ?limit&after&order&include → list
    POST   /v1/conversations/{id}/items               {items}              → list of the added items
    GET    /v1/conversations/{id}/items/{item_id}                          → the item
    DELETE /v1/conversations/{id}/items/{item_id}                          → conversation

Item rules and the stored form are server/conversation_items.py; `conversation` on
`POST /v1/responses` (history, echo, commit) is server/conversation_turn.py.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.body import json_object, parse_json, read_request_body
from server.conversation_items import (
    conversation_unavailable,
    items_param,
    metadata_param,
    missing_conversation,
)
from server.errors import ApiError, JSONResponse, error_response, invalid, not_found
from server.scope import OWNER_KEY
from server.store import StoreRefused, StoreUnavailable

__all__ = ["routes"]

DEFAULT_LIMIT = 20
MAX_LIMIT = 100

#: `include` values the openai SDK sends on item routes. The bridge has none of the extra data they
#: ask for (no hosted tools, no logprobs kept), so a known value is accepted and changes nothing.
KNOWN_INCLUDES = frozenset({
    "web_search_call.action.sources", "web_search_call.results", "code_interpreter_call.outputs",
    "computer_call_output.output.image_url", "file_search_call.results", "message.input_image.image_url",
    "message.output_text.logprobs", "reasoning.encrypted_content",
})  # fmt: skip

# ---------------------------------------------------------------------------------------- helpers


def _owner(request: Request) -> str | None:
    return request.scope.get(OWNER_KEY)


def _store(request: Request) -> Any:
    """The store, or a 400 when the bridge keeps nothing (`--store none`)."""
    store = getattr(request.app.state, "store", None)
    if store is None or not getattr(store, "keeps_responses", True):
        raise invalid("Conversations need a store, and this bridge runs with --store none.", None, "invalid_value")
    return store


def _missing_item(conversation_id: str, item_id: str) -> ApiError:
    return not_found(f"Item with id '{item_id}' not found in conversation '{conversation_id}'.", "item_id")


async def _json_body(request: Request, *, allowed: frozenset[str]) -> dict[str, Any]:
    """The JSON object body (an empty body is `{}`); unknown fields are refused as OpenAI does."""
    raw = await read_request_body(request, request.app.state.config)
    if not raw.strip():
        return {}
    body = json_object(parse_json(raw))
    for name in body:
        if name not in allowed:
            raise invalid(f"Unknown parameter: '{name}'.", name, "unknown_parameter")
    return body


def _include_param(request: Request) -> None:
    for value in request.query_params.getlist("include") + request.query_params.getlist("include[]"):
        if value not in KNOWN_INCLUDES:
            raise invalid(f"Invalid value for 'include': {value!r}.", "include", "invalid_value")


def _limit_param(request: Request) -> int:
    raw = request.query_params.get("limit")
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    try:
        limit = int(raw)
    except ValueError:
        raise invalid(f"Invalid 'limit': expected an integer, got {raw!r}.", "limit", "invalid_type") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise invalid(f"Invalid 'limit': {limit} is not between 1 and {MAX_LIMIT}.", "limit", "invalid_value")
    return limit


def _store_refused(exc: StoreRefused) -> ApiError:
    return invalid(f"Invalid '{exc.field}': {exc.reason}.", exc.field, "invalid_value")


def _list(items: list[dict[str, Any]], has_more: bool = False) -> dict[str, Any]:
    return {
        "object": "list",
        "data": items,
        "first_id": items[0].get("id") if items else None,
        "last_id": items[-1].get("id") if items else None,
        "has_more": has_more,
    }


Handler = Callable[[Request], Awaitable[Any]]


def _route(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Errors raised by a handler as the client sees them (`ApiError` → its status and body)."""

    async def endpoint(request: Request) -> Response:
        try:
            return JSONResponse(await handler(request))
        except ApiError as exc:
            return error_response(exc)
        except StoreRefused as exc:
            return error_response(_store_refused(exc))
        except StoreUnavailable as exc:
            return error_response(conversation_unavailable(exc))

    endpoint.__name__ = handler.__name__
    endpoint.__doc__ = handler.__doc__
    return endpoint


# --------------------------------------------------------------------------------------- handlers


async def create_conversation(request: Request) -> dict[str, Any]:
    """`POST /v1/conversations`: a new conversation, with up to 20 initial items."""
    body = await _json_body(request, allowed=frozenset({"items", "metadata"}))
    items = items_param(body.get("items"), "items", required=False)
    metadata = metadata_param(body.get("metadata"))
    store = _store(request)
    conversation_id = f"conv_{secrets.token_hex(24)}"
    created_at = int(time.time())
    await store.create_conversation(
        {"id": conversation_id, "created_at": created_at, "metadata": metadata}, items, owner=_owner(request)
    )
    return {"id": conversation_id, "object": "conversation", "created_at": created_at, "metadata": metadata}


async def retrieve_conversation(request: Request) -> dict[str, Any]:
    conversation_id = request.path_params["conversation_id"]
    found = await _store(request).get_conversation(conversation_id, owner=_owner(request))
    if found is None:
        raise missing_conversation(conversation_id)
    return dict(found)


async def update_conversation(request: Request) -> dict[str, Any]:
    """`POST /v1/conversations/{id}`: replace its metadata (`metadata` is required; null clears it)."""
    conversation_id = request.path_params["conversation_id"]
    body = await _json_body(request, allowed=frozenset({"metadata"}))
    if "metadata" not in body:
        raise invalid("Missing required parameter: 'metadata'.", "metadata", "missing_required_parameter")
    metadata = metadata_param(body["metadata"])
    updated = await _store(request).update_conversation(conversation_id, metadata, owner=_owner(request))
    if updated is None:
        raise missing_conversation(conversation_id)
    return dict(updated)


async def delete_conversation(request: Request) -> dict[str, Any]:
    conversation_id = request.path_params["conversation_id"]
    if not await _store(request).delete_conversation(conversation_id, owner=_owner(request)):
        raise missing_conversation(conversation_id)
    return {"id": conversation_id, "object": "conversation.deleted", "deleted": True}


async def list_items(request: Request) -> dict[str, Any]:
    """`GET /v1/conversations/{id}/items`: OpenAI's list paging (`order` desc by default, `after` an
    item id, `limit` 1 to 100, default 20)."""
    conversation_id = request.path_params["conversation_id"]
    limit = _limit_param(request)
    order = request.query_params.get("order") or "desc"
    if order not in ("asc", "desc"):
        raise invalid(f"Invalid 'order': {order!r}; expected 'asc' or 'desc'.", "order", "invalid_value")
    _include_param(request)
    after = request.query_params.get("after") or None
    found = await _store(request).conversation_items(
        conversation_id, owner=_owner(request), limit=limit, after=after, order=order
    )
    if found is None:
        raise missing_conversation(conversation_id)
    return _list(list(found.get("data") or []), bool(found.get("has_more")))


async def add_items(request: Request) -> dict[str, Any]:
    """`POST /v1/conversations/{id}/items`: append up to 20 items; answers the list of them."""
    conversation_id = request.path_params["conversation_id"]
    _include_param(request)
    body = await _json_body(request, allowed=frozenset({"items"}))
    items = items_param(body.get("items"), "items", required=True)
    added = await _store(request).add_conversation_items(conversation_id, items, owner=_owner(request))
    if added is None:
        raise missing_conversation(conversation_id)
    return _list(list(added))


async def retrieve_item(request: Request) -> dict[str, Any]:
    conversation_id = request.path_params["conversation_id"]
    item_id = request.path_params["item_id"]
    _include_param(request)
    store = _store(request)
    owner = _owner(request)
    item = await store.get_conversation_item(conversation_id, item_id, owner=owner)
    if item is None:
        if await store.get_conversation(conversation_id, owner=owner) is None:
            raise missing_conversation(conversation_id)
        raise _missing_item(conversation_id, item_id)
    return dict(item)


async def delete_item(request: Request) -> dict[str, Any]:
    """`DELETE /v1/conversations/{id}/items/{item_id}`: answers the conversation, as OpenAI does."""
    conversation_id = request.path_params["conversation_id"]
    item_id = request.path_params["item_id"]
    store = _store(request)
    owner = _owner(request)
    conversation = await store.get_conversation(conversation_id, owner=owner)
    if conversation is None:
        raise missing_conversation(conversation_id)
    if not await store.delete_conversation_item(conversation_id, item_id, owner=owner):
        raise _missing_item(conversation_id, item_id)
    return dict(conversation)


def routes() -> list[Route]:
    base = "/v1/conversations"
    one = base + "/{conversation_id}"
    item = one + "/items/{item_id}"
    return [
        Route(base, _route(create_conversation), methods=["POST"]),
        Route(one, _route(retrieve_conversation), methods=["GET"]),
        Route(one, _route(update_conversation), methods=["POST"]),
        Route(one, _route(delete_conversation), methods=["DELETE"]),
        Route(one + "/items", _route(list_items), methods=["GET"]),
        Route(one + "/items", _route(add_items), methods=["POST"]),
        Route(item, _route(retrieve_item), methods=["GET"]),
        Route(item, _route(delete_item), methods=["DELETE"]),
    ]
