"""`POST /v1/chat/completions` on a real bridge: translated in front of the fixture Responses
backend (`api = "responses"`, its corpus of native-Responses quirks), passed through in front of
the fixture chat backend (`api = "chat"`), judged by the openai SDK and the chunk grammar."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conformance.chat import accumulate_chunks, parse_chat_sse, validate_chat_stream
from fixtures.responses_backend import SCENARIOS_DIR, create_app, scenario_names
from tests.support.servers import RunningServer, run_app

NAMES = scenario_names()
HELLO = [{"role": "user", "content": "Hello"}]


@pytest.fixture(scope="module")
def responses_backend() -> Iterator[RunningServer]:
    with run_app(create_app()) as running:
        yield running


@pytest.fixture
def reverse_bridge(make_bridge: Any, responses_backend: RunningServer) -> Any:
    return make_bridge(upstream={"base_url": responses_backend.url + "/v1", "api": "responses"})


def expected(name: str) -> dict[str, Any]:
    return orjson.loads((SCENARIOS_DIR / name / "expected.json").read_bytes())


def post_stream(url: str, body: dict[str, Any]) -> httpx.Response:
    # the read timeout guards against a bridge that waits for the end of a body the backend holds open
    with httpx.Client(timeout=httpx.Timeout(20.0, read=10.0)) as client:
        response = client.post(url + "/chat/completions", json={**body, "stream": True})
        response.read()
        return response


@pytest.mark.parametrize("name", [n for n in NAMES if n not in ("error_event_rate_limit", "stall_after_text")])
def test_translated_stream_per_scenario(reverse_bridge: Any, name: str) -> None:
    request = {"model": f"fixture:{name}", "messages": HELLO, "stream_options": {"include_usage": True}}
    reply = post_stream(reverse_bridge.url, request)
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/event-stream")
    assert validate_chat_stream(reply.content, {**request, "stream": True}) == []
    chunks, done, _ = parse_chat_sse(reply.content)
    assert done
    got = accumulate_chunks(chunks)
    want = expected(name)
    assert got["content"] == (want["content"] or "")
    assert got["reasoning_content"] == (want["reasoning_content"] or "")
    assert got["tool_calls"] == want["tool_calls"]
    assert got["finish_reason"] == want["finish_reason"]
    if "error" in want:
        assert got["error"]["code"] == want["error"]["code"]
    else:
        assert got["usage"] == want["usage"]


@pytest.mark.parametrize("name", ["text_openai", "parallel_calls_openai", "reasoning_text_vllm", "incomplete_length"])
def test_translated_whole_answer_with_the_sdk(reverse_bridge: Any, name: str) -> None:
    client = openai.OpenAI(base_url=reverse_bridge.url, api_key="x", max_retries=0)
    completion = client.chat.completions.create(model=f"fixture:{name}", messages=HELLO)
    want = expected(name)
    choice = completion.choices[0]
    assert choice.message.content == want["content"]
    assert choice.finish_reason == want["finish_reason"]
    assert [(c.id, c.function.name, c.function.arguments) for c in choice.message.tool_calls or []] == [
        (c["id"], c["name"], c["arguments"]) for c in want["tool_calls"]]
    assert completion.usage is not None and completion.usage.total_tokens == want["usage"]["total_tokens"]


def test_sdk_stream_accumulates(reverse_bridge: Any) -> None:
    client = openai.OpenAI(base_url=reverse_bridge.url, api_key="x", max_retries=0)
    with client.chat.completions.stream(model="fixture:parallel_calls_openai", messages=HELLO) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    calls = final.choices[0].message.tool_calls or []
    assert [(c.id, c.function.arguments) for c in calls] == [("call_Wq1", '{"city": "Paris"}'),
                                                             ("call_Wq2", '{"city": "Tokyo"}')]


def test_failure_before_output_is_an_http_error(reverse_bridge: Any) -> None:
    client = openai.OpenAI(base_url=reverse_bridge.url, api_key="x", max_retries=0)
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="fixture:error_event_rate_limit", messages=HELLO, stream=True)
    assert caught.value.code == "rate_limit_exceeded"
    with pytest.raises(openai.RateLimitError):  # the whole answer: the backend's 429 keeps its status
        client.chat.completions.create(model="fixture:error_event_rate_limit", messages=HELLO)


def test_failure_after_output_is_an_error_chunk_the_sdk_raises(reverse_bridge: Any) -> None:
    client = openai.OpenAI(base_url=reverse_bridge.url, api_key="x", max_retries=0)
    seen = []
    with pytest.raises(openai.APIError, match="The model crashed"):
        for chunk in client.chat.completions.create(model="fixture:failed_midstream", messages=HELLO, stream=True):
            seen.append(chunk.choices[0].delta.content if chunk.choices else None)
    assert "Partial" in seen
    with pytest.raises(openai.APIStatusError) as caught:  # whole: a failed Response is a 5xx
        client.chat.completions.create(model="fixture:failed_midstream", messages=HELLO)
    assert caught.value.status_code == 502


def test_n_above_one_is_refused(reverse_bridge: Any) -> None:
    reply = httpx.post(reverse_bridge.url + "/chat/completions", json={"model": "fixture:text_openai",
                                                                       "messages": HELLO, "n": 2}, timeout=10)
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["param"] == "n" and error["type"] == "invalid_request_error" and "n" in error["message"]


def test_what_the_responses_backend_receives(reverse_bridge: Any, responses_backend: RunningServer) -> None:
    client = openai.OpenAI(base_url=reverse_bridge.url, api_key="x", max_retries=0)
    client.chat.completions.create(
        model="fixture:text_openai", max_tokens=33, temperature=0.25,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        functions=[{"name": "lookup", "parameters": {"type": "object"}}], function_call={"name": "lookup"},
        response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}})
    sent = httpx.get(responses_backend.url + "/_fixture/requests", timeout=10).json()["requests"][-1]
    assert sent["input"][0] == {"type": "message", "role": "system", "content": "Be brief."}
    assert sent["max_output_tokens"] == 33 and sent["temperature"] == 0.25 and sent["store"] is False
    assert sent["tools"] == [{"type": "function", "name": "lookup", "parameters": {"type": "object"}}]
    assert sent["tool_choice"] == {"type": "function", "name": "lookup"}
    assert sent["text"]["format"] == {"type": "json_schema", "name": "a", "schema": {"type": "object"}}


def test_bad_bodies_are_400s(reverse_bridge: Any) -> None:
    for body, param in (({"model": "m"}, "messages"), ({"messages": HELLO}, "model"),
                        ({"model": "fixture:text_openai", "messages": HELLO, "stream": "yes"}, "stream"),
                        ({"model": "fixture:text_openai", "messages": [{"role": "wizard", "content": "x"}]},
                         "messages[0].role")):
        reply = httpx.post(reverse_bridge.url + "/chat/completions", json=body, timeout=10)
        assert reply.status_code == 400, body
        assert reply.json()["error"]["param"] == param


# ------------------------------------------------------------------------------------- passthrough


def test_passthrough_applies_the_profile_fixes(make_bridge: Any, backend_requests: Any,
                                                clear_backend_requests: Any) -> None:
    bridge = make_bridge(upstream={"aliases": {"small": "fixture-scripted"}, "options": {"developer_role": "system"}})
    clear_backend_requests()
    client = openai.OpenAI(base_url=bridge.url, api_key="x", max_retries=0)
    completion = client.chat.completions.create(
        model="small", max_completion_tokens=20, n=2,
        messages=[{"role": "developer", "content": "D"}, {"role": "user", "content": "hello there"}])
    assert completion.choices[0].message.content == "Echo: hello there"
    sent = backend_requests()[-1]
    assert sent["model"] == "fixture-scripted"  # the alias resolved
    assert sent["messages"][0] == {"role": "system", "content": "D"}
    assert sent["max_tokens"] == 20 and "max_completion_tokens" not in sent
    assert sent["n"] == 2  # a chat backend answers n itself


@pytest.mark.parametrize(("model", "error_code"), [
    ("fixture-scripted", None), ("chaos:midstream-error", "any"), ("chaos:cut", "upstream_error"),
    ("chaos:no-done", None), ("chaos:malformed", "upstream_malformed_chunk")])
def test_passthrough_stream_always_ends_with_done(bridge_url: str, model: str, error_code: str | None) -> None:
    request = {"model": model, "messages": [{"role": "user", "content": "hello there"}]}
    reply = post_stream(bridge_url, request)
    assert reply.status_code == 200
    chunks, done, _ = parse_chat_sse(reply.content)
    assert done
    got = accumulate_chunks(chunks)
    if error_code is None:
        assert got["error"] is None and got["finish_reason"] == "stop"
        assert validate_chat_stream(reply.content, {**request, "stream": True}) == []
    else:
        assert got["error"] is not None and chunks[-1] == {"error": got["error"]}
        if error_code != "any":
            assert got["error"]["code"] == error_code


def test_auth_covers_the_chat_route(make_bridge: Any) -> None:
    bridge = make_bridge(api_keys=("sekret-key",))
    reply = httpx.post(bridge.url + "/chat/completions", json={"model": "m", "messages": HELLO}, timeout=10)
    assert reply.status_code == 401 and reply.json()["error"]["code"] == "invalid_api_key"
    ok = httpx.post(bridge.url + "/chat/completions", json={"model": "fixture-scripted", "messages": HELLO},
                    headers={"authorization": "Bearer sekret-key"}, timeout=10)
    assert ok.status_code == 200 and ok.json()["object"] == "chat.completion"


def test_config_refuses_an_unknown_api() -> None:
    from server.config import ConfigError
    from server.config_file import parse_config

    with pytest.raises(ConfigError, match="api must be one of chat, responses"):
        parse_config({"upstreams": [{"base_url": "http://x/v1", "api": "soap"}]}, env={})
    config = parse_config({"upstreams": [{"base_url": "http://x/v1", "api": "responses"}]}, env={})
    assert config.upstreams[0].api == "responses"


# ------------------------------------------------------------------------ the stream, split anywhere


class _Client:
    name = "fuzz"


async def _translate_bytes(parts: list[bytes], request: dict[str, Any]) -> bytes:
    from server.accesslog import AccessRecord
    from server.chat_translated import ResponsesEvents, TranslatedSource
    from translator import ResponsesStreamTranslator

    async def body() -> Any:
        for part in parts:
            yield part

    upstream = httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body())
    events = ResponsesEvents(upstream, _Client())  # type: ignore[arg-type]
    prelude = await events.first_output()
    source = TranslatedSource(events, ResponsesStreamTranslator(request), prelude, AccessRecord("POST", "/"), ())
    return b"".join([frame async for frame in source.frames()]) + b"data: [DONE]\n\n"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([n for n in NAMES if n != "error_event_rate_limit"]), st.data())
def test_any_byte_split_gives_the_same_chat_stream(name: str, data: st.DataObject) -> None:
    """The same events cut into reads at random byte offsets (mid-frame, mid-UTF-8) say the same."""
    import asyncio

    raw = (SCENARIOS_DIR / name / "events.sse").read_bytes()
    cuts = sorted(data.draw(st.sets(st.integers(1, len(raw) - 1), max_size=12)))
    parts = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    request = {"model": "m", "stream": True, "stream_options": {"include_usage": True}}
    whole = asyncio.run(_translate_bytes([raw], request))
    split = asyncio.run(_translate_bytes(parts, request))
    assert parse_chat_sse(split)[0] == parse_chat_sse(whole)[0]
    assert validate_chat_stream(split, request) == []
    got = accumulate_chunks(parse_chat_sse(split)[0])
    assert got["content"] == (expected(name)["content"] or "")


SECRET = "sk-fixture-secret-0000"


def test_secrets_are_scrubbed_from_errors(make_bridge: Any, responses_backend: RunningServer) -> None:
    bridge = make_bridge(upstream={"base_url": responses_backend.url + "/v1", "api": "responses", "api_key": SECRET})
    reply = post_stream(bridge.url, {"model": "fixture:failed_echoes_key", "messages": HELLO})
    assert SECRET.encode() not in reply.content and b"***" in reply.content
    whole = httpx.post(bridge.url + "/chat/completions", json={"model": "fixture:failed_echoes_key",
                                                               "messages": HELLO}, timeout=10)
    assert whole.status_code == 502 and SECRET not in whole.text and "***" in whole.json()["error"]["message"]


@pytest.mark.parametrize("mode", ["passthrough", "translated"])
def test_shutdown_ends_a_stalled_chat_stream_with_an_error_chunk(make_bridge: Any, responses_backend: RunningServer,
                                                                 mode: str) -> None:
    """A stream waiting on a silent backend gets the shutdown grace, then an error chunk and [DONE]."""
    overrides: dict[str, Any] = {"shutdown_grace": 0.3}
    model = "chaos:stall"  # the role chunk, then silence
    if mode == "translated":
        overrides["upstream"] = {"base_url": responses_backend.url + "/v1", "api": "responses"}
        model = "fixture:stall_after_text"
    bridge = make_bridge(**overrides)
    state = bridge.app.state.bridge
    body = {"model": model, "messages": HELLO, "stream": True}
    with httpx.Client(timeout=httpx.Timeout(20.0, read=10.0)) as client, \
            client.stream("POST", bridge.url + "/chat/completions", json=body) as reply:
        assert reply.status_code == 200
        parts = reply.iter_raw()
        received = next(parts)
        state.loop.call_soon_threadsafe(state.begin_shutdown)
        received += b"".join(parts)
    chunks, done, _ = parse_chat_sse(received)
    assert done and chunks[-1]["error"]["code"] == "server_shutting_down"


def test_shutdown_before_the_first_output_is_a_503(make_bridge: Any, bridge_url: str) -> None:
    """The reverse path waits for the first output before answering; a shutdown then is a plain 503."""
    import threading

    bridge = make_bridge(shutdown_grace=0.3, upstream={"base_url": bridge_url, "api": "responses"})
    state = bridge.app.state.bridge
    timer = threading.Timer(0.5, lambda: state.loop.call_soon_threadsafe(state.begin_shutdown))
    timer.start()
    try:
        reply = httpx.post(bridge.url + "/chat/completions", timeout=httpx.Timeout(20.0, read=10.0),
                           json={"model": "chaos:stall", "messages": HELLO, "stream": True})
    finally:
        timer.cancel()
    assert reply.status_code == 503 and reply.json()["error"]["code"] == "server_shutting_down"


# ------------------------------------------------------------- Responses clients, same upstream


def test_responses_clients_reach_a_responses_upstream_untranslated(reverse_bridge: Any,
                                                                  responses_backend: RunningServer) -> None:
    """/v1/responses to an `api = "responses"` upstream is relayed: the SDK gets the backend's events
    (DeepSeek's stream without [DONE] ends at its terminal event) and its whole Response."""
    client = openai.OpenAI(base_url=reverse_bridge.url, api_key="x", max_retries=0)
    whole = client.responses.create(model="fixture:text_openai", input="Hello")
    assert whole.output_text == "Hello! How can I help?" and whole.id == "resp_68f0a1text"
    with client.responses.stream(model="fixture:no_done_deepseek", input="Hello") as stream:
        for _ in stream:
            pass
        final = stream.get_final_response()
    assert final.output_text == "Bonjour le monde"
    sent = httpx.get(responses_backend.url + "/_fixture/requests", timeout=10).json()["requests"][-1]
    assert sent["input"] == "Hello" and sent["model"] == "fixture:no_done_deepseek"
    cut = post_responses_stream(reverse_bridge.url, "fixture:cut_no_terminal")
    assert cut.endswith(b"data: [DONE]\n\n") and b'"code":"upstream_error"' in cut


def post_responses_stream(url: str, model: str) -> bytes:
    with httpx.Client(timeout=httpx.Timeout(20.0, read=10.0)) as client:
        reply = client.post(url + "/responses", json={"model": model, "input": "Hello", "stream": True})
        return reply.read()


def test_metrics_count_chat_requests_and_streams(make_bridge: Any) -> None:
    import time

    from prometheus_client.parser import text_string_to_metric_families

    def scrape(root: str) -> list[tuple[str, dict[str, str], float]]:
        text = httpx.get(root + "/metrics", timeout=30).text
        return [(s.name, dict(s.labels), s.value) for f in text_string_to_metric_families(text) for s in f.samples]

    def value(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
        return sum(v for n, ls, v in samples if n == name and all(ls.get(k) == w for k, w in labels.items()))

    bridge = make_bridge(metrics=True, store="none")
    httpx.post(bridge.url + "/chat/completions", json={"model": "fixture-scripted", "messages": HELLO}, timeout=30)
    body = {"model": "chaos:stall", "messages": HELLO, "stream": True}
    with httpx.Client(timeout=30) as http, http.stream("POST", bridge.url + "/chat/completions", json=body) as stream:
        chunks = stream.iter_raw()
        assert b'"role":"assistant"' in next(chunks)
        now = scrape(bridge.root)
        assert value(now, "responses_bridge_streams_in_flight", upstream="fixture") == 1
    assert value(now, "responses_bridge_requests_total", route="/v1/chat/completions", status="200") >= 1
    deadline = time.monotonic() + 20
    while value(scrape(bridge.root), "responses_bridge_streams_in_flight") != 0:
        assert time.monotonic() < deadline, "the gauge never went back to 0"
        time.sleep(0.05)
