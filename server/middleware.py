"""The one middleware: API-key auth for `/v1/*` and the access log (one line per request, written
when it ends, with the status the client really got).

It sets the scope keys of `server.scope`: the access record, the caller's token and, when keys are
configured, the caller's owner fingerprint (so stored responses stay per key).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.accesslog import AccessRecord, emit
from server.auth import caller_token, check_key, fingerprint
from server.config import BridgeConfig
from server.errors import ApiError, error_response
from server.scope import ACCESS_KEY, OWNER_KEY, TOKEN_KEY

__all__ = ["BridgeMiddleware"]

_UNAUTHORISED = "Missing or invalid API key. Send it as 'Authorization: Bearer KEY' or 'x-api-key: KEY'."


class BridgeMiddleware:
    """Access log and API-key auth around the whole app (health checks are not logged)."""

    def __init__(self, app: ASGIApp, config: BridgeConfig) -> None:
        self.app = app
        self.config = config
        self.keys = config.api_keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        record = AccessRecord(scope["method"], scope["path"])
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
            await self.app(scope, receive, send_wrapper)
        except BaseException:
            if record.status == 0:
                record.status = 500
            raise
        finally:
            if scope["path"] != "/healthz":
                emit(record, self.config.log_format)
