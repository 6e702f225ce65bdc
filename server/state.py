"""Process state and lifecycle: what every request shares (`BridgeState`), the lifespan that opens
and closes it, the early shutdown on SIGINT/SIGTERM, and `/healthz`.

Shutdown: new requests get 503; live streams get `shutdown_grace` seconds, then their pumps end
them with `response.failed` (code `server_shutting_down`) and `[DONE]`; background jobs fail at once
with the same code (server/background.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from server.background import begin_background_shutdown, shutdown_background
from server.config import BridgeConfig
from server.errors import JSONResponse
from server.fixture_upstream import FixtureBackend, is_fixtures
from server.pump import EventPump
from server.store import open_store, run_heartbeat, run_retention
from server.upstream import UpstreamClient

__all__ = ["BridgeState", "healthz", "lifespan"]

log = logging.getLogger("responses_bridge")


class BridgeState:
    """Everything shared by requests: config, upstream clients, the store, live pumps."""

    def __init__(self, config: BridgeConfig) -> None:
        self.config = config
        self.clients: dict[str, UpstreamClient] = {}
        self.store: Any = None
        self.streams: set[EventPump] = set()  # live pumps (SSE; WebSocket later)
        self.ready = False
        self.shutting_down = False
        self.fixture_backends: list[FixtureBackend] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self.app: Any = None
        self.retention: asyncio.Task[None] | None = None
        self.heartbeat: asyncio.Task[None] | None = None
        #: This process's id in the store's replica table: background jobs it starts record it, so
        #: after a crash another replica (or the next start) can tell its jobs are orphans.
        self.replica_id = f"replica_{secrets.token_hex(8)}"

    @property
    def keeps_responses(self) -> bool:
        """Whether responses are stored (a store is open and it is not the null store)."""
        return self.store is not None and bool(getattr(self.store, "keeps_responses", True))

    def track(self, pump: EventPump) -> None:
        """Count `pump` as live until it closes, so a shutdown reaches it (create it with
        `on_close=state.streams.discard`)."""
        self.streams.add(pump)
        if self.shutting_down:  # shutdown began while we waited on the backend
            self._abort_later(pump)

    def _abort_later(self, pump: EventPump) -> None:
        if self.loop is not None:
            self.loop.call_later(self.config.shutdown_grace, pump.abort, "shutdown")

    def begin_shutdown(self) -> None:
        """Stop taking requests; in-flight streams get `shutdown_grace` seconds, then end with
        `response.failed` (code `server_shutting_down`) and `[DONE]`, never mid-frame."""
        if self.shutting_down:
            return
        self.shutting_down = True
        if self.loop is None:
            return
        log.info("shutting down: %d stream(s) in flight", len(self.streams))
        for pump in list(self.streams):
            self._abort_later(pump)
        if self.app is not None and self.store is not None:
            begin_background_shutdown(self.app)  # jobs fail now; followers end, so uvicorn need not wait

    async def drain(self) -> None:
        """Wait for in-flight streams to end (they are failed after the grace period)."""
        deadline = time.monotonic() + self.config.shutdown_grace + 5
        while self.streams and time.monotonic() < deadline:
            await asyncio.sleep(0.05)


def _install_signal_hook(state: BridgeState) -> Callable[[], None]:
    """Hear SIGINT/SIGTERM before uvicorn drains connections (it runs the lifespan shutdown only
    after every request has finished, too late to end streams cleanly). Chains to uvicorn's handler."""
    if threading.current_thread() is not threading.main_thread() or state.loop is None:
        return lambda: None
    loop = state.loop
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: Any) -> None:
        loop.call_soon_threadsafe(state.begin_shutdown)
        prev = previous.get(signum)
        if callable(prev):
            prev(signum, frame)

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.getsignal(sig)
            signal.signal(sig, handler)
        except (ValueError, OSError):
            previous.pop(sig, None)

    def restore() -> None:
        for sig, prev in previous.items():
            with contextlib.suppress(ValueError, OSError, TypeError):
                if signal.getsignal(sig) is handler:
                    signal.signal(sig, prev)

    return restore


async def _open_store(spec: str) -> Any:
    if not spec or spec == "none":
        return None
    store = open_store(spec)
    await store.open()
    return store


async def _open_upstreams(state: BridgeState) -> None:
    config = state.config
    for upstream in config.upstreams:
        base_url = None
        if is_fixtures(upstream):
            backend = FixtureBackend()
            await backend.start()
            state.fixture_backends.append(backend)
            base_url = backend.base_url
            log.info("upstream %s: serving the fixture backend at %s", upstream.name, base_url)
        state.clients[upstream.name] = UpstreamClient(upstream, config, base_url)


async def _recover(state: BridgeState) -> None:
    """Register this replica, end the background jobs of replicas that are gone (a crash leaves them
    `in_progress` for ever otherwise, and their followers waiting), and keep a heartbeat so the
    other replicas on a shared store can tell this one is alive (docs/store.md, recovery)."""
    store = state.store
    await store.register_replica(state.replica_id)
    ended = await store.recover_orphans(state.replica_id)
    if ended:
        log.warning("recovery: %d background response(s) left by a stopped bridge failed (server_restarted): %s",
                    len(ended), ", ".join(ended[:20]) + (" …" if len(ended) > 20 else ""))  # fmt: skip
    state.heartbeat = state.loop.create_task(run_heartbeat(store, state.replica_id, recover_after=30.0))


def lifespan(state: BridgeState) -> Callable[[Any], contextlib.AbstractAsyncContextManager[None]]:
    """The app's lifespan: upstream clients and the store open at start and close at the end."""

    @contextlib.asynccontextmanager
    async def run(app: Any) -> AsyncIterator[None]:
        state.loop = asyncio.get_running_loop()
        restore_signals = _install_signal_hook(state)
        try:
            await _open_upstreams(state)
            state.store = app.state.store = await _open_store(state.config.store)
            if state.store is not None and state.config.store_retention_days:
                state.retention = state.loop.create_task(run_retention(state.store, state.config.store_retention_days))
            if state.keeps_responses:
                await _recover(state)
            state.ready = True
            yield
        finally:
            state.begin_shutdown()
            await state.drain()
            if state.store is not None:
                await shutdown_background(app)
            restore_signals()
            for task in (state.retention, state.heartbeat):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
            for client in state.clients.values():
                await client.aclose()
            if state.store is not None:
                with contextlib.suppress(Exception):
                    await state.store.close()
            for backend in state.fixture_backends:
                await backend.stop()

    return run


async def healthz(request: Request) -> Response:
    state: BridgeState = request.app.state.bridge
    if not state.ready or state.shutting_down:
        return JSONResponse({"status": "shutting_down" if state.shutting_down else "starting"}, status_code=503)
    return JSONResponse({"status": "ok"})
