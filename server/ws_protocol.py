"""uvicorn's WebSocket protocol with a graceful shutdown: a turn in flight is allowed to end.

At shutdown uvicorn closes every upgraded connection at once with 1012 ("service restart"), so a
WebSocket client mid-response would lose the turn without a terminal event, where an SSE client of
the same response gets `shutdown_grace` seconds and then `response.failed` (code
`server_shutting_down`). This subclass asks the app first: the connection's drain hook, put in the
scope under `server.scope.WS_DRAIN_KEY` by server/websocket.py, either lets the protocol close now
(the connection is idle) or takes the closing on itself and says how long it needs; the protocol then
waits that long at most, and closes as uvicorn would if the app has not. uvicorn waits for every
connection to close before it stops, so waiting here is what lets the turn end.

Wiring: `uvicorn.Config(..., ws="server.ws_protocol:DrainingWebSocketProtocol")` (server/cli.py).
The base class is uvicorn's default (`--ws auto` with `websockets` installed).
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from server.scope import WS_DRAIN_KEY

__all__ = ["WS_PROTOCOL", "DrainingWebSocketProtocol"]

#: What `uvicorn.Config(ws=...)` is given (a path, so `--workers N` children import it themselves).
WS_PROTOCOL = "server.ws_protocol:DrainingWebSocketProtocol"


class DrainingWebSocketProtocol(WebSocketsSansIOProtocol):
    """Closes at shutdown only once the app's drain hook allows it, or its deadline passed."""

    drain_deadline: asyncio.TimerHandle | None = None

    def shutdown(self) -> None:
        hook = getattr(self, "scope", {}).get(WS_DRAIN_KEY) if self.handshake_complete else None
        wait = None if hook is None or self.close_sent or self.disconnected else hook()
        if wait is None:
            super().shutdown()
            return
        if self.drain_deadline is None:
            self.drain_deadline = self.loop.call_later(wait, self._drain_expired)

    def _drain_expired(self) -> None:
        if not self.disconnected and not self.transport.is_closing():
            super().shutdown()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.drain_deadline is not None:
            self.drain_deadline.cancel()
        super().connection_lost(exc)
