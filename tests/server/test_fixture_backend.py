"""The fixture chat backend itself, over real HTTP: uvicorn on a loopback port, an httpx client.

Every other test trusts this backend to behave like a real chat server (and to fail like one), so
its scripted answers, its replays and its faults are checked here on the wire.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from hypothesis import given, settings
from hypothesis import strategies as st

from fixtures import SCENARIOS_DIR, closed_port_url, create_app
from fixtures.chaos import BIG_CHUNK_BYTES
from fixtures.scripted import completion, plan_answer, stream_chunks

ROOT = Path(__file__).resolve().parents[2]
CALL_ID = re.compile(r"^call_[A-Za-z0-9]{24}$")
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


class RunningServer:
    """uvicorn in a thread of its own, so the tests can use a plain blocking client."""

    def __init__(self, app: Any) -> None:
        self.sock = free_socket()
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="critical", timeout_graceful_shutdown=1, lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> RunningServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("fixture backend did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


@pytest.fixture(scope="module")
def backend() -> Iterator[RunningServer]:
    with RunningServer(create_app()) as running:
        yield running


@pytest.fixture
def client(backend: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=backend.url, timeout=10) as c:
        yield c


def sse_data(raw: bytes) -> list[str]:
    """The data payloads of an SSE body written with LF endings (the scripted mode's framing)."""
    frames = raw.decode().split("\n\n")
    assert frames[-1] == "", "the body must end with a blank line"
    data = []
    for frame in frames[:-1]:
        assert frame.startswith("data: "), frame
        data.append(frame[len("data: ") :])
    return data


def chunks_of(raw: bytes) -> list[dict[str, Any]]:
    data = sse_data(raw)
    assert data[-1] == "[DONE]"
    return [orjson.loads(d) for d in data[:-1]]


def user(text: Any) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def chat(client: httpx.Client, **body: Any) -> httpx.Response:
    body.setdefault("model", "any-model")
    return client.post("/v1/chat/completions", json=body)


def content_of(chunks: list[dict[str, Any]]) -> str:
    return "".join((c["choices"][0]["delta"].get("content") or "") for c in chunks if c["choices"])


# ---- scripted mode ------------------------------------------------------------------------------------------


def test_echo_non_stream(client: httpx.Client) -> None:
    r = chat(client, messages=[{"role": "system", "content": "Be brief."}, *user("hello there")])
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == "Echo: hello there"
    assert body["choices"][0]["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0


def test_stream_shape_like_openai(client: httpx.Client) -> None:
    r = chat(client, stream=True, stream_options={"include_usage": True}, messages=user("one two three four"))
    assert r.headers["content-type"].startswith("text/event-stream")
    chunks = chunks_of(r.content)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    content_chunks = [c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]
    assert len(content_chunks) >= 3
    assert content_of(chunks) == "Echo: one two three four"
    finish = chunks[-2]
    assert finish["choices"][0]["finish_reason"] == "stop" and finish["choices"][0]["delta"] == {}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    assert all(c["usage"] is None for c in chunks[:-1])
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["object"] == "chat.completion.chunk"


def test_no_usage_chunk_without_include_usage(client: httpx.Client) -> None:
    chunks = chunks_of(chat(client, stream=True, messages=user("hi")).content)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all("usage" not in c for c in chunks)


def test_chunking_is_deterministic(client: httpx.Client) -> None:
    def deltas() -> list[str]:
        chunks = chunks_of(chat(client, stream=True, messages=user("the same words each time")).content)
        return [c["choices"][0]["delta"].get("content") for c in chunks]

    assert deltas() == deltas()


def test_parallel_calls_stream(client: httpx.Client) -> None:
    text = 'Please.\n@call get_weather {"city": "Paris"}\n@call get_weather {"city": "Tokyo"}'
    r = chat(client, stream=True, tools=[WEATHER], messages=user(text))
    chunks = chunks_of(r.content)
    calls: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        for delta in chunk["choices"][0]["delta"].get("tool_calls") or []:
            if delta["index"] not in calls:
                assert delta["type"] == "function" and delta["function"]["arguments"] == ""
                assert CALL_ID.match(delta["id"])
                calls[delta["index"]] = {
                    "id": delta["id"],
                    "name": delta["function"]["name"],
                    "arguments": "",
                }
            else:
                assert set(delta) == {"index", "function"}
                calls[delta["index"]]["arguments"] += delta["function"]["arguments"]
    assert [orjson.loads(calls[i]["arguments"]) for i in (0, 1)] == [{"city": "Paris"}, {"city": "Tokyo"}]
    assert calls[0]["id"] != calls[1]["id"] and calls[0]["name"] == "get_weather"
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    fragments = [
        c for c in chunks if (c["choices"][0]["delta"].get("tool_calls") or [{}])[0].get("index") == 0
    ]
    assert len(fragments) >= 3, "arguments must arrive in several fragments"


def test_call_non_stream_and_tool_results(client: httpx.Client) -> None:
    messages = user([{"type": "text", "text": 'Weather?\n  @call get_weather {"city": "Paris"}'}])
    first = chat(client, tools=[WEATHER], messages=messages).json()
    message = first["choices"][0]["message"]
    assert first["choices"][0]["finish_reason"] == "tool_calls"
    (call,) = message["tool_calls"]
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    follow_up = [
        *messages,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "18C"},
        {"role": "tool", "tool_call_id": "other", "content": [{"type": "text", "text": "sunny"}]},
    ]
    second = chat(client, tools=[WEATHER], messages=follow_up).json()
    assert second["choices"][0]["message"]["content"] == "Tool results: 18C; sunny"
    assert "tool_calls" not in second["choices"][0]["message"]


def test_call_to_unknown_tool_answers_in_text(client: httpx.Client) -> None:
    body = chat(client, tools=[WEATHER], messages=user("@call delete_everything {}")).json()
    message = body["choices"][0]["message"]
    assert "tool_calls" not in message
    assert "delete_everything" in message["content"] and "get_weather" in message["content"]


def test_only_last_user_message_is_read(client: httpx.Client) -> None:
    messages = [
        *user('@call get_weather {"city": "Rome"}'),
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "Context from the client."},
        *user("just chatting"),
    ]
    body = chat(client, tools=[WEATHER], messages=messages).json()
    assert body["choices"][0]["message"]["content"] == "Echo: just chatting"


def test_reason_and_text(client: httpx.Client) -> None:
    chunks = chunks_of(
        chat(client, stream=True, messages=user("@reason Think first.\n@text Final words.")).content
    )
    reasoning = "".join(c["choices"][0]["delta"].get("reasoning_content") or "" for c in chunks)
    assert reasoning == "Think first."
    assert content_of(chunks) == "Final words."
    first_content = next(i for i, c in enumerate(chunks) if c["choices"][0]["delta"].get("content"))
    last_reasoning = max(i for i, c in enumerate(chunks) if c["choices"][0]["delta"].get("reasoning_content"))
    assert last_reasoning < first_content
    whole = chat(client, messages=user("@reason Think first.\n@text Final words.")).json()
    assert whole["choices"][0]["message"]["reasoning_content"] == "Think first."


def test_json_schema_answer(client: httpx.Client) -> None:
    schema = {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "days": {"type": "array", "items": {"$ref": "#/$defs/day"}},
            "unit": {"enum": ["c", "f"]},
        },
        "required": ["city", "days", "unit"],
        "$defs": {
            "day": {"type": "object", "properties": {"t": {"type": "number"}, "rain": {"type": "boolean"}}}
        },
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "w", "schema": schema, "strict": True}}
    body = chat(client, response_format=fmt, messages=user("weather")).json()
    value = orjson.loads(body["choices"][0]["message"]["content"])
    assert value == {"city": "example", "days": [{"t": 1.5, "rain": True}], "unit": "c"}


def test_max_tokens_truncates(client: httpx.Client) -> None:
    body = chat(client, max_tokens=3, messages=user("a b c d e f")).json()
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["choices"][0]["message"]["content"] == "Echo: a b"


def test_requests_are_recorded(client: httpx.Client) -> None:
    assert client.delete("/_fixture/requests").status_code == 204
    chat(client, messages=user("recorded"), temperature=0.5)
    bodies = client.get("/_fixture/requests").json()
    assert bodies == [{"model": "any-model", "messages": user("recorded"), "temperature": 0.5}]
    full = client.get("/_fixture/requests", params={"full": "1"}).json()
    assert full[0]["path"] == "/v1/chat/completions" and "content-type" in full[0]["headers"]
    client.delete("/_fixture/requests")
    assert client.get("/_fixture/requests").json() == []


def test_bad_requests_get_openai_errors(client: httpx.Client) -> None:
    r = client.post(
        "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400 and set(r.json()["error"]) == {"message", "type", "param", "code"}
    r = chat(client, messages=[])
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages"
    r = client.post("/v1/chat/completions", json={"messages": user("x")})
    assert r.status_code == 400 and r.json()["error"]["param"] == "model"
    r = chat(client, messages=user("x"), max_tokens=0)
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens"
    assert client.get("/nowhere").json()["error"]["code"] == "not_found"


def test_models_list(client: httpx.Client) -> None:
    ids = [m["id"] for m in client.get("/v1/models").json()["data"]]
    assert "fixture-scripted" in ids and "fixture:text_openai" in ids


def test_api_key_required_when_configured() -> None:
    with RunningServer(create_app(api_key="sekrit")) as running, httpx.Client(base_url=running.url) as c:
        r = c.post("/v1/chat/completions", json={"model": "m", "messages": user("x")})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        ok = c.post(
            "/v1/chat/completions",
            json={"model": "m", "messages": user("x")},
            headers={"authorization": "Bearer sekrit"},
        )
        assert ok.status_code == 200


# ---- replay ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["crlf_llamacpp_python", "keepalive_openrouter", "midstream_error_openai"])
def test_replay_is_byte_for_byte(client: httpx.Client, name: str) -> None:
    r = chat(client, model=f"fixture:{name}", stream=True, messages=user("x"))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert r.content == (SCENARIOS_DIR / name / "chat_stream.sse").read_bytes()


def test_replay_non_stream_assembles_the_answer(client: httpx.Client) -> None:
    body = chat(client, model="fixture:parallel_same_index_ollama_litellm", messages=user("x")).json()
    calls = body["choices"][0]["message"]["tool_calls"]
    assert [orjson.loads(c["function"]["arguments"])["city"] for c in calls] == ["Paris", "Tokyo"]
    body = chat(client, model="fixture:reasoning_deepseek", messages=user("x")).json()
    message = body["choices"][0]["message"]
    assert (
        message["content"] == "2 + 2 = 4." and message["reasoning_content"] == "Okay, the user asks for 2+2."
    )
    assert body["usage"]["prompt_tokens"] == 14
    r = chat(client, model="fixture:midstream_error_openai", messages=user("x"))
    assert r.status_code == 500 and "server had an error" in r.json()["error"]["message"]


def test_unknown_scenario_is_404(client: httpx.Client) -> None:
    for model in ("fixture:nope", "fixture:../text_openai"):
        r = chat(client, model=model, stream=True, messages=user("x"))
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


def test_custom_scenarios_dir(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    stream = b'data: {"choices":[{"index":0,"delta":{"content":"own"},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
    (tmp_path / "mine" / "chat_stream.sse").write_bytes(stream)
    with RunningServer(create_app(tmp_path)) as running, httpx.Client(base_url=running.url) as c:
        r = c.post(
            "/v1/chat/completions", json={"model": "fixture:mine", "stream": True, "messages": user("x")}
        )
        assert r.content == stream
        assert (
            c.post("/v1/chat/completions", json={"model": "fixture:text_openai", "messages": []}).status_code
            == 404
        )


# ---- chaos ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 401, 404, 429, 500, 503])
@pytest.mark.parametrize("stream", [True, False])
def test_chaos_status(client: httpx.Client, status: int, stream: bool) -> None:
    r = chat(client, model=f"chaos:status-{status}", stream=stream, messages=user("x"))
    assert r.status_code == status
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (r.headers.get("retry-after") == "7") == (status == 429)
    bare = chat(client, model=f"chaos:status-{status}-nobody", stream=stream, messages=user("x"))
    assert bare.status_code == status and bare.content == b""


def test_chaos_html(client: httpx.Client) -> None:
    r = chat(client, model="chaos:html", stream=True, messages=user("x"))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert r.text.startswith("<!DOCTYPE html>")


def test_chaos_refuse_and_cut(client: httpx.Client) -> None:
    with pytest.raises(httpx.RemoteProtocolError, match="without sending"):
        chat(client, model="chaos:refuse", stream=True, messages=user("x"))
    with client.stream("POST", "/v1/chat/completions", json={"model": "chaos:cut", "stream": True}) as r:
        assert r.status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):
            r.read()
    assert chat(client, messages=user("still serving")).status_code == 200


def test_closed_port_refuses() -> None:
    with pytest.raises(httpx.ConnectError):
        httpx.post(closed_port_url() + "/chat/completions", json={}, timeout=5)


def test_chaos_hang_and_stall(client: httpx.Client) -> None:
    with httpx.Client(base_url=client.base_url, timeout=0.5) as short:
        with pytest.raises(httpx.ReadTimeout):
            chat(short, model="chaos:hang", messages=user("x"))
        with short.stream("POST", "/v1/chat/completions", json={"model": "chaos:stall", "stream": True}) as r:
            assert r.status_code == 200
            raw = r.iter_raw()
            assert b'"role":"assistant"' in next(raw)
            with pytest.raises(httpx.ReadTimeout):
                next(raw)


def test_chaos_stream_body_faults(client: httpx.Client) -> None:
    malformed = chat(client, model="chaos:malformed", stream=True, messages=user("x")).content
    payloads = [p for p in malformed.split(b"\n\n") if p]
    with pytest.raises(orjson.JSONDecodeError):
        for payload in payloads[:-1]:
            orjson.loads(payload.removeprefix(b"data: "))
    nonutf8 = chat(client, model="chaos:nonutf8", stream=True, messages=user("x")).content
    with pytest.raises(UnicodeDecodeError):
        nonutf8.decode("utf-8")
    big = chat(client, model="chaos:big", stream=True, messages=user("x")).content
    assert max(len(frame) for frame in big.split(b"\n\n")) > BIG_CHUNK_BYTES


def test_chaos_midstream_error_and_no_done(client: httpx.Client) -> None:
    data = sse_data(chat(client, model="chaos:midstream-error", stream=True, messages=user("x")).content)
    assert "[DONE]" not in data
    last = orjson.loads(data[-1])
    assert last["error"]["type"] == "server_error" and "choices" not in last
    assert any(orjson.loads(d)["choices"][0]["delta"].get("content") for d in data[:-1])
    data = sse_data(chat(client, model="chaos:no-done", stream=True, messages=user("x")).content)
    assert "[DONE]" not in data
    assert orjson.loads(data[-1])["choices"][0]["finish_reason"] == "stop"


def test_chaos_delay_and_unknown(client: httpx.Client) -> None:
    chunks = chunks_of(chat(client, model="chaos:delay-0.05", stream=True, messages=user("x")).content)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    r = chat(client, model="chaos:explode", messages=user("x"))
    assert r.status_code == 404 and "refuse" in r.json()["error"]["message"]


def test_chaos_non_stream_counterparts(client: httpx.Client) -> None:
    r = chat(client, model="chaos:malformed", messages=user("x"))
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(r.content)
    r = chat(client, model="chaos:midstream-error", messages=user("x"))
    assert r.status_code == 200 and "error" in r.json()
    with pytest.raises(httpx.RemoteProtocolError):
        chat(client, model="chaos:cut", messages=user("x"))


# ---- running it by hand ---------------------------------------------------------------------------------------


def test_module_runs_as_a_program() -> None:
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    process = subprocess.Popen(
        [sys.executable, "-m", "fixtures.backend", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.1)
        assert r.status_code == 200 and r.json()["object"] == "list"
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_replay_can_end_with_a_cut(client: httpx.Client) -> None:
    """A scenario with replay.json {"end": "close"} drops the connection after its bytes."""
    expected = (SCENARIOS_DIR / "cut_no_finish" / "chat_stream.sse").read_bytes()
    body = {"model": "fixture:cut_no_finish", "stream": True, "messages": user("x")}
    received = b""
    with (
        client.stream("POST", "/v1/chat/completions", json=body) as r,
        pytest.raises(httpx.RemoteProtocolError),
    ):
        for piece in r.iter_raw():
            received += piece
    assert received == expected


# ---- robustness -----------------------------------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 50) | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
_message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "tool", "system"])},
    optional={"content": _json | st.text(alphabet='@calreasontx {}"\n abc', max_size=60)},
)
_body = st.fixed_dictionaries(
    {"model": st.text(min_size=1, max_size=10), "messages": st.lists(_message, min_size=1, max_size=4)},
    optional={
        "tools": _json,
        "response_format": _json
        | st.just({"type": "json_schema", "json_schema": {"schema": {"type": "array"}}}),
        "stream_options": _json,
    },
)


@settings(max_examples=300, deadline=None)
@given(body=_body)
def test_scripted_mode_never_crashes(body: dict[str, Any]) -> None:
    """Whatever a (possibly buggy) bridge sends, the scripted model answers instead of raising."""
    answer = plan_answer(body)
    chunks = list(stream_chunks(answer, body["model"], include_usage=True))
    assert chunks[-2]["choices"][0]["finish_reason"] in {"stop", "tool_calls", "length"}
    assert completion(answer, body["model"])["usage"]["total_tokens"] >= 1
    orjson.dumps(chunks)
