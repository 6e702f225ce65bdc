"""Bad input, generated: request bodies against the app, random bytes against the SSE decoder,
random chunks against the stream translator.

The app runs in-process behind `httpx.ASGITransport` for speed (its lifespan is entered on a loop of its
own, so the upstream client and store exist), with a smaller sample over real uvicorn. Its upstream is
the fixture chat backend, so a body that happens to be valid is really answered. The rules: never a
5xx, never a traceback, every error in OpenAI's exact shape, and a wrong type for a known field is a
400 whose `param` names that field.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from conformance import parse_sse, validate_events
from tests.conftest import bridge_config
from tests.support.assertions import assert_openai_error

pytestmark = pytest.mark.timeout(300)

T = TypeVar("T")
FAST = settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
FEW = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))


# ------------------------------------------------------------------------------- the app in-process


class InProcessBridge:
    """The bridge's ASGI app with its lifespan running on a private loop in a thread; `post` runs a
    request through `httpx.ASGITransport` on that loop and returns the response."""

    def __init__(self, config: Any) -> None:
        from server.app import create_app

        self.app = create_app(config)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fuzz-bridge", daemon=True)
        self.thread.start()
        self.stack = contextlib.AsyncExitStack()
        self.run(self.stack.enter_async_context(self.app.router.lifespan_context(self.app)))
        transport = httpx.ASGITransport(app=self.app)
        self.client = httpx.AsyncClient(transport=transport, base_url="http://bridge.test", timeout=60)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def post(self, content: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
        hdrs = {"content-type": "application/json", **(headers or {})}
        return self.run(self.client.post("/v1/responses", content=content, headers=hdrs))

    def close(self) -> None:
        self.run(self.client.aclose())
        self.run(self.stack.aclose())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def app_bridge(backend_url: str) -> Iterator[InProcessBridge]:
    from server.config import Timeouts

    bridge = InProcessBridge(bridge_config(backend_url, store="memory", timeouts=Timeouts(5, 20, 10)))
    try:
        yield bridge
    finally:
        bridge.close()


# ------------------------------------------------------------------------------------ assertions


def assert_well_answered(response: httpx.Response, body: Any) -> dict[str, Any] | None:
    """A 2xx with a whole Response or a well-ended stream, or a 4xx in OpenAI's exact shape.
    Returns the error object for a 4xx."""
    text = response.text
    assert response.status_code < 500, f"{response.status_code} for {str(body)[:300]}: {text[:300]}"
    assert "Traceback" not in text and 'File "' not in text, text[:500]
    if response.status_code >= 400:  # generated input: a refusal is as right as an answer, never a 5xx
        return assert_openai_error(response, response.status_code)
    assert response.status_code == 200, text[:300]
    if response.headers["content-type"].startswith("text/event-stream"):
        assert response.content.endswith(b"data: [DONE]\n\n")
        events, framing = parse_sse(response.content)
        assert not framing, [str(v) for v in framing]
        assert events[-1]["type"] in ("response.completed", "response.incomplete", "response.failed")
    else:
        answer = orjson.loads(response.content)
        # background: true is answered at once, queued (the job runs on in the bridge)
        background = isinstance(body, dict) and body.get("background") is True
        statuses = ("queued",) if background else ("completed", "incomplete")
        assert answer["object"] == "response" and answer["status"] in statuses, answer
    return None


def names_field(error: dict[str, Any], field: str) -> bool:
    """`param` is the field itself or a path inside it (`tools[0].type`, `text.format`)."""
    param = error.get("param")
    if not isinstance(param, str):
        return False
    return param == field or param.startswith((field + ".", field + "["))


# ------------------------------------------------------------------------------------ strategies

json_scalars = (
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40)
)  # fmt: skip
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=25,
)

# the Responses request's known fields and the JSON types each accepts (null is always "absent")
FIELD_TYPES: dict[str, tuple[str, ...]] = {
    "model": ("str",),
    "input": ("str", "list"),
    "instructions": ("str", "list"),
    "tools": ("list",),
    "tool_choice": ("str", "dict"),
    "temperature": ("number",),
    "top_p": ("number",),
    "max_output_tokens": ("int",),
    "stream": ("bool",),
    "store": ("bool",),
    "metadata": ("dict",),
    "previous_response_id": ("str",),
    "reasoning": ("dict",),
    "text": ("dict",),
    "parallel_tool_calls": ("bool",),
    "truncation": ("str",),
    "user": ("str",),
    "include": ("list",),
    "background": ("bool",),
    "prompt_cache_key": ("str",),
    "service_tier": ("str",),
    "safety_identifier": ("str",),
    "top_logprobs": ("int",),
    "max_tool_calls": ("int",),
    "stream_options": ("dict",),
}


def json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "dict"
    return "null"


def is_wrong_type(value: Any, accepted: tuple[str, ...]) -> bool:
    kind = json_type(value)
    if kind == "null":
        return False
    if kind in accepted:
        return False
    return not ("number" in accepted and kind in ("int", "float"))


BASE = {"model": "fixture-scripted", "input": "@text fuzzed"}


def safe_model(body: Any) -> bool:
    """The fixture backend's chaos models hang or fail on purpose; a fuzzer must not pick them."""
    return not (
        isinstance(body, dict) and isinstance(body.get("model"), str) and body["model"].startswith("chaos:")
    )


# -------------------------------------------------------------------------------------- app fuzz


@FAST
@given(body=json_values)
def test_random_json_bodies(app_bridge: InProcessBridge, body: Any) -> None:
    assume(safe_model(body))
    assert_well_answered(app_bridge.post(orjson.dumps(body)), body)


@FAST
@given(extra=st.dictionaries(st.sampled_from(sorted(FIELD_TYPES)), json_values, max_size=6))
def test_random_values_for_known_fields(app_bridge: InProcessBridge, extra: dict[str, Any]) -> None:
    """The base request with known fields set to arbitrary JSON: answered or refused, never a crash."""
    body = {**BASE, **extra}
    assume(safe_model(body))
    assert_well_answered(app_bridge.post(orjson.dumps(body)), body)


WRONG_VALUES: dict[str, Any] = {
    "str": "not-the-right-type", "int": 7, "float": 1.5, "bool": True, "list": ["x"], "dict": {"a": "b"},
}  # fmt: skip
WRONG_CASES = [
    (field, kind)
    for field, accepted in sorted(FIELD_TYPES.items())
    for kind, value in WRONG_VALUES.items()
    if is_wrong_type(value, accepted)
]


@pytest.mark.parametrize(("field", "kind"), WRONG_CASES, ids=[f"{f}-{k}" for f, k in WRONG_CASES])
def test_wrong_type_names_the_param(app_bridge: InProcessBridge, field: str, kind: str) -> None:
    """Each known field given a value of a wrong JSON type: 400 with `param` naming the field (the
    request is not valid, so a 200 means the bridge silently ignored or forwarded garbage)."""
    value = WRONG_VALUES[kind]
    body = {**BASE, field: value}
    response = app_bridge.post(orjson.dumps(body))
    error = assert_well_answered(response, body)
    assert error is not None, f"{field}={value!r} accepted with {response.status_code}"
    assert response.status_code == 400, (response.status_code, error)
    assert names_field(error, field), f"{field}={value!r}: param {error['param']!r} ({error['message']})"


KNOWN_ITEM_TYPES = {
    "message", "function_call", "function_call_output", "reasoning", "custom_tool_call",
    "custom_tool_call_output", "item_reference", "input_text", "output_text", "compaction",
    "web_search_call", "file_search_call", "computer_call", "computer_call_output", "image_generation_call",
    "code_interpreter_call", "local_shell_call", "local_shell_call_output", "mcp_call", "mcp_list_tools",
    "mcp_approval_request", "mcp_approval_response", "shell_call", "shell_call_output", "apply_patch_call",
    "apply_patch_call_output",
}  # fmt: skip


@FEW
@given(
    item=st.fixed_dictionaries(
        {"type": st.text(min_size=1, max_size=20).filter(lambda t: t not in KNOWN_ITEM_TYPES)},
        optional={"role": st.sampled_from(["user", "assistant", "system", "tool", "x"]), "content": json_values,
                  "id": st.text(max_size=10), "call_id": st.text(max_size=10)},
    )
)  # fmt: skip
def test_unknown_input_item_types(app_bridge: InProcessBridge, item: dict[str, Any]) -> None:
    """An input item of a type the bridge does not know: 400 naming `input[0]…`."""
    body = {"model": "fixture-scripted", "input": [item]}
    response = app_bridge.post(orjson.dumps(body))
    error = assert_well_answered(response, body)
    assert error is not None and response.status_code == 400, response.text[:300]
    assert names_field(error, "input"), error


@FEW
@given(data=st.binary(min_size=0, max_size=300))
def test_random_bytes_are_invalid_json(app_bridge: InProcessBridge, data: bytes) -> None:
    with contextlib.suppress(orjson.JSONDecodeError):
        parsed = orjson.loads(data)
        assume(not isinstance(parsed, dict))  # an object is another test's business
    response = app_bridge.post(data)
    error = assert_well_answered(response, data)
    assert error is not None and response.status_code == 400, response.text[:300]
    assert error["code"] == "invalid_json" and error["param"] is None, error


NESTED_FIELDS = {
    "input": b'"input":[{"role":"user","content":%s}]',
    "instructions": b'"input":"hi","instructions":%s',
    "tools": b'"input":"hi","tools":%s',
    "tool-parameters": b'"input":"hi","tools":[{"type":"function","name":"f","parameters":%s}]',
    "json-schema": b'"input":"hi","text":{"format":{"type":"json_schema","name":"s","schema":%s}}',
    "metadata": b'"input":"hi","metadata":%s',
    "text": b'"input":"hi","text":%s',
    "reasoning": b'"input":"hi","reasoning":%s',
    "tool_choice": b'"input":"hi","tool_choice":%s',
    "user": b'"input":"hi","user":%s',
}


@pytest.mark.parametrize("field", sorted(NESTED_FIELDS))
@pytest.mark.parametrize("depth", [50, 900, 5000])
@pytest.mark.parametrize("shape", ["list", "dict"])
def test_deep_nesting(app_bridge: InProcessBridge, field: str, depth: int, shape: str) -> None:
    """Nesting deeper than any parser's or encoder's recursion limit (orjson: 1024 to parse, 255 to
    encode): a 400 (or a 200 for a harmless field), never a RecursionError surfacing as a 500."""
    nested = "[" * depth + "]" * depth if shape == "list" else '{"a":' * depth + "1" + "}" * depth
    raw = b'{"model":"fixture-scripted",' + NESTED_FIELDS[field] % nested.encode() + b"}"
    response = app_bridge.post(raw)
    assert_well_answered(response, raw[:100])


@pytest.mark.parametrize(
    "body",
    [
        {"model": "fixture-scripted", "input": "x" * (4 << 20)},
        {"model": "fixture-scripted", "input": "@text ok", "instructions": "i" * (2 << 20)},
        {"model": "m" * 100_000, "input": "hi"},
        {"model": "fixture-scripted", "input": [{"role": "user", "content": "hi"}] * 20_000},
        {"model": "fixture-scripted", "input": "hi", "metadata": {f"k{i}": "v" * 512 for i in range(2000)}},
        {
            "model": "fixture-scripted",
            "input": "hi",
            "tools": [{"type": "function", "name": "f" * 70_000, "parameters": {}}],
        },
    ],
    ids=["4MB-input", "2MB-instructions", "100k-model", "20k-items", "2000-metadata", "70k-tool-name"],
)
def test_huge_values(app_bridge: InProcessBridge, body: dict[str, Any]) -> None:
    assert_well_answered(app_bridge.post(orjson.dumps(body)), str(body)[:100])


# ------------------------------------------------------------------------------ over real uvicorn


@FEW
@given(body=json_values, stream=st.booleans())
def test_random_bodies_over_real_http(bridge_url: str, body: Any, stream: bool) -> None:
    if isinstance(body, dict):
        body = {**body, "stream": stream}
    assume(safe_model(body))
    response = httpx.post(bridge_url + "/responses", content=orjson.dumps(body),
                          headers={"content-type": "application/json"}, timeout=60)  # fmt: skip
    assert_well_answered(response, body)


@FEW
@given(extra=st.dictionaries(st.sampled_from(sorted(FIELD_TYPES)), json_values, min_size=1, max_size=4))
def test_random_fields_over_real_http(bridge_url: str, extra: dict[str, Any]) -> None:
    body = {**BASE, **extra}
    assume(safe_model(body))
    response = httpx.post(bridge_url + "/responses", content=orjson.dumps(body),
                          headers={"content-type": "application/json"}, timeout=60)  # fmt: skip
    assert_well_answered(response, body)


# ----------------------------------------------------------------------------------- SSE decoder

sse_alphabet = st.sampled_from(
    [b"data:", b"data: ", b"event: ", b"id: 1", b"retry: 5", b": keep-alive", b"\n", b"\n\n", b"\r\n", b"\r",
     b"[DONE]", b"{}", b'{"a":1}', b"x", b"\xe9", b"\xff\xfe", "é".encode(), "😀".encode(), b"\x00", b" "]
)  # fmt: skip
sse_bytes = st.lists(sse_alphabet, max_size=60).map(b"".join) | st.binary(max_size=400)


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    parts, last = [], 0
    for point in points:
        parts.append(data[last:point])
        last = point
    parts.append(data[last:])
    return parts


def reference_frames(data: bytes) -> list[tuple[str | None, str]]:
    """The WHATWG event-stream rules, line by line (plus: a last frame without its blank line is
    flushed at EOF, as `SSEDecoder.close` does for backends that close right after a data line)."""
    text = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").decode("utf-8", "replace")
    out: list[tuple[str | None, str]] = []
    event: str | None = None
    lines: list[str] = []
    for line in [*text.split("\n"), ""]:
        if line == "":
            if lines:
                out.append((event, "\n".join(lines)))
            event, lines = None, []
            continue
        if line.startswith(":"):
            continue
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            lines.append(value)
        elif name == "event":
            event = value
    return out


@settings(max_examples=400, deadline=None)
@given(data=sse_bytes, cuts=st.lists(st.integers(0, 10_000), max_size=8))
def test_sse_decoder_never_raises_and_is_split_invariant(data: bytes, cuts: list[int]) -> None:
    from translator.sse import SSEDecoder

    decoder = SSEDecoder()
    frames: list[tuple[str | None, str]] = []
    for part in split_at(data, cuts):
        frames.extend(decoder.feed(part))
    frames.extend(decoder.close())
    for name, payload in frames:
        assert name is None or isinstance(name, str)
        assert isinstance(payload, str)
    whole = SSEDecoder()
    assert frames == [*whole.feed(data), *whole.close()], "the result depends on how the bytes were split"
    assert frames == reference_frames(data)


# ------------------------------------------------------------------------------ stream translator

finish_reasons = st.sampled_from([None, "stop", "length", "tool_calls", "content_filter", "function_call", "error",
                                  "eos", "weird"]) | json_scalars  # fmt: skip
text_or_junk = st.one_of(st.text(max_size=20), st.none(), json_values)
tool_call_delta = st.fixed_dictionaries(
    {},
    optional={
        "index": st.one_of(st.integers(-2, 4), st.none(), st.text(max_size=2)),
        "id": st.one_of(st.text(max_size=8), st.none()),
        "type": st.sampled_from(["function", "custom", "x"]),
        "function": st.fixed_dictionaries(
            {},
            optional={
                "name": st.sampled_from(["get_weather", "shell", "nope", ""]) | st.none(),
                "arguments": text_or_junk,
            },
        ),
        "custom": st.fixed_dictionaries({}, optional={"name": st.text(max_size=5), "input": text_or_junk}),
    },
)
delta = st.fixed_dictionaries(
    {},
    optional={
        "role": st.sampled_from(["assistant", "user", None, 3]),
        "content": st.one_of(st.sampled_from(["<think>", "</think>", "Hello", " world", ""]), text_or_junk),
        "reasoning_content": text_or_junk,
        "reasoning": text_or_junk,
        "reasoning_details": json_values,
        "refusal": text_or_junk,
        "tool_calls": st.one_of(st.lists(tool_call_delta, max_size=3), json_scalars),
    },
)
choice = st.fixed_dictionaries(
    {},
    optional={"index": st.one_of(st.integers(0, 2), json_scalars), "delta": st.one_of(delta, json_scalars),
              "finish_reason": finish_reasons, "logprobs": json_values},
)  # fmt: skip
usage = st.one_of(
    st.none(),
    st.fixed_dictionaries({}, optional={
        "prompt_tokens": st.one_of(st.integers(-5, 10**6), json_scalars),
        "completion_tokens": st.one_of(st.integers(-5, 10**6), json_scalars),
        "total_tokens": st.one_of(st.integers(0, 10**6), json_scalars),
        "prompt_tokens_details": json_values, "completion_tokens_details": json_values,
    }),
    json_values,
)  # fmt: skip
chat_chunk = st.one_of(
    st.fixed_dictionaries(
        {"choices": st.one_of(st.lists(choice, max_size=2), json_scalars)},
        optional={"id": st.text(max_size=8), "object": st.just("chat.completion.chunk"), "usage": usage,
                  "model": st.text(max_size=5), "error": st.one_of(json_values, st.fixed_dictionaries(
                      {"message": st.text(max_size=20)}))},
    ),
    st.dictionaries(st.text(max_size=10), json_values, max_size=4),
)  # fmt: skip

TRANSLATOR_REQUEST = {
    "model": "m",
    "input": "hi",
    "tools": [
        {"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}},
        {"type": "custom", "name": "shell", "description": "run"},
    ],
}
option_sets = st.fixed_dictionaries(
    {},
    optional={
        "think_tags": st.booleans(),
        "reasoning_events": st.sampled_from(["summary", "reasoning_text", "openresponses"]),
        "custom_tools": st.sampled_from(["function", "native"]),
        "error_event": st.sampled_from(["none", "openai", "openresponses", "both"]),
    },
)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    chunks=st.lists(chat_chunk, max_size=12),
    options=option_sets,
    ending=st.sampled_from(["done", "eof", "fail"]),
)
def test_chat_stream_translator_with_random_chunks(
    chunks: list[dict[str, Any]], options: dict[str, Any], ending: str
) -> None:
    """Any sequence of chunk-shaped dicts: no exception, and the events form a valid Responses stream
    ending in exactly one terminal event, whatever the backend sent."""
    from translator import ChatStreamTranslator

    profile = "openresponses" if options.get("reasoning_events") == "openresponses" else "openai"
    request = TRANSLATOR_REQUEST
    if profile == "openresponses":  # Open Responses echoes function tools only, nests error events
        request = {**request, "tools": request["tools"][:1]}
        if options.get("error_event") in ("none", "openai"):
            options = {**options, "error_event": "openresponses"}
    translator = ChatStreamTranslator(request, **options)
    events: list[dict[str, Any]] = []
    for chunk in chunks:
        events.extend(translator.feed(chunk))
    if ending == "fail":
        events.extend(translator.fail("the client went away", "server_error"))
    else:
        events.extend(translator.finish(done_seen=ending == "done"))
    assert translator.feed({"choices": []}) == [] and translator.finish() == [], "nothing after the end"
    violations = validate_events(events, request, profile=profile)
    assert not violations, [str(v) for v in violations][:5]
    terminals = [
        e for e in events if e["type"] in ("response.completed", "response.incomplete", "response.failed")
    ]
    assert len(terminals) == 1 and events[-1] is terminals[0]
    for event in events:
        orjson.dumps(event)  # serialisable as it stands
