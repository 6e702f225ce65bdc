"""The connection limit in server/http_protocol.py, on protocol objects with in-memory transports,
so the order of events is exact: a connection refused at the limit closes its transport at once,
but asyncio reports it lost only on a later loop iteration. A client already inside the limit must
be served in that gap (and after it); the refused connection is no longer one of the open ones.
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.server import ServerState

from server.config import Limits
from server.http_protocol import bounded_protocol

LIMIT = 4


class _Transport:
    """What the protocol writes to: keeps the bytes, and closes without reporting it (as asyncio's
    own transports report `connection_lost` only later)."""

    def __init__(self) -> None:
        self.written = b""
        self.closing = False

    def write(self, data: bytes) -> None:
        self.written += data

    def writelines(self, parts: Any) -> None:
        for part in parts:
            self.write(part)

    def close(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_write_buffer_limits(self, *args: Any, **kwargs: Any) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


async def _ok(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


def _served(limits: Limits) -> Any:
    async def run() -> tuple[list[bytes], bytes, bytes]:
        config = uvicorn.Config(_ok, lifespan="off", log_level="warning")
        config.load()
        state = ServerState()
        protocol = bounded_protocol(limits)

        def connect() -> tuple[Any, _Transport]:
            conn = protocol(config, state, {})
            transport = _Transport()
            conn.connection_made(transport)
            return conn, transport

        inside = [connect() for _ in range(LIMIT)]  # the first is a client's kept-alive connection
        refused = [connect()[1] for _ in range(3)]
        client, client_transport = inside[0]
        client.data_received(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")  # in the same loop step
        for _ in range(5):
            await asyncio.sleep(0)
        first = client_transport.written
        client_transport.written = b""
        late = connect()[1]  # the set is still at the limit: the next newcomer is refused as well
        for conn, _ in inside[1:]:
            conn.connection_lost(None)
        client.data_received(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        for _ in range(5):
            await asyncio.sleep(0)
        return [t.written for t in [*refused, late]], first, client_transport.written

    return asyncio.run(run())


def test_a_client_inside_the_limit_is_served_while_refused_connections_are_closing() -> None:
    refused, first, second = _served(Limits(max_client_connections=LIMIT))
    assert all(answer.startswith(b"HTTP/1.1 503") and b"server_busy" in answer for answer in refused)
    assert first.startswith(b"HTTP/1.1 200"), first[:200]
    assert second.startswith(b"HTTP/1.1 200"), second[:200]
