"""`GET /v1/models` and `GET /v1/models/{model}`: the upstreams' model lists merged, aliases included."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from server.errors import JSONResponse, error_response, not_found
from server.scope import RESPONSES_ENDPOINT, TOKEN_KEY
from server.upstream import UpstreamClient

__all__ = ["list_models", "retrieve_model"]


async def list_models(request: Request) -> Response:
    return JSONResponse({"object": "list", "data": await _models(request)})


async def retrieve_model(request: Request) -> Response:
    model_id = request.path_params["model"]
    for entry in await _models(request):
        if entry["id"] == model_id:
            return JSONResponse(entry)
    if request.app.state.bridge.config.route(model_id) is None:
        return error_response(not_found(f"The model '{model_id}' does not exist.", "model", "model_not_found"))
    return JSONResponse(_entry(model_id, "upstream", int(time.time())))


def _entry(model_id: str, owned_by: str, created: int, alias_of: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"id": model_id, "object": "model", "created": created, "owned_by": owned_by,
                             "supported_endpoints": [RESPONSES_ENDPOINT]}  # fmt: skip
    if alias_of is not None:
        entry["alias_of"] = alias_of
    return entry


async def _models(request: Request) -> list[dict[str, Any]]:
    """The upstreams' model lists merged, aliases included, first upstream wins on a duplicate id."""
    state = request.app.state.bridge
    token = request.scope.get(TOKEN_KEY)
    seen: set[str] = set()
    data: list[dict[str, Any]] = []
    now = int(time.time())

    def add(model_id: str, owned_by: str, created: Any = None, alias_of: str | None = None) -> None:
        if model_id not in seen:
            seen.add(model_id)
            data.append(_entry(model_id, owned_by, created if isinstance(created, int) else now, alias_of))

    async def fetch(client: UpstreamClient | None) -> list[dict[str, Any]]:
        return [] if client is None else await client.list_models(token)

    upstreams = state.config.upstreams
    fetched = await asyncio.gather(*(fetch(None if u.models else state.clients[u.name]) for u in upstreams))
    for upstream, remote in zip(upstreams, fetched, strict=True):
        for alias, target in upstream.aliases.items():
            add(alias, upstream.name, alias_of=target)
        for name in upstream.models:
            add(name, upstream.name)
        if upstream.models:
            continue
        if upstream.prefix or upstream.accepts_any_model:
            for model in remote:
                add((upstream.prefix or "") + model["id"], str(model.get("owned_by") or upstream.name), model.get("created"))
    return data
