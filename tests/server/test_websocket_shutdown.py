"""WebSocket mode at shutdown (server/ws_protocol.py, server/websocket.py): a turn in flight gets the
grace period and a terminal event, as an SSE stream does, instead of uvicorn's bare 1012 close.

In-thread bridges (the protocol is the one `serve` passes to uvicorn) and one real `serve` process
stopped by SIGTERM, the way an operator or an orchestrator stops it.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from tests.conftest import BridgeHandle, bridge_config, start_bridge
from tests.server.test_reliability_client import BridgeProcess
from tests.server.test_websocket import TIMEOUT, create, read_turn, terminal, ws_url
from tests.support.servers import run_app

pytestmark = pytest.mark.timeout(90)

SHUTTING_DOWN = {"code": "server_shutting_down", "message": "The server is shutting down."}


async def _close_code(ws: Any) -> int | None:
    """Wait for the server to close the socket; the code it sent."""
    with pytest.raises(ConnectionClosed):
        while True:
            await asyncio.wait_for(ws.recv(), TIMEOUT)
    return ws.close_code


def _run_stopping(handle: BridgeHandle, scenario: Callable[[Callable[[], None]], Awaitable[Any]]) -> Any:
    """Run `scenario(stop)`: `stop()` starts the bridge's shutdown in a thread, as a signal would (the
    scenario goes on reading meanwhile); the bridge is stopped and the thread joined afterwards."""
    stoppers: list[threading.Thread] = []

    def stop() -> None:
        stoppers.append(threading.Thread(target=handle.stop))
        stoppers[-1].start()

    try:
        return asyncio.run(scenario(stop))
    finally:
        if stoppers:
            stoppers[0].join(20)
        else:
            handle.stop()


def test_a_turn_in_flight_ends_with_response_failed_then_1012(backend_url: str) -> None:
    handle = start_bridge(bridge_config(backend_url, shutdown_grace=0.3))

    async def scenario(stop: Callable[[], None]) -> tuple[list[dict[str, Any]], int | None, float]:
        async with websockets.connect(ws_url(handle)) as ws:
            await ws.send(orjson.dumps(create("chaos:stall", input="hi")).decode())
            first = orjson.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
            started = time.monotonic()
            stop()
            rest = await read_turn(ws)
            code = await _close_code(ws)
            return [first, *rest], code, time.monotonic() - started

    events, code, took = _run_stopping(handle, scenario)
    assert events[0]["type"] == "response.created"
    response = terminal(events)
    assert events[-1]["type"] == "response.failed"
    assert response["error"] == SHUTTING_DOWN
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert code == 1012
    assert took >= 0.25, "the turn should have had the grace period"


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    body = {"id": "chatcmpl-slow", "object": "chat.completion.chunk", "created": 1, "model": "slow",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}  # fmt: skip
    return b"data: " + orjson.dumps(body) + b"\n\n"


async def _slow_backend(scope: Any, receive: Any, send: Any) -> None:
    """A chat backend whose stream starts at once and finishes a second later."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
    await send({"type": "http.response.body", "body": _chunk({"role": "assistant", "content": "Slow"}), "more_body": True})
    await asyncio.sleep(1.0)
    await send({"type": "http.response.body", "body": _chunk({"content": " but done."}) + _chunk({}, "stop")
                + b"data: [DONE]\n\n"})  # fmt: skip


def test_a_turn_that_finishes_within_the_grace_period_completes() -> None:
    """A turn still streaming when the shutdown starts, and ending within the grace: it completes."""
    with run_app(_slow_backend) as backend:
        handle = start_bridge(bridge_config(backend.url + "/v1", shutdown_grace=10))

        async def scenario(stop: Callable[[], None]) -> tuple[list[dict[str, Any]], int | None]:
            async with websockets.connect(ws_url(handle)) as ws:
                await ws.send(orjson.dumps(create(input="hi")).decode())
                events = []
                while not any(e["type"] == "response.output_text.delta" for e in events):
                    events.append(orjson.loads(await asyncio.wait_for(ws.recv(), TIMEOUT)))
                stop()  # mid-turn: the first delta is out, the rest is a second away
                events.extend(await read_turn(ws))
                return events, await _close_code(ws)

        events, code = _run_stopping(handle, scenario)
    response = terminal(events)
    assert response["status"] == "completed", events[-1]
    assert response["output"][0]["content"][0]["text"] == "Slow but done."
    assert code == 1012


def test_queued_turns_get_a_503_each_then_the_close(backend_url: str) -> None:
    handle = start_bridge(bridge_config(backend_url, shutdown_grace=0.3))

    async def scenario(stop: Callable[[], None]) -> tuple[list[dict[str, Any]], list[list[dict[str, Any]]], int | None]:
        async with websockets.connect(ws_url(handle)) as ws:
            await ws.send(orjson.dumps(create("chaos:stall", input="hi")).decode())
            first = orjson.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
            for word in ("second", "third"):
                await ws.send(orjson.dumps(create(input=f"@text {word}")).decode())
            await asyncio.sleep(0.1)  # both are queued behind the stalled turn
            stop()
            in_flight = [first, *await read_turn(ws)]
            queued = [await read_turn(ws), await read_turn(ws)]
            return in_flight, queued, await _close_code(ws)

    in_flight, queued, code = _run_stopping(handle, scenario)
    assert terminal(in_flight)["error"] == SHUTTING_DOWN
    for turn in queued:
        assert len(turn) == 1 and turn[0]["type"] == "error", turn
        assert turn[0]["status"] == 503 and turn[0]["error"]["code"] == "server_shutting_down", turn
    assert code == 1012


def test_an_idle_connection_is_closed_at_once_with_1012(backend_url: str) -> None:
    """Nothing to wait for: the shutdown does not sit out the grace period for an idle socket."""
    handle = start_bridge(bridge_config(backend_url, shutdown_grace=30))

    async def scenario(stop: Callable[[], None]) -> tuple[int | None, float]:
        async with websockets.connect(ws_url(handle)) as ws:
            await ws.send(orjson.dumps(create(input="@text done")).decode())
            assert terminal(await read_turn(ws))["status"] == "completed"
            started = time.monotonic()
            stop()
            code = await _close_code(ws)
            return code, time.monotonic() - started

    code, took = _run_stopping(handle, scenario)
    assert code == 1012
    assert took < 5, f"an idle socket waited {took:.1f} s at shutdown"


def test_sigterm_on_serve_gives_the_websocket_turn_its_terminal_event(backend_url: str, tmp_path: Path) -> None:
    """The real command, stopped by a signal: the same answer as in-thread."""
    config = tmp_path / "bridge.toml"
    config.write_text("shutdown_grace = 0.3\n")
    with BridgeProcess("--config", str(config), "--upstream", backend_url, "--store", "none") as bridge:

        async def scenario() -> tuple[list[dict[str, Any]], int | None]:
            url = bridge.root.replace("http://", "ws://") + "/v1/responses"
            async with websockets.connect(url) as ws:
                await ws.send(orjson.dumps(create("chaos:stall", input="hi")).decode())
                first = orjson.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
                bridge.proc.send_signal(signal.SIGTERM)
                rest = await read_turn(ws)
                return [first, *rest], await _close_code(ws)

        events, code = asyncio.run(scenario())
        # uvicorn re-raises the SIGTERM it handled once it has shut down cleanly.
        assert bridge.proc.wait(20) in (0, -signal.SIGTERM)
    assert events[-1]["type"] == "response.failed"
    assert terminal(events)["error"] == SHUTTING_DOWN
    assert code == 1012
