"""`POST /v1/chat/completions`: chat clients on the same URL as Responses clients.

Per upstream, `api` (server/config.py) says what the backend speaks:

- `chat` (the default): the request passes through (server/chat_passthrough.py).
- `responses`: the request is translated and sent to `{base_url}/responses`, and the answer
  translated back (server/chat_translated.py).

This module is the route: the body read and checked (server/chat_request.py), the model routed, the
shutdown and disconnect rules, and the error shape the client sees.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

import translator
from server.accesslog import AccessRecord
from server.body import read_request_body
from server.chat_passthrough import passthrough
from server.chat_request import read_chat_request
from server.chat_stream import ChunkStream
from server.chat_translated import translated
from server.disconnect import cancel_on_disconnect
from server.errors import answer_or_error, shutting_down, translator_error
from server.scope import ACCESS_KEY, CHAT_ENDPOINT, TOKEN_KEY
from server.state import BridgeState
from server.turn import request_secrets, routed

__all__ = ["CHAT_ENDPOINT", "create_chat_completion"]




async def create_chat_completion(request: Request) -> Response | ChunkStream:
    state: BridgeState = request.app.state.bridge
    record: AccessRecord = request.scope.get(ACCESS_KEY) or AccessRecord("POST", CHAT_ENDPOINT)
    return await answer_or_error(record, _respond(request, state, record))


async def _respond(request: Request, state: BridgeState, record: AccessRecord) -> Response | ChunkStream:
    config = state.config
    if state.shutting_down:
        raise shutting_down()
    body = await read_request_body(request, config)
    asked = read_chat_request(body, config.limits)
    route = routed(config, asked.model)
    record.model, record.upstream, record.stream = asked.model, route.upstream.name, asked.stream
    client = state.clients[route.upstream.name]
    token = request.scope.get(TOKEN_KEY)
    secrets = request_secrets(client.secrets, route.upstream.passthrough, token)
    try:
        async with cancel_on_disconnect(request.receive):
            def stopping() -> bool:
                return state.shutting_down

            if route.upstream.api == "responses":
                return await translated(asked, route, client, token, secrets, record, config, stopping)
            return await passthrough(asked, route, client, token, secrets, record, config, stopping)
    except (translator.InvalidRequest, translator.UpstreamError) as exc:
        raise translator_error(exc, secrets) from None


