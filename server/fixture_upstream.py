"""`--upstream fixtures`: the project's fixture chat backend (fixtures/backend.py) served on a free
loopback port in its own thread, so the bridge can be tried and tested without a real backend.

Why apart from server/upstream.py: it is the one place the server imports `fixtures`, lazily, and
only when a configuration names it; the upstream client itself knows nothing of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time

from server.config import FIXTURES_UPSTREAM, Upstream

__all__ = ["FixtureBackend", "is_fixtures"]

log = logging.getLogger("responses_bridge")


class FixtureBackend:
    """The project's fixture chat backend on a free loopback port, in its own thread and loop.

    A second real server rather than httpx.ASGITransport: ASGITransport buffers the whole response
    body, so streams would not arrive incrementally (keep-alives, cuts and stalls would be lost)."""

    def __init__(self) -> None:
        import uvicorn

        from fixtures.backend import create_app

        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self.port = int(self._sock.getsockname()[1])
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        config = uvicorn.Config(
            create_app(), host="127.0.0.1", port=self.port, log_config=None, log_level=None, access_log=False,
            lifespan="off", timeout_graceful_shutdown=2,
        )  # fmt: skip
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="fixture-backend", daemon=True)

    def _run(self) -> None:
        try:
            self._server.run(sockets=[self._sock])
        except Exception:  # the thread must not die silently
            log.exception("fixture backend crashed")

    async def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the fixture backend did not start")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self._server.should_exit = True
        await asyncio.to_thread(self._thread.join, 5.0)
        with contextlib.suppress(OSError):
            self._sock.close()


def is_fixtures(upstream: Upstream) -> bool:
    return upstream.base_url == FIXTURES_UPSTREAM
