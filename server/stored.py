"""The stored-response routes: retrieve, delete, list input items, cancel (mounted by server/app.py).

They read the store from ``request.app.state.store`` and the caller's owner from the request scope
(``OWNER_KEY``, set by the auth middleware when API keys are configured), so one key never sees
another key's responses: a response of someone else answers exactly like a missing one (404).
Errors use OpenAI's shape ``{"error": {message, type, param, code}}``.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.background import background_stream, runner_for
from server.errors import ApiError, JSONResponse, error_response, not_found
from server.scope import OWNER_KEY

__all__ = ["OWNER_KEY", "routes"]

DEFAULT_LIMIT = 20
MAX_LIMIT = 100


def _error(status: int, message: str, param: str | None = None, code: str | None = None) -> Response:
    return error_response(ApiError(status, message, type="invalid_request_error", param=param, code=code))


def _not_found(response_id: str) -> Response:
    return error_response(not_found(f"No response found with id '{response_id}'.", "response_id"))


def _owner(request: Request) -> str | None:
    return request.scope.get(OWNER_KEY)


def _store(request: Request) -> Any:
    return getattr(request.app.state, "store", None)


def _int_param(request: Request, name: str) -> int | Response | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        return _error(400, f"Invalid '{name}': expected an integer, got {raw!r}.", name, "invalid_type")


def _bool_param(request: Request, name: str) -> bool | Response:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return False
    lowered = raw.lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    return _error(400, f"Invalid '{name}': expected true or false, got {raw!r}.", name, "invalid_type")


# ----------------------------------------------------------------------------------------- handlers


async def retrieve_response(request: Request) -> Response:
    """``GET /v1/responses/{id}``: the stored response, or (``stream=true``) its events, replayed from
    ``starting_after`` and then followed live while a background response runs."""
    response_id = request.path_params["response_id"]
    stream = _bool_param(request, "stream")
    if isinstance(stream, Response):
        return stream
    starting_after = _int_param(request, "starting_after")
    if isinstance(starting_after, Response):
        return starting_after
    store = _store(request)
    owner = _owner(request)
    response = None if store is None else await store.get(response_id, owner=owner)
    if response is None:
        return _not_found(response_id)
    if not stream:
        return JSONResponse(response)
    if not response.get("background"):
        return _error(
            400,
            f"Response '{response_id}' was not created with background=true, so it cannot be streamed; "
            "retrieve it without stream=true.",
            "stream",
            "invalid_value",
        )
    return background_stream(request.app, response_id, owner=owner, starting_after=starting_after)


async def delete_response(request: Request) -> Response:
    """``DELETE /v1/responses/{id}``; a running background job is stopped first."""
    response_id = request.path_params["response_id"]
    store = _store(request)
    owner = _owner(request)
    if store is None or await store.get(response_id, owner=owner) is None:
        return _not_found(response_id)
    runner = runner_for(request.app)
    if response_id in runner.tasks:
        await runner.cancel(response_id, owner=owner)
    if not await store.delete(response_id, owner=owner):
        return _not_found(response_id)
    return JSONResponse({"id": response_id, "object": "response.deleted", "deleted": True})


async def list_input_items(request: Request) -> Response:
    """``GET /v1/responses/{id}/input_items``: OpenAI's list paging (``after``/``before`` are item ids,
    ``order`` defaults to ``desc``, ``limit`` to 20, at most 100)."""
    response_id = request.path_params["response_id"]
    params = request.query_params
    limit = _int_param(request, "limit")
    if isinstance(limit, Response):
        return limit
    if limit is None:
        limit = DEFAULT_LIMIT
    if not 1 <= limit <= MAX_LIMIT:
        return _error(400, f"Invalid 'limit': {limit} is not between 1 and {MAX_LIMIT}.", "limit", "invalid_value")
    order = params.get("order") or "desc"
    if order not in ("asc", "desc"):
        return _error(400, f"Invalid 'order': {order!r}; expected 'asc' or 'desc'.", "order", "invalid_value")
    store = _store(request)
    items = None if store is None else await store.input_items(response_id, owner=_owner(request))
    if items is None:
        return _not_found(response_id)
    ordered = items if order == "asc" else list(reversed(items))
    start, end = 0, len(ordered)
    positions = {item.get("id"): index for index, item in enumerate(ordered)}
    for name in ("after", "before"):
        cursor = params.get(name)
        if not cursor:
            continue
        if cursor not in positions:
            return _error(400, f"Invalid '{name}': no input item with id '{cursor}' in response '{response_id}'.",
                          name, "invalid_value")  # fmt: skip
        if name == "after":
            start = max(start, positions[cursor] + 1)
        else:
            end = min(end, positions[cursor])
    window = ordered[start:end] if start < end else []
    # With only ``before``, the page is the part of the window nearest to the cursor.
    if params.get("before") and not params.get("after"):
        page = window[-limit:]
        has_more = len(window) > limit
    else:
        page = window[:limit]
        has_more = len(window) > limit
    return JSONResponse(
        {
            "object": "list",
            "data": page,
            "first_id": page[0].get("id") if page else None,
            "last_id": page[-1].get("id") if page else None,
            "has_more": has_more,
        }
    )


async def cancel_response(request: Request) -> Response:
    """``POST /v1/responses/{id}/cancel``: only background responses; cancelling a finished one returns
    it unchanged, cancelling twice is harmless."""
    response_id = request.path_params["response_id"]
    store = _store(request)
    owner = _owner(request)
    response = None if store is None else await store.get(response_id, owner=owner)
    if response is None:
        return _not_found(response_id)
    if not response.get("background"):
        return _error(400, "Only responses created with background=true can be cancelled.", "response_id",
                      "invalid_value")  # fmt: skip
    cancelled = await runner_for(request.app).cancel(response_id, owner=owner)
    if cancelled is None:
        return _not_found(response_id)
    return JSONResponse(cancelled)


def routes() -> list[Route]:
    return [
        Route("/v1/responses/{response_id}", retrieve_response, methods=["GET"]),
        Route("/v1/responses/{response_id}", delete_response, methods=["DELETE"]),
        Route("/v1/responses/{response_id}/input_items", list_input_items, methods=["GET"]),
        Route("/v1/responses/{response_id}/cancel", cancel_response, methods=["POST"]),
    ]
