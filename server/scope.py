"""Names shared across the server, each defined once: the keys the bridge puts in an ASGI request
scope, and the path of the responses endpoint.

The middleware sets the keys; routes and the SSE response read them. This module imports nothing, so
any module of the server may import it.
"""

from __future__ import annotations

__all__ = [
    "ACCESS_KEY", "CHAT_ENDPOINT", "OWNER_KEY", "RAW_SEND_KEY", "RESPONSES_ENDPOINT", "TOKEN_KEY",
    "WS_DRAIN_KEY",
]  # fmt: skip

RESPONSES_ENDPOINT = "/v1/responses"
CHAT_ENDPOINT = "/v1/chat/completions"

#: The request's `server.accesslog.AccessRecord` (written when the request ends).
ACCESS_KEY = "responses_bridge.access"
#: The key the caller presented, or None (forwarded to a passthrough backend).
TOKEN_KEY = "responses_bridge.token"
#: The owner fingerprint of that key when API keys are configured: stored responses are per owner.
OWNER_KEY = "responses_bridge.owner"
#: The server's own `send`, so a stream's body messages skip the middleware wrappers.
RAW_SEND_KEY = "responses_bridge.raw_send"
#: On a WebSocket scope: the connection's drain hook, which the server's WebSocket protocol
#: (server/ws_protocol.py) calls at shutdown instead of closing at once. It returns None when the
#: connection may be closed now, or the seconds to wait for it to close itself (a turn in flight).
WS_DRAIN_KEY = "responses_bridge.ws_drain"
