"""Names shared across the server, each defined once: the keys the bridge puts in an ASGI request
scope, and the path of the responses endpoint.

The middleware sets the keys; routes and the SSE response read them. This module imports nothing, so
any module of the server may import it.
"""

from __future__ import annotations

__all__ = ["ACCESS_KEY", "OWNER_KEY", "RAW_SEND_KEY", "RESPONSES_ENDPOINT", "TOKEN_KEY"]

RESPONSES_ENDPOINT = "/v1/responses"

#: The request's `server.accesslog.AccessRecord` (written when the request ends).
ACCESS_KEY = "responses_bridge.access"
#: The key the caller presented, or None (forwarded to a passthrough backend).
TOKEN_KEY = "responses_bridge.token"
#: The owner fingerprint of that key when API keys are configured: stored responses are per owner.
OWNER_KEY = "responses_bridge.owner"
#: The server's own `send`, so a stream's body messages skip the middleware wrappers.
RAW_SEND_KEY = "responses_bridge.raw_send"
