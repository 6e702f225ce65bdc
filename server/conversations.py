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

What the responses route calls (the hooks in server/history.py, server/responses.py and
server/background.py):

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
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.body import read_body
from server.errors import ApiError, JSONResponse, error_response, invalid, not_found
from server.scope import OWNER_KEY
from server.store import StoreRefused, StoreUnavailable
from server.stores.common import response_items

__all__ = [
    "APPENDING_STATUSES",
    "MAX_ITEMS_PER_CALL",
    "append_on_completion",
    "conversation_commit",
    "conversation_history",
    "conversation_of",
    "echo_conversation",
    "routes",
    "stored_form",
    "with_conversation",
]

#: Items one create / add call may carry (OpenAI's limit; clients send more in chunks).
MAX_ITEMS_PER_CALL = 20
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512
DEFAULT_LIMIT = 20
MAX_LIMIT = 100
#: A response in one of these states adds its items to its conversation; failed and cancelled ones
#: add nothing (the turn did not happen).
APPENDING_STATUSES = frozenset({"completed", "incomplete"})

#: `include` values the openai SDK sends on item routes. The bridge has none of the extra data they
#: ask for (no hosted tools, no logprobs kept), so a known value is accepted and changes nothing.
KNOWN_INCLUDES = frozenset({
    "web_search_call.action.sources", "web_search_call.results", "code_interpreter_call.outputs",
    "computer_call_output.output.image_url", "file_search_call.results", "message.input_image.image_url",
    "message.output_text.logprobs", "reasoning.encrypted_content",
})  # fmt: skip

# ------------------------------------------------------------------------------------- item rules

#: What an item of each type must carry: field → accepted JSON types. Checked on every item a
#: client adds, so a conversation never holds an item that would fail every later response on it.
_ITEM_FIELDS: dict[str, dict[str, tuple[type, ...]]] = {
    "message": {"role": (str,), "content": (str, list)},
    "function_call": {"call_id": (str,), "name": (str,), "arguments": (str,)},
    "function_call_output": {"call_id": (str,), "output": (str, list)},
    "custom_tool_call": {"call_id": (str,), "name": (str,), "input": (str,)},
    "custom_tool_call_output": {"call_id": (str,), "output": (str, list)},
    "reasoning": {"summary": (list,)},
}
_MESSAGE_ROLES = frozenset({"user", "assistant", "system", "developer"})
#: Item types that get `status: "completed"` when stored without one, as OpenAI's stored items have.
_STATUS_TYPES = frozenset({"message", "function_call", "function_call_output", "custom_tool_call",
                           "custom_tool_call_output"})  # fmt: skip


def _check_item(item: Any, where: str) -> None:
    if not isinstance(item, dict):
        raise invalid(f"Invalid type for '{where}': expected an object.", where, "invalid_type")
    kind = item.get("type", "message" if "role" in item else None)
    rules = _ITEM_FIELDS.get(kind) if isinstance(kind, str) else None
    if rules is None:
        known = ", ".join(sorted(_ITEM_FIELDS))
        raise invalid(f"Invalid value for '{where}.type': {kind!r} is not an item type this bridge keeps "
                      f"({known}).", f"{where}.type", "invalid_value")  # fmt: skip
    for name, kinds in rules.items():
        if not isinstance(item.get(name), kinds):
            raise invalid(f"Missing or invalid '{where}.{name}'.", f"{where}.{name}", "invalid_value")
    if kind == "message" and item["role"] not in _MESSAGE_ROLES:
        raise invalid(f"Invalid value for '{where}.role': {item['role']!r}.", f"{where}.role", "invalid_value")
    if kind == "message" and isinstance(item["content"], list):
        for index, part in enumerate(item["content"]):
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                spot = f"{where}.content[{index}]"
                raise invalid(f"Invalid '{spot}': expected a content part object with a type.", spot, "invalid_value")
    item_id = item.get("id")
    if item_id is not None and not isinstance(item_id, str):
        raise invalid(f"Invalid type for '{where}.id': expected a string.", f"{where}.id", "invalid_type")


def _stored_item(item: dict[str, Any]) -> dict[str, Any]:
    """One item in the form OpenAI lists conversation items: `type` set, message content as parts
    (`input_text` for user/system/developer, `output_text` with `annotations` for the assistant),
    `status: "completed"` on messages and tool calls/outputs. Ids are left to the store."""
    kind = item.get("type") or ("message" if "role" in item else None)
    if kind not in _STATUS_TYPES:
        return item
    out = dict(item)
    out["type"] = kind
    if kind == "message":
        part_type = "output_text" if out.get("role") == "assistant" else "input_text"
        content = out.get("content")
        if isinstance(content, str):
            content = [{"type": part_type, "text": content}]
        if isinstance(content, list):
            content = [
                {**part, "annotations": []}
                if isinstance(part, dict) and part.get("type") == "output_text" and "annotations" not in part
                else part
                for part in content
            ]
        out["content"] = content
    out.setdefault("status", "completed")
    if out.get("status") is None:
        out["status"] = "completed"
    return out


def stored_form(items: list[Any]) -> list[Any]:
    """`items` as a conversation keeps them (see `_stored_item`); non-objects are left as they are."""
    return [_stored_item(item) if isinstance(item, dict) else item for item in items]


def _items_param(value: Any, name: str, *, required: bool) -> list[dict[str, Any]]:
    if value is None:
        if required:
            raise invalid(f"Missing required parameter: '{name}'.", name, "missing_required_parameter")
        return []
    if not isinstance(value, list):
        raise invalid(f"Invalid type for '{name}': expected an array.", name, "invalid_type")
    if len(value) > MAX_ITEMS_PER_CALL:
        raise invalid(f"Invalid '{name}': array too long. Expected an array with maximum length "
                      f"{MAX_ITEMS_PER_CALL}, but got an array with length {len(value)} instead.", name,
                      "array_above_max_length")  # fmt: skip
    for index, item in enumerate(value):
        _check_item(item, f"{name}[{index}]")
    return stored_form(value)


def _metadata_param(value: Any) -> dict[str, str]:
    """OpenAI's metadata rules: at most 16 pairs, string keys ≤ 64 characters, string values ≤ 512."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid("Invalid type for 'metadata': expected an object.", "metadata", "invalid_type")
    if len(value) > MAX_METADATA_PAIRS:
        raise invalid(f"Invalid 'metadata': too many properties. Expected an object with at most "
                      f"{MAX_METADATA_PAIRS} properties, but got an object with {len(value)} properties instead.",
                      "metadata", "object_above_max_properties")  # fmt: skip
    for key, item in value.items():
        if len(key) > MAX_METADATA_KEY:
            raise invalid(f"Invalid 'metadata': the key '{key[:20]}…' is {len(key)} characters long; keys can be "
                          f"at most {MAX_METADATA_KEY}.", "metadata", "invalid_value")  # fmt: skip
        if not isinstance(item, str):
            raise invalid(f"Invalid type for 'metadata.{key}': expected a string.", f"metadata.{key}", "invalid_type")
        if len(item) > MAX_METADATA_VALUE:
            raise invalid(f"Invalid 'metadata.{key}': string too long. Expected a string with maximum length "
                          f"{MAX_METADATA_VALUE}, but got a string with length {len(item)} instead.",
                          f"metadata.{key}", "string_above_max_length")  # fmt: skip
    return value


# ---------------------------------------------------------------------------------------- helpers


def _owner(request: Request) -> str | None:
    return request.scope.get(OWNER_KEY)


def _store(request: Request) -> Any:
    """The store, or a 400 when the bridge keeps nothing (`--store none`)."""
    store = getattr(request.app.state, "store", None)
    if store is None or not getattr(store, "keeps_responses", True):
        raise invalid("Conversations need a store, and this bridge runs with --store none.", None, "invalid_value")
    return store


def _missing(conversation_id: str, param: str = "conversation_id") -> ApiError:
    return not_found(f"Conversation with id '{conversation_id}' not found.", param)


def _missing_item(conversation_id: str, item_id: str) -> ApiError:
    return not_found(f"Item with id '{item_id}' not found in conversation '{conversation_id}'.", "item_id")


async def _json_body(request: Request, *, allowed: frozenset[str]) -> dict[str, Any]:
    """The JSON object body (an empty body is `{}`); unknown fields are refused as OpenAI does."""
    config = getattr(request.app.state, "config", None)
    limit = getattr(config, "max_body_bytes", 32 * 1024 * 1024)
    timeouts = getattr(config, "timeouts", None)
    raw = await read_body(request, limit, min(getattr(timeouts, "idle", 30.0), 30.0))  # bounded, no stall
    if not raw.strip():
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise invalid(f"We could not parse the JSON body of your request: {exc.msg}.", None, "invalid_json") from None
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.", None, "invalid_json")
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


def _unavailable(exc: StoreUnavailable) -> ApiError:
    return ApiError(503, "The conversation store is unavailable; retry the request.", code="store_unavailable")


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
            return error_response(_unavailable(exc))

    endpoint.__name__ = handler.__name__
    endpoint.__doc__ = handler.__doc__
    return endpoint


# --------------------------------------------------------------------------------------- handlers


async def create_conversation(request: Request) -> dict[str, Any]:
    """`POST /v1/conversations`: a new conversation, with up to 20 initial items."""
    body = await _json_body(request, allowed=frozenset({"items", "metadata"}))
    items = _items_param(body.get("items"), "items", required=False)
    metadata = _metadata_param(body.get("metadata"))
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
        raise _missing(conversation_id)
    return dict(found)


async def update_conversation(request: Request) -> dict[str, Any]:
    """`POST /v1/conversations/{id}`: replace its metadata (`metadata` is required; null clears it)."""
    conversation_id = request.path_params["conversation_id"]
    body = await _json_body(request, allowed=frozenset({"metadata"}))
    if "metadata" not in body:
        raise invalid("Missing required parameter: 'metadata'.", "metadata", "missing_required_parameter")
    metadata = _metadata_param(body["metadata"])
    updated = await _store(request).update_conversation(conversation_id, metadata, owner=_owner(request))
    if updated is None:
        raise _missing(conversation_id)
    return dict(updated)


async def delete_conversation(request: Request) -> dict[str, Any]:
    conversation_id = request.path_params["conversation_id"]
    if not await _store(request).delete_conversation(conversation_id, owner=_owner(request)):
        raise _missing(conversation_id)
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
        raise _missing(conversation_id)
    return _list(list(found.get("data") or []), bool(found.get("has_more")))


async def add_items(request: Request) -> dict[str, Any]:
    """`POST /v1/conversations/{id}/items`: append up to 20 items; answers the list of them."""
    conversation_id = request.path_params["conversation_id"]
    _include_param(request)
    body = await _json_body(request, allowed=frozenset({"items"}))
    items = _items_param(body.get("items"), "items", required=True)
    added = await _store(request).add_conversation_items(conversation_id, items, owner=_owner(request))
    if added is None:
        raise _missing(conversation_id)
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
            raise _missing(conversation_id)
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
        raise _missing(conversation_id)
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
            raise _unavailable(exc) from None
    if items is None:
        raise _missing(conversation_id, "conversation")
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
