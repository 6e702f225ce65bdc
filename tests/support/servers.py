"""Run an ASGI app under a real uvicorn server on a free loopback port, in a background thread.

Tests talk to real servers over real sockets (no in-process transports), because the things that
break in production (frame splitting, disconnects, keep-alives, shutdown) only show up there.
Each server gets its own thread and event loop, so a blocking client (the sync openai SDK) can be
used from the test thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn

__all__ = ["RunningServer", "free_port", "read_body", "replaying", "run_app"]


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (prefer passing a bound socket where possible)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _shutdown_hook(app: Any) -> Any:
    """The app's `state.begin_shutdown` (the bridge's), found through middleware wrappers, if any."""
    seen = 0
    while app is not None and seen < 10:
        state = getattr(app, "state", None)
        hook = getattr(state, "begin_shutdown", None)
        if callable(hook):
            return hook
        app = getattr(app, "app", None)
        seen += 1
    return None


class _GracefulServer(uvicorn.Server):
    """uvicorn waits for in-flight requests before running the lifespan shutdown, so an app that
    wants to end its streams cleanly must hear about the shutdown earlier: tell it first."""

    def __init__(self, config: uvicorn.Config, app: Any) -> None:
        super().__init__(config)
        self._app = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        hook = _shutdown_hook(self._app)
        if hook is not None:
            hook()
        await super().shutdown(sockets=sockets)


@dataclass
class RunningServer:
    """A uvicorn server running in a thread. `url` is `http://host:port` (no trailing slash)."""

    app: Any
    host: str
    port: int
    server: uvicorn.Server
    thread: threading.Thread
    errors: list[BaseException] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self, timeout: float = 15.0) -> None:
        """Ask uvicorn to exit the way a signal would, and wait for the thread."""
        self.server.should_exit = True
        self.thread.join(timeout)
        if self.thread.is_alive():  # a stuck connection: force it
            self.server.force_exit = True
            self.thread.join(5.0)

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_app(
    app: Any,
    host: str = "127.0.0.1",
    *,
    timeout_graceful_shutdown: float | None = 10.0,
    startup_timeout: float = 20.0,
    **config_kwargs: Any,
) -> RunningServer:
    """Start `app` and return once uvicorn accepts connections (raises if it fails to start)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = int(sock.getsockname()[1])
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="auto",
        loop="uvloop",
        http="httptools",
        timeout_graceful_shutdown=timeout_graceful_shutdown,
        **config_kwargs,
    )
    server = _GracefulServer(config, app)
    errors: list[BaseException] = []

    def target() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # surfaced by start_app / stop
            errors.append(exc)
        finally:
            with contextlib.suppress(OSError):
                sock.close()

    thread = threading.Thread(target=target, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if errors or not thread.is_alive():
            raise RuntimeError(f"server failed to start: {errors[:1] or 'thread exited'}")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("server did not start in time")
        time.sleep(0.01)
    return RunningServer(app=app, host=host, port=port, server=server, thread=thread, errors=errors)


def run_app(app: Any, host: str = "127.0.0.1", **kwargs: Any) -> RunningServer:
    """Start `app`; the result is also a context manager that stops it:
    `with run_app(app) as srv: httpx.get(srv.url + "/healthz")`."""
    return start_app(app, host, **kwargs)


async def wait_for(predicate: Any, timeout: float = 5.0, interval: float = 0.02) -> bool:
    """Poll `predicate()` until it is true (async helper for tests running their own loop)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(interval)
    return bool(predicate())


def poll(predicate: Any, timeout: float = 5.0, interval: float = 0.02) -> bool:
    """Poll `predicate()` until it is true or `timeout` passes; returns the last result."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


async def read_body(receive: Any) -> bytes:
    """The whole request body of an ASGI `http` scope (for test apps that look at what they were sent)."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


def replaying(body: bytes, receive: Any) -> Any:
    """A `receive` that gives the app `body` (already read by a wrapper) as one message, then defers
    to the real `receive` (for the disconnect)."""
    replayed = False

    async def replay() -> Any:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
