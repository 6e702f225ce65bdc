"""Unknown request fields through a real bridge: by default dropped and logged once per name per
process (clients add fields over time; a typo must still be seen), with `strict_params` OpenAI's
400 `unknown_parameter` naming the field, over HTTP and over a WebSocket `response.create`, before
any backend is asked."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
import websockets

import server.body
from tests.support.assertions import assert_openai_error
from tests.support.logs import captured

UNKNOWN_FIELDS = ("frobnicate", "max_output_token")


@pytest.fixture(autouse=True)
def _fresh_process_memory(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The names warned about so far are process-wide (`server.body`); start each test as a new
    process would, so an earlier test that sent the same name does not hide the first warning."""
    monkeypatch.setattr(server.body, "_warned_fields", set())
    yield


def _warnings_about(records: list[logging.LogRecord], name: str) -> list[str]:
    return [r.getMessage() for r in records if r.levelno == logging.WARNING and repr(name) in r.getMessage()]


def _post(bridge: Any, **fields: Any) -> httpx.Response:
    body = {"model": "m", "input": "@text fine", **fields}
    return httpx.post(bridge.url + "/responses", json=body, timeout=30)


@pytest.mark.parametrize("field", UNKNOWN_FIELDS)
def test_an_unknown_field_is_dropped_and_answered(bridge: Any, backend_requests: Any,
                                                  clear_backend_requests: Any, field: str) -> None:  # fmt: skip
    clear_backend_requests()
    response = _post(bridge, **{field: 7})
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "completed"
    sent = backend_requests()
    assert len(sent) == 1 and field not in sent[0]  # dropped, not forwarded to the backend


def test_each_unknown_field_is_logged_once_per_name(bridge: Any) -> None:
    with captured() as records:
        assert _post(bridge, frobnicate=1).status_code == 200
        assert _post(bridge, frobnicate=2).status_code == 200  # the same name again: no second line
        assert len(_warnings_about(records, "frobnicate")) == 1
        assert _post(bridge, max_output_token=100).status_code == 200  # a different name: its own line
        assert _post(bridge, frobnicate=3, max_output_token=5).status_code == 200
    assert len(_warnings_about(records, "frobnicate")) == 1
    lines = _warnings_about(records, "max_output_token")
    assert len(lines) == 1, lines
    assert "strict_params" in lines[0]  # the warning says how to refuse instead


def test_known_fields_are_not_warned_about(bridge: Any) -> None:
    with captured() as records:
        assert _post(bridge, temperature=0.5, max_output_tokens=50, metadata={"a": "b"}).status_code == 200
    assert [r.getMessage() for r in records if "unknown request field" in r.getMessage()] == []


@pytest.mark.parametrize("field", UNKNOWN_FIELDS)
def test_strict_params_refuses_an_unknown_field_as_openai_does(make_bridge: Any, backend_requests: Any,
                                                               clear_backend_requests: Any, field: str) -> None:  # fmt: skip
    strict = make_bridge(strict_params=True)
    clear_backend_requests()
    for stream in (False, True):
        error = assert_openai_error(_post(strict, stream=stream, **{field: 1}), 400)
        assert error == {"message": f"Unknown parameter: '{field}'.", "type": "invalid_request_error",
                         "param": field, "code": "unknown_parameter"}  # fmt: skip
    assert backend_requests() == []
    assert _post(strict).status_code == 200  # known fields only: served


def test_strict_params_refuses_on_a_websocket_create_as_an_error_event(make_bridge: Any, backend_requests: Any,
                                                                       clear_backend_requests: Any) -> None:  # fmt: skip
    strict = make_bridge(strict_params=True)
    url = strict.root.replace("http://", "ws://") + "/v1/responses"
    clear_backend_requests()

    async def exchange() -> tuple[dict[str, Any], str]:
        async with websockets.connect(url) as ws:
            await ws.send(orjson.dumps({"type": "response.create", "model": "m", "input": "hi", "frobnicate": 1}))
            refused = orjson.loads(await asyncio.wait_for(ws.recv(), 20))
            # the connection goes on: a good create on the same socket is answered
            await ws.send(orjson.dumps({"type": "response.create", "model": "m", "input": "@text after"}))
            while True:
                event = orjson.loads(await asyncio.wait_for(ws.recv(), 20))
                if event["type"] in ("response.completed", "response.failed", "response.incomplete", "error"):
                    return refused, event["type"]

    refused, after = asyncio.run(exchange())
    assert refused["type"] == "error" and refused["status"] == 400, refused
    assert refused["error"] == {"message": "Unknown parameter: 'frobnicate'.", "type": "invalid_request_error",
                                "param": "frobnicate", "code": "unknown_parameter"}  # fmt: skip
    assert after == "response.completed"
    sent = backend_requests()
    assert len(sent) == 1 and "frobnicate" not in sent[0]  # only the good create reached the backend
