"""The one middleware: API-key auth for `/v1/*` and the access log (one line per request, written
when it ends, with the status the client really got).

It sets the scope keys of `server.scope`: the access record, the caller's token and, when keys are
configured, the caller's owner fingerprint (so stored responses stay per key).

`POST /v1/responses`, the one route on every request's hot path, is called from here directly
rather than through Starlette's exception middleware, router and `request_response` wrapper (three
layers and two `send` wrappers, ~10% of a request's CPU): the route catches its own errors, and
what escapes it takes the same way out as from the router (an `HTTPException` to the app's handler,
anything else to the server-error handler, which answers a 500 in OpenAI's shape).
"""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.accesslog import AccessRecord, emit
from server.auth import caller_token, check_key, fingerprint
from server.config import BridgeConfig
from server.errors import ApiError, error_response, handle_http_exception
from server.scope import ACCESS_KEY, OWNER_KEY, RESPONSES_ENDPOINT, TOKEN_KEY

__all__ = ["BridgeMiddleware"]

_UNAUTHORISED = "Missing or invalid API key. Send it as 'Authorization: Bearer KEY' or 'x-api-key: KEY'."


class BridgeMiddleware:
    """Access log and API-key auth around the whole app (health checks are not logged)."""

    def __init__(self, app: ASGIApp, config: BridgeConfig, metrics: Any = None) -> None:
        self.app = app
        self.config = config
        self.keys = config.api_keys
        self.metrics = metrics  # server.metrics.BridgeMetrics when metrics are on
        from server.responses import create_response  # the route imports the app's state, not this module

        self._create_response = create_response

    async def _responses_route(self, scope: Scope, receive: Receive, send: Send) -> None:
        """What the router and `starlette.routing.request_response` do for this one route."""
        endpoint = self._create_response
        scope["endpoint"] = endpoint
        scope["path_params"] = {}
        request = Request(scope, receive, send)
        try:
            response = await endpoint(request)
        except HTTPException as exc:
            response = await handle_http_exception(request, exc)
        await response(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        record = AccessRecord(scope["method"], scope["path"])
        record.metrics = self.metrics
        scope[ACCESS_KEY] = record

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                record.status = message["status"]
            await send(message)

        try:
            token = caller_token(scope["headers"])
            if self.keys and scope["path"].startswith("/v1/"):
                if not check_key(token, self.keys):
                    await error_response(ApiError(401, _UNAUTHORISED, code="invalid_api_key"))(
                        scope, receive, send_wrapper
                    )
                    return
                scope[OWNER_KEY] = fingerprint(token)
            scope[TOKEN_KEY] = token
            if scope["path"] == RESPONSES_ENDPOINT and scope["method"] == "POST" and not scope.get("root_path"):
                await self._responses_route(scope, receive, send_wrapper)
            else:
                await self.app(scope, receive, send_wrapper)
        except BaseException:
            if record.status == 0:
                record.status = 500
            raise
        finally:
            if scope["path"] != "/healthz":
                emit(record, self.config.log_format)
            if self.metrics is not None:
                self.metrics.observe(record, scope)
