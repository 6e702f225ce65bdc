"""WebSocket mode of `/v1/responses` (docs/websocket.md), over real sockets: the `websockets` client
against the bridge under uvicorn, in front of the fixture backend.

The rules are those of Open Responses' WebSocket transport (its compliance suite checks seven of them:
one response, sequential responses, continuation, reconnect recovery, a missing previous response,
eviction after a failed continuation, a compacted window as a new chain); these are our own tests of
the same rules, plus what the bridge adds: handshake auth, warm-up, the age limit, a client leaving.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from tests.conftest import BridgeHandle, bridge_config, start_bridge
from tests.support.servers import RunningServer, poll, run_app
from translator.validate import assert_valid

TERMINAL = {"response.completed", "response.incomplete", "response.failed"}
TIMEOUT = 20.0


def ws_url(handle: BridgeHandle) -> str:
    return handle.root.replace("http://", "ws://") + "/v1/responses"


def create(model: str = "fixture-scripted", **body: Any) -> dict[str, Any]:
    return {"type": "response.create", "model": model, **body}


async def read_turn(ws: Any) -> list[dict[str, Any]]:
    """The messages of one turn: up to its terminal event, or the one error envelope (it has a
    `status`; an `error` event inside a stream has none and is followed by `response.failed`)."""
    events: list[dict[str, Any]] = []
    while True:
        raw = await asyncio.wait_for(ws.recv(), TIMEOUT)
        assert isinstance(raw, str), "events are text messages"
        event = orjson.loads(raw)
        assert isinstance(event, dict) and isinstance(event.get("type"), str), raw[:200]
        events.append(event)
        if event["type"] in TERMINAL or (event["type"] == "error" and "status" in event):
            return events


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def terminal(events: list[dict[str, Any]]) -> dict[str, Any]:
    assert events[-1]["type"] in TERMINAL, [e["type"] for e in events]
    return events[-1]["response"]


def assert_error(events: list[dict[str, Any]], status: int, code: str, param: str | None = None) -> dict[str, Any]:
    """The turn was exactly one error envelope of the WebSocket shape."""
    assert len(events) == 1, [e["type"] for e in events]
    event = events[0]
    assert event["type"] == "error" and event["status"] == status, event
    error = event["error"]
    assert set(error) == {"code", "message", "type", "param"}, error
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"], error
    assert error["type"] == "invalid_request_error" if status < 500 else error["type"], error
    if param is not None:
        assert error["param"] == param, error
    return error


def chat_texts(request: dict[str, Any]) -> list[tuple[str, str]]:
    """(role, text) of every chat message the backend received."""
    out = []
    for message in request["messages"]:
        content = message.get("content")
        if isinstance(content, list):
            content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        out.append((message["role"], content or ""))
    return out


# --------------------------------------------------------------------------------------- one turn


def test_a_response_arrives_as_the_same_events_one_per_text_message(bridge: BridgeHandle) -> None:
    async def scenario() -> list[dict[str, Any]]:
        async with websockets.connect(ws_url(bridge)) as ws:
            await ws.send(orjson.dumps(create(input=[{"type": "message", "role": "user", "content": "Count to 3."}])).decode())
            return await read_turn(ws)

    events = run(scenario())
    request = {"model": "fixture-scripted", "input": [{"type": "message", "role": "user", "content": "Count to 3."}]}
    assert_valid(events, request, profile="openresponses")
    response = terminal(events)
    assert response["status"] == "completed"
    assert response["output"][0]["content"][0]["text"] == "Echo: Count to 3."
    assert [e["sequence_number"] for e in events] == list(range(len(events)))


def test_the_backend_is_asked_for_a_stream(
    make_bridge: Callable[..., BridgeHandle], backend_requests: Callable[[], list[dict[str, Any]]],
    clear_backend_requests: Callable[[], None],
) -> None:  # fmt: skip
    """The socket is the stream: the backend streams tokens as for SSE (whether the client sent Codex's
    `stream: true` or nothing), not one whole answer translated at the end."""
    handle = make_bridge(store="none")
    clear_backend_requests()

    async def scenario() -> list[list[dict[str, Any]]]:
        async with websockets.connect(ws_url(handle)) as ws:
            turns = []
            for body in (create(input="one"), create(input="two", stream=True)):
                await ws.send(orjson.dumps(body).decode())
                turns.append(await read_turn(ws))
            return turns

    turns = run(scenario())
    assert [terminal(turn)["status"] for turn in turns] == ["completed", "completed"]
    sent = backend_requests()
    assert [request.get("stream") for request in sent] == [True, True], sent
    assert all(request.get("stream_options", {}).get("include_usage") for request in sent), sent


def test_queued_turns_run_one_at_a_time_in_order(bridge: BridgeHandle) -> None:
    """Three messages sent at once: three whole turns, in order, never interleaved."""

    async def scenario() -> list[list[dict[str, Any]]]:
        async with websockets.connect(ws_url(bridge)) as ws:
            for word in ("first", "second", "third"):
                await ws.send(orjson.dumps(create(store=False, input=f"@text {word}")).decode())
            return [await read_turn(ws) for _ in range(3)]

    turns = run(scenario())
    for turn, word in zip(turns, ("first", "second", "third"), strict=True):
        assert_valid(turn, None, profile="openresponses")
        assert turn[0]["type"] == "response.created"
        assert terminal(turn)["output"][0]["content"][0]["text"] == word
    ids = [terminal(turn)["id"] for turn in turns]
    assert len(set(ids)) == 3
    for turn in turns:  # every event of a turn names that turn's response
        own = turn[0]["response"]["id"]
        assert all(e["response"]["id"] == own for e in turn if "response" in e)


# ----------------------------------------------------------------------------------- continuation


def test_store_false_continuation_uses_the_connections_memory(
    make_bridge: Callable[..., BridgeHandle], backend_requests: Callable[[], list[dict[str, Any]]],
    clear_backend_requests: Callable[[], None],
) -> None:  # fmt: skip
    handle = make_bridge(store="none")  # no store at all: only the connection can remember
    clear_backend_requests()

    async def scenario() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        async with websockets.connect(ws_url(handle)) as ws:
            await ws.send(orjson.dumps(create(store=False, input="Remember the code word: cobalt.")).decode())
            first = await read_turn(ws)
            await ws.send(orjson.dumps(create(store=False, previous_response_id=terminal(first)["id"],
                                              input="What is the code word?")).decode())  # fmt: skip
            return first, await read_turn(ws)

    first, second = run(scenario())
    assert terminal(first)["status"] == "completed"
    response = terminal(second)
    assert response["status"] == "completed", response
    assert response["previous_response_id"] == terminal(first)["id"]
    sent = backend_requests()
    assert len(sent) == 2
    assert chat_texts(sent[1])[-3:] == [
        ("user", "Remember the code word: cobalt."),
        ("assistant", "Echo: Remember the code word: cobalt."),
        ("user", "What is the code word?"),
    ]


def test_a_tool_loop_continues_with_only_the_new_items(
    bridge: BridgeHandle, backend_requests: Callable[[], list[dict[str, Any]]], clear_backend_requests: Callable[[], None]
) -> None:
    tools = [{"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}}]
    clear_backend_requests()

    async def scenario() -> list[list[dict[str, Any]]]:
        async with websockets.connect(ws_url(bridge)) as ws:
            await ws.send(orjson.dumps(create(store=False, tools=tools, input='@call lookup {"q": 1}')).decode())
            first = await read_turn(ws)
            call = terminal(first)["output"][-1]
            await ws.send(orjson.dumps(create(store=False, tools=tools, previous_response_id=terminal(first)["id"],
                input=[{"type": "function_call_output", "call_id": call["call_id"], "output": "42"}])).decode())  # fmt: skip
            return [first, await read_turn(ws)]

    first, second = run(scenario())
    call = terminal(first)["output"][-1]
    assert call["type"] == "function_call" and call["name"] == "lookup"
    assert terminal(second)["output"][0]["content"][0]["text"] == "Tool results: 42"
    last = backend_requests()[-1]["messages"]
    assert last[-2]["tool_calls"][0]["id"] == call["call_id"]
    assert last[-1] == {"role": "tool", "tool_call_id": call["call_id"], "content": "42"}


def test_a_new_connection_does_not_know_a_store_false_response_and_recovers(bridge: BridgeHandle) -> None:
    async def scenario() -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
        async with websockets.connect(ws_url(bridge)) as ws:
            await ws.send(orjson.dumps(create(store=False, input="Remember: copper.")).decode())
            first_id = terminal(await read_turn(ws))["id"]
        async with websockets.connect(ws_url(bridge)) as ws:
            await ws.send(orjson.dumps(create(store=False, previous_response_id=first_id, input="go on")).decode())
            miss = await read_turn(ws)
            await ws.send(orjson.dumps(create(store=False, input="Start over: recovered")).decode())
            return first_id, miss, await read_turn(ws)

    first_id, miss, recovery = run(scenario())
    error = assert_error(miss, 400, "previous_response_not_found", "previous_response_id")
    assert first_id in error["message"]
    assert terminal(recovery)["status"] == "completed"
    assert terminal(recovery)["previous_response_id"] is None


def test_an_unknown_previous_response_is_previous_response_not_found(bridge: BridgeHandle) -> None:
    async def scenario() -> list[list[dict[str, Any]]]:
        async with websockets.connect(ws_url(bridge)) as ws:
            await ws.send(orjson.dumps(create(store=False, previous_response_id="resp_missing_1", input="x")).decode())
            miss = await read_turn(ws)
            await ws.send(orjson.dumps(create(store=False, input="still here")).decode())
            return [miss, await read_turn(ws)]

    miss, after = run(scenario())
    assert_error(miss, 400, "previous_response_not_found", "previous_response_id")
    assert terminal(after)["status"] == "completed", "the connection stays usable after an error"


def test_a_failed_continuation_evicts_the_response_it_continued(bridge: BridgeHandle) -> None:
    async def scenario() -> list[list[dict[str, Any]]]:
        async with websockets.connect(ws_url(bridge)) as ws:
            await ws.send(orjson.dumps(create(store=False, input="Remember: ember.")).decode())
            first = await read_turn(ws)
            first_id = terminal(first)["id"]
            orphan = [{"type": "function_call_output", "call_id": "call_missing", "output": "no such call"}]
            await ws.send(orjson.dumps(create(store=False, previous_response_id=first_id, input=orphan)).decode())
            failed = await read_turn(ws)
            await ws.send(orjson.dumps(create(store=False, previous_response_id=first_id, input="retry")).decode())
            return [first, failed, await read_turn(ws)]

    first, failed, retry = run(scenario())
    assert terminal(first)["status"] == "completed"
    assert failed[0]["type"] == "error" and failed[0]["status"] == 400, failed
    assert "call_missing" in failed[0]["error"]["message"]
    assert_error(retry, 400, "previous_response_not_found", "previous_response_id")


def test_a_response_failing_mid_stream_evicts_too(bridge: BridgeHandle) -> None:
    async def scenario() -> list[list[dict[str, Any]]]:
        async with websockets.connect(ws_url(bridge)) as ws:
            await ws.send(orjson.dumps(create(store=False, input="hello")).decode())
            first = await read_turn(ws)
            first_id = terminal(first)["id"]
            await ws.send(orjson.dumps(create("chaos:midstream-error", store=False, previous_response_id=first_id,
                                              input="fail")).decode())  # fmt: skip
            failed = await read_turn(ws)
            await ws.send(orjson.dumps(create(store=False, previous_response_id=first_id, input="again")).decode())
            return [first, failed, await read_turn(ws)]

    _, failed, retry = run(scenario())
    assert terminal(failed)["status"] == "failed"
    assert_error(retry, 400, "previous_response_not_found")


def test_store_true_responses_are_stored_and_continue_over_http(bridge: BridgeHandle) -> None:
    async def scenario() -> list[dict[str, Any]]:
        async with websockets.connect(ws_url(bridge)) as ws:
            await ws.send(orjson.dumps(create(input="Remember: slate.")).decode())
            return await read_turn(ws)

    response_id = terminal(run(scenario()))["id"]
    stored = httpx.get(f"{bridge.url}/responses/{response_id}", timeout=10)
    assert stored.status_code == 200 and stored.json()["status"] == "completed"
    follow = httpx.post(f"{bridge.url}/responses", json={"model": "fixture-scripted", "previous_response_id": response_id,
                                                       "input": "and?"}, timeout=10)  # fmt: skip
    assert follow.status_code == 200, follow.text


def test_a_stored_response_continues_on_a_new_connection(
    bridge: BridgeHandle, backend_requests: Callable[[], list[dict[str, Any]]], clear_backend_requests: Callable[[], None]
) -> None:
    clear_backend_requests()

    async def scenario() -> list[dict[str, Any]]:
        async with websockets.connect(ws_url(bridge)) as ws:
            await ws.send(orjson.dumps(create(input="Remember: granite.")).decode())  # store defaults to true
            first_id = terminal(await read_turn(ws))["id"]
        async with websockets.connect(ws_url(bridge)) as ws:
            await ws.send(orjson.dumps(create(previous_response_id=first_id, input="What was it?")).decode())
            return await read_turn(ws)

    assert terminal(run(scenario()))["status"] == "completed"
    assert chat_texts(backend_requests()[-1])[-3:] == [
        ("user", "Remember: granite."), ("assistant", "Echo: Remember: granite."), ("user", "What was it?"),
    ]  # fmt: skip


def test_a_compacted_window_starts_a_new_chain(
    bridge: BridgeHandle, backend_requests: Callable[[], list[dict[str, Any]]], clear_backend_requests: Callable[[], None]
) -> None:
    """POST /v1/responses/compact, then its output as the base input of a new chain on the socket:
    the summary reaches the backend in place of the compacted history."""
    window_request = {"model": "fixture-scripted", "input": [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Remember: slate."}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "OK."}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Compress this."}]},
    ]}  # fmt: skip
    compacted = httpx.post(bridge.url + "/responses/compact", json=window_request, timeout=30)
    assert compacted.status_code == 200, compacted.text
    output = compacted.json()["output"]
    assert output[-1]["type"] == "compaction"
    clear_backend_requests()

    async def scenario() -> list[dict[str, Any]]:
        async with websockets.connect(ws_url(bridge)) as ws:
            await ws.send(orjson.dumps(create(store=False, tools=[], input=[
                *output, {"type": "message", "role": "user", "content": "@text compacted"}])).decode())  # fmt: skip
            return await read_turn(ws)

    events = run(scenario())
    assert terminal(events)["output"][0]["content"][0]["text"] == "compacted"
    texts = [text for _, text in chat_texts(backend_requests()[-1])]
    assert any("[Context compacted by responses-bridge]" in text for text in texts), texts


def test_a_compaction_trigger_on_the_socket_answers_one_compaction_item(
    bridge: BridgeHandle, backend_requests: Callable[[], list[dict[str, Any]]], clear_backend_requests: Callable[[], None]
) -> None:
    clear_backend_requests()

    async def scenario() -> list[list[dict[str, Any]]]:
        async with websockets.connect(ws_url(bridge)) as ws:
            await ws.send(orjson.dumps(create(store=False, input="Remember: quartz.")).decode())
            first = await read_turn(ws)
            await ws.send(orjson.dumps(create(store=False, previous_response_id=terminal(first)["id"],
                                              input=[{"type": "compaction_trigger"}])).decode())  # fmt: skip
            compacted = await read_turn(ws)
            item = terminal(compacted)["output"][0]
            await ws.send(orjson.dumps(create(store=False, input=[
                item, {"type": "message", "role": "user", "content": "@text after"}])).decode())  # fmt: skip
            return [first, compacted, await read_turn(ws)]

    _, compacted, after = run(scenario())
    assert [e["type"] for e in compacted] == ["response.created", "response.in_progress", "response.output_item.added",
                                              "response.output_item.done", "response.completed"]  # fmt: skip
    output = terminal(compacted)["output"]
    assert len(output) == 1 and output[0]["type"] == "compaction" and output[0]["encrypted_content"]
    sent = backend_requests()
    summary_call = sent[1]  # the bridge asked the backend for the summary of the remembered conversation
    assert "Remember: quartz." in orjson.dumps(summary_call).decode()
    assert terminal(after)["output"][0]["content"][0]["text"] == "after"
    assert any("[Context compacted by responses-bridge]" in text for _, text in chat_texts(sent[-1]))


# -------------------------------------------------------------------------------- message checks


def test_stream_true_as_codex_sends_it_is_accepted(bridge: BridgeHandle) -> None:
    """Codex 0.169.0 puts `stream: true` in every response.create; it asks for what the socket does."""

    async def scenario() -> list[dict[str, Any]]:
        async with websockets.connect(ws_url(bridge)) as ws:
            await ws.send(orjson.dumps(create(stream=True, store=False, input="@text streamed")).decode())
            return await read_turn(ws)

    assert terminal(run(scenario()))["output"][0]["content"][0]["text"] == "streamed"



@pytest.mark.parametrize(("field", "value"), [("stream", False), ("stream", None), ("stream_options", {"include_usage": True}),
                                            ("background", False), ("background", True)])  # fmt: skip
def test_http_only_fields_are_refused_by_name(bridge: BridgeHandle, field: str, value: Any) -> None:

    async def scenario() -> list[list[dict[str, Any]]]:
        async with websockets.connect(ws_url(bridge)) as ws:
            await ws.send(orjson.dumps(create(input="x", **{field: value})).decode())
            refused = await read_turn(ws)
            await ws.send(orjson.dumps(create(input="y")).decode())
            return [refused, await read_turn(ws)]

    refused, after = run(scenario())
    assert_error(refused, 400, "unsupported_parameter", field)
    assert terminal(after)["status"] == "completed"


@pytest.mark.parametrize(
    ("message", "param", "code"),
    [
        ("not json", None, "invalid_json"),
        ("[1, 2]", None, "invalid_json"),
        ('{"type": "response.cancel"}', "type", "invalid_value"),
        ('{"model": "m", "input": "no type"}', "type", "invalid_value"),
        ('{"type": "response.create", "input": "no model"}', "model", "missing_required_parameter"),
        ('{"type": "response.create", "model": "m", "generate": "no"}', "generate", "invalid_type"),
        ('{"type": "response.create", "model": "m", "temperature": "hot"}', "temperature", "invalid_type"),
    ],
)
def test_bad_messages_get_an_error_and_the_connection_goes_on(
    bridge: BridgeHandle, message: str, param: str | None, code: str
) -> None:
    async def scenario() -> list[list[dict[str, Any]]]:
        async with websockets.connect(ws_url(bridge)) as ws:
            await ws.send(message)
            bad = await read_turn(ws)
            await ws.send(orjson.dumps(create(input="fine")).decode())
            return [bad, await read_turn(ws)]

    bad, after = run(scenario())
    assert_error(bad, 400, code, param)
    assert terminal(after)["status"] == "completed"


def test_a_bridge_bug_is_a_500_error_event_and_the_connection_goes_on(
    bridge: BridgeHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    import server.websocket

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ZeroDivisionError("a bug")

    async def scenario() -> list[list[dict[str, Any]]]:
        async with websockets.connect(ws_url(bridge)) as ws:
            with monkeypatch.context() as patch:
                patch.setattr(server.websocket, "check_responses_payload", broken)
                await ws.send(orjson.dumps(create(input="x")).decode())
                bad = await read_turn(ws)
            await ws.send(orjson.dumps(create(input="y")).decode())
            return [bad, await read_turn(ws)]

    bad, after = run(scenario())
    assert bad[0]["type"] == "error" and bad[0]["status"] == 500 and bad[0]["error"]["code"] == "server_error"
    assert "bug" not in bad[0]["error"]["message"], "no internals in the message"
    assert terminal(after)["status"] == "completed"


def test_an_unknown_model_is_a_404_error_event(make_bridge: Callable[..., BridgeHandle]) -> None:
    handle = make_bridge(upstream={"models": ("only-this",)})

    async def scenario() -> list[dict[str, Any]]:
        async with websockets.connect(ws_url(handle)) as ws:
            await ws.send(orjson.dumps(create("not-served", input="x")).decode())
            return await read_turn(ws)

    assert_error(run(scenario()), 404, "model_not_found", "model")


# ---------------------------------------------------------------------------------------- warm-up


def test_generate_false_gives_a_usable_id_without_calling_the_backend(
    bridge: BridgeHandle, backend_requests: Callable[[], list[dict[str, Any]]], clear_backend_requests: Callable[[], None]
) -> None:
    clear_backend_requests()

    async def scenario() -> list[list[dict[str, Any]]]:
        async with websockets.connect(ws_url(bridge)) as ws:
            await ws.send(orjson.dumps(create(store=False, generate=False, instructions="Be brief.",
                                              input="Remember: basalt.")).decode())  # fmt: skip
            warm = await read_turn(ws)
            assert backend_requests() == [], "a warm-up must not reach the backend"
            await ws.send(orjson.dumps(create(store=False, previous_response_id=terminal(warm)["id"],
                                              input="What was it?")).decode())  # fmt: skip
            return [warm, await read_turn(ws)]

    warm, follow = run(scenario())
    assert_valid(warm, None, profile="openresponses")
    assert [e["type"] for e in warm] == ["response.created", "response.in_progress", "response.completed"]
    response = terminal(warm)
    assert response["id"].startswith("resp_") and response["output"] == []
    assert response["usage"]["input_tokens"] == 0 and response["usage"]["output_tokens"] == 0
    assert terminal(follow)["status"] == "completed"
    sent = backend_requests()
    assert len(sent) == 1
    assert chat_texts(sent[0])[-2:] == [("user", "Remember: basalt."), ("user", "What was it?")]


# ------------------------------------------------------------------------------------- age limit


def test_the_connection_ends_at_its_age_limit_with_an_error(make_bridge: Callable[..., BridgeHandle]) -> None:
    handle = make_bridge(websocket_connection_limit=1.0)

    async def scenario() -> tuple[list[dict[str, Any]], list[dict[str, Any]], int | None]:
        async with websockets.connect(ws_url(handle)) as ws:
            await ws.send(orjson.dumps(create(input="before the limit")).decode())
            served = await read_turn(ws)
            limit = await read_turn(ws)  # nothing sent: the limit comes by itself
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), TIMEOUT)
            return served, limit, ws.close_code

    served, limit, close_code = run(scenario())
    assert terminal(served)["status"] == "completed"
    error = assert_error(limit, 400, "websocket_connection_limit_reached")
    assert "new websocket connection" in error["message"].lower()
    assert close_code == 1000


def test_the_age_limit_is_a_config_key() -> None:
    from server.config import ConfigError
    from server.config_file import parse_config

    upstreams = [{"name": "a", "base_url": "http://127.0.0.1:9/v1"}]
    assert parse_config({"upstreams": upstreams}).websocket_connection_limit == 3600.0
    assert parse_config({"upstreams": upstreams, "websocket_connection_limit": 90}).websocket_connection_limit == 90.0
    with pytest.raises(ConfigError):
        parse_config({"upstreams": upstreams, "websocket_connection_limit": 0})


# ------------------------------------------------------------------------------------------- auth


@pytest.fixture
def keyed_bridge(make_bridge: Callable[..., BridgeHandle]) -> BridgeHandle:
    return make_bridge(api_keys=("sk-ws-right",))


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer sk-wrong"}, {"x-api-key": "sk-wrong"},
                                     {"Authorization": "Basic sk-ws-right"}])  # fmt: skip
def test_a_refused_handshake_is_closed_1008_with_no_event(
    keyed_bridge: BridgeHandle, headers: dict[str, str], backend_requests: Callable[[], list[dict[str, Any]]],
    clear_backend_requests: Callable[[], None],
) -> None:  # fmt: skip
    clear_backend_requests()

    async def scenario() -> tuple[list[Any], int | None]:
        received: list[Any] = []
        async with websockets.connect(ws_url(keyed_bridge), additional_headers=headers) as ws:
            with pytest.raises(ConnectionClosed):  # the send itself may meet the close
                await ws.send(orjson.dumps(create(input="let me in")).decode())
                while True:
                    received.append(await asyncio.wait_for(ws.recv(), TIMEOUT))
            return received, ws.close_code

    received, close_code = run(scenario())
    assert received == [], "no event before the close"
    assert close_code == 1008
    assert backend_requests() == []


@pytest.mark.parametrize("headers", [{"Authorization": "Bearer sk-ws-right"}, {"x-api-key": "sk-ws-right"}])
def test_the_key_is_read_from_the_handshake(keyed_bridge: BridgeHandle, headers: dict[str, str]) -> None:
    async def scenario() -> list[dict[str, Any]]:
        async with websockets.connect(ws_url(keyed_bridge), additional_headers=headers) as ws:
            await ws.send(orjson.dumps(create(input="hello")).decode())
            return await read_turn(ws)

    assert terminal(run(scenario()))["status"] == "completed"


def test_stored_responses_stay_per_key(make_bridge: Callable[..., BridgeHandle]) -> None:
    handle = make_bridge(api_keys=("sk-a", "sk-b"))

    async def scenario() -> list[dict[str, Any]]:
        async with websockets.connect(ws_url(handle), additional_headers={"x-api-key": "sk-a"}) as ws:
            await ws.send(orjson.dumps(create(input="mine")).decode())
            first = await read_turn(ws)
        async with websockets.connect(ws_url(handle), additional_headers={"x-api-key": "sk-b"}) as ws:
            await ws.send(orjson.dumps(create(previous_response_id=terminal(first)["id"], input="yours?")).decode())
            return await read_turn(ws)

    assert_error(run(scenario()), 400, "previous_response_not_found")


# --------------------------------------------------------------------------------- client leaving


class CountingBackend:
    """The fixture backend, counting chat requests whose handler is still running."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.active = 0
        self.lock = threading.Lock()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> Any:
        if scope["type"] != "http" or not scope["path"].endswith("/chat/completions"):
            return await self.app(scope, receive, send)
        with self.lock:
            self.active += 1
        try:
            return await self.app(scope, receive, send)
        finally:
            with self.lock:
                self.active -= 1


@pytest.fixture
def counted_backend() -> Iterator[tuple[CountingBackend, RunningServer]]:
    from fixtures.backend import create_app

    app = CountingBackend(create_app())
    with run_app(app) as running:
        yield app, running


def test_a_client_leaving_mid_response_closes_the_backend_request(
    counted_backend: tuple[CountingBackend, RunningServer], caplog: pytest.LogCaptureFixture
) -> None:
    counter, backend = counted_backend
    handle = start_bridge(bridge_config(backend.url + "/v1"))
    caplog.set_level(logging.INFO, logger="responses_bridge.access")
    try:

        async def scenario() -> list[dict[str, Any]]:
            async with websockets.connect(ws_url(handle)) as ws:
                await ws.send(orjson.dumps(create("chaos:stall", input="hi")).decode())
                first = orjson.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
                ok = await asyncio.to_thread(poll, lambda: counter.active == 1, 5)
                assert ok, "the backend should be streaming"
                return [first]
            # leaving the block closes the socket mid-response

        first = run(scenario())
        assert first[0]["type"] == "response.created"
        assert poll(lambda: counter.active == 0, timeout=5), "backend request still open after the client left"
        assert poll(lambda: not handle.app.state.bridge.streams, timeout=5)
        assert poll(lambda: any("client_disconnected" in r.getMessage() for r in caplog.records), timeout=5)
    finally:
        handle.stop()


def test_a_client_queueing_without_bound_is_closed_1008(bridge: BridgeHandle) -> None:
    from server.websocket import MAX_QUEUED

    async def scenario() -> tuple[list[str], int | None]:
        received: list[str] = []
        async with websockets.connect(ws_url(bridge)) as ws:
            await ws.send(orjson.dumps(create("chaos:stall", input="hold the line")).decode())
            with pytest.raises(ConnectionClosed):
                for _ in range(MAX_QUEUED + 5):
                    await ws.send(orjson.dumps(create(input="queued")).decode())
                while True:
                    received.append(await asyncio.wait_for(ws.recv(), TIMEOUT))
            return received, ws.close_code

    received, close_code = run(scenario())
    assert close_code == 1008
    assert all('"response.completed"' not in message for message in received), "no queued turn ran"


def test_each_turn_has_an_access_log_line(bridge: BridgeHandle, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="responses_bridge.access")

    async def scenario() -> None:
        async with websockets.connect(ws_url(bridge)) as ws:
            await ws.send(orjson.dumps(create(input="logged")).decode())
            await read_turn(ws)
            await ws.send(orjson.dumps(create(store=False, previous_response_id="resp_nope", input="x")).decode())
            await read_turn(ws)

    run(scenario())
    def ours() -> list[str]:  # an earlier test's stalled turn may log its line while this one runs
        return [m for r in caplog.records if (m := r.getMessage()).startswith("WS /v1/responses")
                and "model=fixture-scripted" in m]  # fmt: skip

    assert poll(lambda: len(ours()) >= 2)
    lines = ours()
    assert lines[0].startswith("WS /v1/responses 200 model=fixture-scripted"), lines
    assert lines[1].startswith("WS /v1/responses 400") and "error=previous_response_not_found" in lines[1], lines
