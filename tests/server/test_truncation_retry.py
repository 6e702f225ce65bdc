"""`truncation: "auto"` against a backend with a context limit (docs/conversations.md, "truncation: auto"): the bridge
drops the oldest turns and retries once; `"disabled"` leaves the backend's refusal standing.

The backend is the fixture backend behind `LimitedBackend`, which refuses any chat request whose
body is over a byte limit the way OpenAI and vLLM refuse a prompt over the model's context (400,
`context_length_exceeded`, the limit and the request's size in the message).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
import websockets
from starlette.types import Receive, Scope, Send

from tests.conftest import BridgeHandle, bridge_config, start_bridge
from tests.support.servers import read_body, replaying, run_app

LIMIT_BYTES = 4000


class LimitedBackend:
    """The fixture backend with a context window: chat bodies over `limit` bytes are refused."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.seen: list[dict[str, Any]] = []  # every chat body, refused or not
        self.refused = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].endswith("/chat/completions"):
            await self.app(scope, receive, send)
            return
        body = await read_body(receive)
        self.seen.append(orjson.loads(body))
        if len(body) > self.limit:
            self.refused += 1
            error = {"error": {"message": f"This model's maximum context length is {self.limit // 4} tokens. However, "
                                          f"your messages resulted in {len(body) // 4} tokens.",
                               "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}}  # fmt: skip
            await send({"type": "http.response.start", "status": 400, "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": orjson.dumps(error)})
            return
        await self.app(scope, replaying(body, receive), send)


@pytest.fixture
def limited() -> Iterator[tuple[LimitedBackend, BridgeHandle]]:
    from fixtures.backend import create_app

    backend = LimitedBackend(create_app(), LIMIT_BYTES)
    with run_app(backend) as running:
        handle = start_bridge(bridge_config(running.url + "/v1"))
        try:
            yield backend, handle
        finally:
            handle.stop()


def long_conversation(turns: int = 8) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = [{"type": "message", "role": "system", "content": "You are terse."}]
    for turn in range(turns):
        items.append({"type": "message", "role": "user", "content": f"question {turn} " + "q" * 400})
        items.append({"type": "function_call", "call_id": f"call_{turn}", "name": "look", "arguments": "{}"})
        items.append({"type": "function_call_output", "call_id": f"call_{turn}", "output": "o" * 200})
        items.append({"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "a" * 100}]})
    items.append({"type": "message", "role": "user", "content": "@text the last answer"})
    return items


TOOLS = [{"type": "function", "name": "look", "parameters": {"type": "object", "properties": {}}}]


def assert_retried_shorter(backend: LimitedBackend) -> dict[str, Any]:
    assert backend.refused == 1 and len(backend.seen) == 2, (backend.refused, len(backend.seen))
    first, second = backend.seen
    assert len(second["messages"]) < len(first["messages"])
    assert second["messages"][0] == first["messages"][0] == {"role": "system", "content": "You are terse."}
    assert second["messages"][-1] == first["messages"][-1], "the turn being answered stays"
    assert second["messages"][1]["role"] == "user", "whole turns go: the rest starts with a user turn"
    calls = {c["id"] for m in second["messages"] for c in m.get("tool_calls") or []}
    outputs = {m["tool_call_id"] for m in second["messages"] if m["role"] == "tool"}
    assert calls == outputs, "no tool call without its output"
    return second


def test_http_truncation_auto_retries_with_the_oldest_turns_dropped(limited: tuple[LimitedBackend, BridgeHandle]) -> None:
    backend, handle = limited
    body = {"model": "fixture-scripted", "truncation": "auto", "tools": TOOLS, "input": long_conversation()}
    answer = httpx.post(handle.url + "/responses", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    response = answer.json()
    assert response["truncation"] == "auto"
    assert response["output"][0]["content"][0]["text"] == "the last answer"
    assert_retried_shorter(backend)


def test_http_stream_truncation_auto(limited: tuple[LimitedBackend, BridgeHandle]) -> None:
    backend, handle = limited
    body = {"model": "fixture-scripted", "truncation": "auto", "tools": TOOLS, "input": long_conversation(),
            "stream": True}  # fmt: skip
    answer = httpx.post(handle.url + "/responses", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    assert '"type":"response.completed"' in answer.text and '"truncation":"auto"' in answer.text
    assert_retried_shorter(backend)


@pytest.mark.parametrize("truncation", [None, "disabled"])
def test_http_without_truncation_the_refusal_stands(
    limited: tuple[LimitedBackend, BridgeHandle], truncation: str | None
) -> None:
    backend, handle = limited
    body: dict[str, Any] = {"model": "fixture-scripted", "tools": TOOLS, "input": long_conversation()}
    if truncation is not None:
        body["truncation"] = truncation
    answer = httpx.post(handle.url + "/responses", json=body, timeout=30)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "context_length_exceeded"
    assert len(backend.seen) == 1, "no retry"


def test_http_nothing_to_drop_leaves_the_refusal(limited: tuple[LimitedBackend, BridgeHandle]) -> None:
    backend, handle = limited
    body = {"model": "fixture-scripted", "truncation": "auto", "input": "x" * (LIMIT_BYTES * 2)}
    answer = httpx.post(handle.url + "/responses", json=body, timeout=30)
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "context_length_exceeded"
    assert len(backend.seen) == 1


def test_websocket_truncation_auto(limited: tuple[LimitedBackend, BridgeHandle]) -> None:
    backend, handle = limited

    async def scenario() -> list[dict[str, Any]]:
        async with websockets.connect(handle.root.replace("http://", "ws://") + "/v1/responses") as ws:
            await ws.send(orjson.dumps({"type": "response.create", "model": "fixture-scripted", "truncation": "auto",
                                        "store": False, "tools": TOOLS, "input": long_conversation()}).decode())  # fmt: skip
            events = []
            while not events or events[-1]["type"] not in ("response.completed", "response.failed", "error"):
                events.append(orjson.loads(await asyncio.wait_for(ws.recv(), 20)))
            return events

    events = asyncio.run(scenario())
    assert events[-1]["type"] == "response.completed", events[-1]
    assert events[-1]["response"]["truncation"] == "auto"
    assert_retried_shorter(backend)


def test_websocket_without_truncation_is_an_error_event(limited: tuple[LimitedBackend, BridgeHandle]) -> None:
    _, handle = limited

    async def scenario() -> dict[str, Any]:
        async with websockets.connect(handle.root.replace("http://", "ws://") + "/v1/responses") as ws:
            await ws.send(orjson.dumps({"type": "response.create", "model": "fixture-scripted", "store": False,
                                        "tools": TOOLS, "input": long_conversation()}).decode())  # fmt: skip
            return orjson.loads(await asyncio.wait_for(ws.recv(), 20))

    event = asyncio.run(scenario())
    assert event["type"] == "error" and event["status"] == 400
    assert event["error"]["code"] == "context_length_exceeded"


