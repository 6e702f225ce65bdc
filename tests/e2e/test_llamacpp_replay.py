"""Real llama-server captures (fixtures/captures/llamacpp-b11434/), replayed without the server.

Each capture holds a Responses request, the chat request made of it, and llama-server's raw answer.
The stream goes through `translator.ChatStreamTranslator` (cut at random places, as real reads cut
it) and the events must satisfy the Responses event grammar (`validate_events`) and give what the
capture's hand-written `expected.json` says the tiny model answered. The error capture is served by
a stand-in that repeats llama-server's recorded 400 byte for byte, with the real bridge in front.
These tests need no build, so they run everywhere.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.conftest import bridge_config, start_bridge
from tests.support.llamacpp.launcher import BUILD_VERSION
from tests.support.llamacpp.record import CAPTURES, translator_options
from tests.support.servers import run_app
from translator import ChatStreamTranslator, SSEDecoder
from translator.validate import format_violations, validate_events

CAPTURES_DIR = Path(__file__).resolve().parents[2] / "fixtures" / "captures" / f"llamacpp-{BUILD_VERSION}"
STREAMS = sorted(p.parent.name for p in CAPTURES_DIR.glob("*/chat_stream.sse"))
ERRORS = sorted(p.parent.name for p in CAPTURES_DIR.glob("*/chat_error.json"))


def load_request(name: str) -> dict[str, Any]:
    request = json.loads((CAPTURES_DIR / name / "request.json").read_text(encoding="utf-8"))
    recipe = request.get("input")
    if isinstance(recipe, dict) and "repeat" in recipe:  # stored as a recipe, not 120 kB of text
        request["input"] = recipe["repeat"] * recipe["times"]
    return request


def expected(name: str) -> dict[str, Any]:
    return json.loads((CAPTURES_DIR / name / "expected.json").read_text(encoding="utf-8"))


def pieces(raw: bytes, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    out, start = [], 0
    while start < len(raw):
        size = rng.randint(1, 48)
        out.append(raw[start : start + size])
        start += size
    return out


def replay(request: dict[str, Any], raw: bytes, seed: int) -> list[dict[str, Any]]:
    """Drive the translator as the server does: start, a chunk per data frame, finish at [DONE]."""
    translator = ChatStreamTranslator(request, **translator_options())
    decoder = SSEDecoder()
    events = list(translator.start())
    frames: list[tuple[str | None, str]] = []
    for piece in pieces(raw, seed):
        frames.extend(decoder.feed(piece))
    frames.extend(decoder.close())
    done = False
    for _event, data in frames:
        if data.strip() == "[DONE]":
            done = True
            break
        events.extend(translator.feed(orjson.loads(data)))
    events.extend(translator.finish(done_seen=done))
    return events


def test_every_capture_is_recorded_and_described() -> None:
    assert set(STREAMS) | set(ERRORS) == set(CAPTURES)
    readme = (CAPTURES_DIR / "README.md").read_text(encoding="utf-8")
    assert BUILD_VERSION in readme
    for name in CAPTURES:
        assert f"`{name}`" in readme, name
    for name in STREAMS:  # really llama-server's: its build fingerprint is on every chunk
        raw = (CAPTURES_DIR / name / "chat_stream.sse").read_bytes()
        assert raw.count(b'"system_fingerprint":"b11434-') == raw.count(b"data: {"), name


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("name", STREAMS)
def test_capture_replays_to_valid_events(name: str, seed: int) -> None:
    request = load_request(name)
    raw = (CAPTURES_DIR / name / "chat_stream.sse").read_bytes()
    events = replay(request, raw, seed)
    violations = validate_events(events, request)
    assert not violations, format_violations(violations)

    want = expected(name)
    final = events[-1]["response"]
    assert events[-1]["type"] == f"response.{want['status']}"
    assert final["status"] == want["status"]
    assert (final.get("incomplete_details") or {}).get("reason") == want["incomplete_reason"]
    text = "".join(
        part["text"]
        for item in final["output"]
        if item["type"] == "message"
        for part in item["content"]
        if part["type"] == "output_text"
    )
    assert text == want["output_text"]
    reasoning = "".join(
        part["text"]
        for item in final["output"]
        if item["type"] == "reasoning"
        for part in [*(item.get("summary") or []), *(item.get("content") or [])]
    )
    assert reasoning.strip() == want["reasoning"]
    calls = [
        {"name": item["name"], "arguments": json.loads(item["arguments"])}
        for item in final["output"]
        if item["type"] == "function_call"
    ]
    assert calls == want["function_calls"]
    assert final["usage"]["output_tokens"] == want["output_tokens"]
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert deltas == want["output_text"]


def recorded_backend(status: int, body: dict[str, Any]) -> Starlette:
    """A chat endpoint answering every request with llama-server's recorded error, byte for byte."""
    payload = json.dumps(body, separators=(",", ":")).encode()

    async def chat(request: Request) -> Response:
        await request.body()
        return Response(payload, status_code=status, media_type="application/json; charset=utf-8")

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("name", ERRORS)
def test_recorded_error_through_the_bridge(name: str, stream: bool) -> None:
    """llama-server's `exceed_context_size_error` must reach the client as OpenAI's
    `context_length_exceeded` (a 400 `invalid_request_error`), streamed or not."""
    recorded = json.loads((CAPTURES_DIR / name / "chat_error.json").read_text(encoding="utf-8"))
    want = expected(name)
    options = translator_options()
    with run_app(recorded_backend(recorded["status"], recorded["body"])) as backend:
        bridge = start_bridge(
            bridge_config(backend.url + "/v1", upstream={"profile": "llamacpp", "options": options})
        )
        try:
            request = {**load_request(name), "stream": stream}
            answer = httpx.post(bridge.url + "/responses", json=request, timeout=30)
        finally:
            bridge.stop()
    assert answer.status_code == want["http_status"], answer.text[:500]
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == want["error_type"], error
    assert error["code"] == want["error_code"], error
    assert "context size" in error["message"]  # llama.cpp's own explanation is kept
