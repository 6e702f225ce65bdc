"""Backend quirks handled on the translator side, the event catalogue, and the request validator.

Each test names the backend behaviour it stands for; docs/wire.md §3 describes them.
"""

from __future__ import annotations

import ast
import pathlib
from typing import Any

import pytest
from openai.types.responses import ResponseUsage

import translator
from tests.support.stream_check import check_stream, run_stream
from translator import (
    EVENT_TYPES,
    ITEM_ID_PREFIXES,
    OUTPUT_DELTA_TYPES,
    TERMINAL_EVENT_TYPES,
    ChatStreamTranslator,
    InvalidRequest,
    SSEDecoder,
    UpstreamError,
    chat_completion_to_response,
    check_request,
    map_usage,
    responses_to_chat_request,
)
from translator.builders import ToolCallTable
from translator.events import LIFECYCLE_EVENT_TYPES
from translator.requests import REQUEST_FIELDS

OPTS = {"response_id": "resp_q", "created_at": 1, "completed_at": 2}
REQ: dict[str, Any] = {"model": "m", "input": "q",
                       "tools": [{"type": "function", "name": "f"}, {"type": "function", "name": "g"}]}
TRANSLATOR_DIR = pathlib.Path(translator.__file__).parent


def _chunk(delta: dict[str, Any] | None = None, index: int | None = 0, finish: str | None = None) -> dict[str, Any]:
    choice: dict[str, Any] = {"delta": delta or {}, "finish_reason": finish}
    if index is not None:
        choice["index"] = index
    return {"choices": [choice]}


# ------------------------------------------------------------------------------ event catalogue


def test_catalogue_sets_are_consistent() -> None:
    assert {"response.completed", "response.incomplete", "response.failed"} == TERMINAL_EVENT_TYPES
    assert TERMINAL_EVENT_TYPES <= EVENT_TYPES and OUTPUT_DELTA_TYPES <= EVENT_TYPES
    assert LIFECYCLE_EVENT_TYPES <= EVENT_TYPES
    assert all(t.endswith(".delta") for t in OUTPUT_DELTA_TYPES)
    assert ITEM_ID_PREFIXES == {"message": "msg_", "function_call": "fc_", "custom_tool_call": "ctc_",
                                "reasoning": "rs_", "compaction": "cmp_", "function_call_output": "fco_",
                                "custom_tool_call_output": "ctco_"}


def test_every_emitted_event_type_is_in_the_catalogue() -> None:
    chunks = [
        _chunk({"reasoning_content": "r"}),
        _chunk({"content": "t", "annotations": [{"type": "url_citation", "url_citation": {"url": "u"}}]}),
        _chunk({"refusal": "no"}),
        _chunk({"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "f", "arguments": "{}"}}]}),
        _chunk(finish="tool_calls"),
    ]
    for mode in ("summary", "reasoning_text", "openresponses"):
        events, _ = run_stream(REQ, chunks, reasoning_events=mode, **OPTS)
        assert {e["type"] for e in events} <= EVENT_TYPES
    failed = ChatStreamTranslator(REQ, **OPTS).fail("x")
    assert {e["type"] for e in failed} <= EVENT_TYPES


def _translator_imports() -> dict[str, set[str]]:
    """module → the translator modules it imports at module level (relative or absolute)."""
    graph: dict[str, set[str]] = {}
    for path in TRANSLATOR_DIR.glob("*.py"):
        deps: set[str] = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom):
                if node.level == 1 and node.module:
                    deps.add(node.module.split(".")[0])
                elif node.module and node.module.startswith("translator."):
                    deps.add(node.module.split(".")[1])
        graph[path.stem] = deps
    return graph


def test_no_import_circles_in_translator() -> None:
    graph = _translator_imports()
    assert graph["events"] <= set(), "events.py must import nothing of the translator"
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for dep in graph.get(module, ()):
            assert state.get(dep) != 1, f"import circle: {' -> '.join([*path, module, dep])}"
            if dep not in state:
                visit(dep, [*path, module])
        state[module] = 2

    for module in graph:
        if module not in state:
            visit(module, [])
    # and no function-level import of the translator's own modules hides a circle either
    for path in TRANSLATOR_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef):
                for inner in ast.walk(node):
                    assert not (isinstance(inner, ast.ImportFrom) and inner.level), f"lazy import in {path.name}"


def test_no_hand_counted_sequence_numbers() -> None:
    """Only the Emitter touches the sequence number."""
    for name in ("stream.py", "builders.py"):
        source = (TRANSLATOR_DIR / name).read_text()
        assert "_seq" not in source
        assert source.count(".seq +=") == (2 if name == "builders.py" else 0)


# ------------------------------------------------------------------------------ a. only choice 0


def test_stream_ignores_other_choices_when_backend_ignores_n() -> None:
    """OpenAI-style n>1 streaming: each chunk carries one choice, with its own index."""
    chunks = [
        _chunk({"role": "assistant", "content": "Hel"}),
        _chunk({"role": "assistant", "content": "WRONG"}, index=1),
        _chunk({"content": "lo"}),
        _chunk({"content": " also wrong"}, index=1),
        _chunk({"tool_calls": [{"index": 0, "id": "call_x", "function": {"name": "g", "arguments": "{}"}}]}, index=1),
        _chunk(index=1, finish="tool_calls"),
        _chunk({"content": "!"}),
        {"choices": [{"index": 2, "delta": {"content": "nope"}}, {"index": 0, "delta": {"content": "?"}}]},
        _chunk(finish="stop"),
    ]
    events, tr = run_stream(REQ, chunks, **OPTS)
    check_stream(events, REQ)
    out = tr.response["output"]
    assert len(out) == 1 and out[0]["type"] == "message"
    assert out[0]["content"][0]["text"] == "Hello!?"
    assert tr.response["status"] == "completed"
    assert "WRONG" not in str(events) and "call_x" not in str(events)


def test_finish_reason_of_another_choice_does_not_end_the_answer() -> None:
    _, tr = run_stream(REQ, [_chunk({"content": "a"}), _chunk(index=1, finish="length")], **OPTS)
    assert tr.response["status"] == "failed"  # choice 0 never said how it ended


def test_whole_completion_uses_choice_zero() -> None:
    completion = {"choices": [
        {"index": 1, "message": {"role": "assistant", "content": "wrong",
                                 "tool_calls": [{"id": "c", "type": "function",
                                                 "function": {"name": "f", "arguments": "{}"}}]},
         "finish_reason": "tool_calls"},
        {"index": 0, "message": {"role": "assistant", "content": "right"}, "finish_reason": "stop"},
    ]}
    response = chat_completion_to_response(completion, REQ, **OPTS)
    assert [i["type"] for i in response["output"]] == ["message"]
    assert response["output"][0]["content"][0]["text"] == "right"


# ------------------------------------------------------------------------------ b. reasoning tokens


def test_reasoning_tokens_absent_is_zero_because_the_sdk_requires_an_int() -> None:
    usage = map_usage({"prompt_tokens": 3, "completion_tokens": 4})
    assert usage is not None and usage["output_tokens_details"] == {"reasoning_tokens": 0}
    ResponseUsage.model_validate(usage)  # the shape the SDK accepts
    with pytest.raises(ValueError):  # why not null: the SDK type refuses it
        ResponseUsage.model_validate({**usage, "output_tokens_details": {"reasoning_tokens": None}})
    given = map_usage({"prompt_tokens": 3, "completion_tokens": 4, "completion_tokens_details": {"reasoning_tokens": 2}})
    assert given is not None and given["output_tokens_details"]["reasoning_tokens"] == 2


# ------------------------------------------------------------------------------ c. context overflow

OVERFLOW_BODIES = {
    "llama.cpp": {"error": {"code": 400, "message": "the request exceeds the available context size, try increasing it",
                            "type": "exceed_context_size_error", "n_prompt_tokens": 5000, "n_ctx": 4096}},
    "llama.cpp (type only)": {"error": {"message": "too big", "type": "exceed_context_size_error"}},
    "vLLM": {"object": "error", "message": "ignored", "error": {
        "message": "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens "
                   "(4000 in the messages, 1000 in the completion).", "type": "BadRequestError", "code": 400}},
    "vLLM decoder prompt": {"error": {"message": "The decoder prompt (length 9000) is longer than the maximum model "
                                                "length of 8192.", "type": "BadRequestError"}},
    "OpenAI": {"error": {"message": "Your input exceeds the context window of this model.",
                         "type": "invalid_request_error", "code": "context_length_exceeded", "param": "input"}},
    "generic": {"error": {"message": "Context length exceeded for this request.", "type": "invalid_request_error"}},
    "Anthropic-compatible": {"error": {"message": "prompt is too long: 210000 tokens > 200000 maximum"}},
    "Ollama": {"error": "prompt too long; exceeded max context length by 120 tokens"},
    "Ollama (input length)": {"error": "the input length exceeds the context length"},
    "DeepSeek": {"error": {"message": "This model's maximum context length is 65536 tokens. However, you requested "
                                      "70000 tokens.", "type": "invalid_request_error", "code": "invalid_request_error"}},
    "Groq": {"error": {"message": "Please reduce the length of the messages or completion.",
                       "type": "invalid_request_error", "param": "messages"}},
    "Mistral": {"error": {"message": "Prompt contains 40000 tokens and 0 draft tokens, too large for model with "
                                     "32768 maximum context length", "type": "invalid_request_message_error"}},
    "Gemini": {"error": {"message": "The input token count (1200000) exceeds the maximum number of tokens allowed "
                                    "(1048576).", "status": "INVALID_ARGUMENT", "code": 400}},
    "OpenRouter": {"error": {"message": "This endpoint's maximum context length is 8192 tokens.", "code": 400}},
    "LM Studio": {"error": "The number of tokens to keep from the initial prompt is greater than the context length."},
    "TGI": {"error": "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096. Given: 4000 "
                     "`inputs` tokens and 200 `max_new_tokens`", "error_type": "validation"},
}


@pytest.mark.parametrize("backend", sorted(OVERFLOW_BODIES))
@pytest.mark.parametrize("status", [400, 413, 500, 502])
def test_every_context_overflow_wording_maps_to_context_length_exceeded(backend: str, status: int) -> None:
    err = UpstreamError.from_body(OVERFLOW_BODIES[backend], status=status)
    assert err.code == "context_length_exceeded"
    assert err.status == 400
    body = err.to_error()["error"]
    assert body["type"] == "invalid_request_error" and body["code"] == "context_length_exceeded"


@pytest.mark.parametrize("body", [
    {"error": {"message": "Rate limit reached", "code": "rate_limit_exceeded"}},
    {"error": {"message": "The model `x` does not exist", "type": "invalid_request_error"}},
    {"error": "Internal error: context manager failed"},
    {"error": {"message": "max_tokens must be at least 1"}},
])
def test_other_errors_are_not_mistaken_for_overflow(body: dict[str, Any]) -> None:
    assert UpstreamError.from_body(body, status=502).code != "context_length_exceeded"


@pytest.mark.parametrize("backend", ["llama.cpp", "vLLM", "Ollama", "Mistral", "Gemini"])
def test_mid_stream_overflow_error_fails_with_its_code(backend: str) -> None:
    body = OVERFLOW_BODIES[backend]
    events, tr = run_stream(REQ, [_chunk({"content": "a"}), {"error": body["error"]}], **OPTS)
    assert events[-1]["type"] == "response.failed"
    assert tr.response["error"]["code"] == "context_length_exceeded"
    error_event = next(e for e in events if e["type"] == "error")
    assert error_event["code"] == "context_length_exceeded"


def test_fail_keeps_the_code_it_is_given() -> None:
    tr = ChatStreamTranslator(REQ, **OPTS)
    events = tr.fail("The server is shutting down.", code="server_shutting_down")
    assert events[-1]["response"]["error"] == {"code": "server_shutting_down", "message": "The server is shutting down."}
    assert next(e for e in events if e["type"] == "error")["code"] == "server_shutting_down"


def test_unknown_backend_code_mid_stream_is_still_server_error() -> None:
    _, tr = run_stream(REQ, [{"error": {"message": "boom", "code": "weird_backend_code"}}], **OPTS)
    assert tr.response["error"]["code"] == "server_error"


# ------------------------------------------------------------------------------ d. tool_choice options

NAMED_REQ: dict[str, Any] = {**REQ, "tool_choice": {"type": "function", "name": "g"}}


def test_named_tool_choice_native_is_the_default() -> None:
    out = responses_to_chat_request(NAMED_REQ)
    assert out["tool_choice"] == {"type": "function", "function": {"name": "g"}}
    assert [t["function"]["name"] for t in out["tools"]] == ["f", "g"]


def test_named_tool_choice_required_sends_only_that_tool() -> None:
    out = responses_to_chat_request(NAMED_REQ, named_tool_choice="required")
    assert out["tool_choice"] == "required"
    assert [t["function"]["name"] for t in out["tools"]] == ["g"]


def test_allowed_tools_required_under_named_tool_choice_required() -> None:
    req = {**REQ, "tools": [*REQ["tools"], {"type": "function", "name": "h"}],
           "tool_choice": {"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "f"},
                                                                                 {"type": "function", "name": "h"}]}}
    for value in ("native", "required"):
        out = responses_to_chat_request(req, named_tool_choice=value)
        assert out["tool_choice"] == "required"
        assert [t["function"]["name"] for t in out["tools"]] == ["f", "h"]


def test_tool_choice_none_native_and_drop_tools() -> None:
    req = {**REQ, "tool_choice": "none", "parallel_tool_calls": False}
    native = responses_to_chat_request(req)
    assert native["tool_choice"] == "none" and len(native["tools"]) == 2
    dropped = responses_to_chat_request(req, tool_choice_none="drop_tools")
    assert "tools" not in dropped and "tool_choice" not in dropped and "parallel_tool_calls" not in dropped
    auto = responses_to_chat_request({**REQ, "tool_choice": "auto"}, tool_choice_none="drop_tools")
    assert auto["tool_choice"] == "auto" and len(auto["tools"]) == 2


@pytest.mark.parametrize(("name", "value"), [("named_tool_choice", "object"), ("tool_choice_none", "drop")])
def test_tool_choice_options_refuse_unknown_values(name: str, value: str) -> None:
    with pytest.raises(ValueError, match=name):
        responses_to_chat_request(REQ, **{name: value})


# ------------------------------------------------------------------------------ e. SSE frame ceiling


def test_sse_decoder_refuses_a_20_mb_line_fed_in_64_kib_pieces() -> None:
    decoder = SSEDecoder()
    piece = b"x" * 65536
    assert decoder.feed(b"data: {\"a\": 1}\n\ndata: ") == [(None, '{"a": 1}')]
    fed = 0
    tail = decoder._buf  # the unfinished frame: one bytearray grown in place, never rebuilt per read
    with pytest.raises(UpstreamError, match="SSE frame over 8388608 bytes") as info:
        while fed < 20 * 1024 * 1024:
            assert decoder.feed(piece) == []
            fed += len(piece)
            assert decoder._buf is tail
    assert info.value.status == 502
    assert fed <= 8 * 1024 * 1024 + len(piece)  # refused as soon as the ceiling was passed


def test_sse_decoder_ceiling_applies_to_a_whole_frame_in_one_read_and_is_configurable() -> None:
    decoder = SSEDecoder(max_frame_bytes=100)
    assert decoder.feed(b"data: " + b"y" * 80 + b"\n\n") == [(None, "y" * 80)]
    with pytest.raises(UpstreamError):
        decoder.feed(b"data: ok\n\ndata: " + b"z" * 200 + b"\n\n")
    with pytest.raises(UpstreamError):
        SSEDecoder(max_frame_bytes=100).feed(b"data: " + b"z" * 200)
    with pytest.raises(ValueError):
        SSEDecoder(max_frame_bytes=0)


def test_sse_decoder_long_frame_below_the_ceiling_in_small_pieces() -> None:
    """The bytearray tail: a 3 MB frame in 64 KiB pieces, a CRLF split across reads, all intact."""
    payload = "é" * (1_500_000)
    raw = ("data: " + payload + "\r\n\r\n").encode() + b"data: [DONE]\r"
    decoder = SSEDecoder()
    out: list[tuple[str | None, str]] = []
    for i in range(0, len(raw), 65536):
        out += decoder.feed(raw[i:i + 65536])
    out += decoder.feed(b"\n\r\n")
    assert out == [(None, payload), (None, "[DONE]")]


# ------------------------------------------------------------------------------ O(1) tool-call lookup


class _NoScan(list):  # type: ignore[type-arg]
    """A list that refuses to be scanned: proves the per-delta lookup never walks all calls."""

    def __iter__(self):  # type: ignore[no-untyped-def]
        raise AssertionError("tool calls scanned")

    def __reversed__(self):  # type: ignore[no-untyped-def]
        raise AssertionError("tool calls scanned")


def test_tool_call_lookup_never_scans_all_calls() -> None:
    tr = ChatStreamTranslator(REQ, **OPTS, max_output_items=10_000)  # above the 3,000 calls opened here
    table: ToolCallTable = tr._calls
    table.calls = _NoScan()
    tr.start()
    n = 3000
    for i in range(n):  # a hostile backend: a new index on every chunk, some with ids, some without
        tc: dict[str, Any] = {"index": i, "function": {"name": "f", "arguments": "{"}}
        if i % 2:
            tc["id"] = f"call_{i}"
        tr.feed(_chunk({"tool_calls": [tc]}))
        tr.feed(_chunk({"tool_calls": [{"index": i, "function": {"arguments": "}"}}]}))
        tr.feed(_chunk({"tool_calls": [{"index": i // 2, "id": f"call_{i}", "function": {"arguments": ""}}]}))
    assert len(table.by_index) == n and list.__len__(table.calls) >= n
    tr.feed(_chunk(finish="tool_calls"))
    table.calls = list(list.__iter__(table.calls))  # finishing walks them once, legitimately
    events = tr.finish()
    assert events[-1]["type"] == "response.completed"
    calls = [i for i in tr.response["output"] if i["type"] == "function_call"]
    assert len(calls) >= n and calls[0]["arguments"] == "{}"


# ------------------------------------------------------------------------------ the request validator


def test_check_request_accepts_every_known_field_and_returns_unknown_ones() -> None:
    body = {"model": "m", "input": "x", "frobnicate": 1, "store": True, "zeta": None, "context_management": []}
    assert check_request(body) == ["frobnicate", "zeta"]
    assert check_request({"model": "m", "input": "x"}) == []


def test_known_fields_cover_openai_create_body() -> None:
    for name in ("model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls", "stream",
                 "stream_options", "store", "background", "previous_response_id", "conversation", "truncation",
                 "include", "metadata", "max_output_tokens", "max_tool_calls", "temperature", "top_p",
                 "top_logprobs", "reasoning", "text", "user", "safety_identifier", "prompt_cache_key",
                 "prompt_cache_retention", "service_tier", "prompt", "context_management", "verbosity"):
        assert name in REQUEST_FIELDS, name


def test_check_request_strict_refuses_unknown_with_openai_wording() -> None:
    with pytest.raises(InvalidRequest) as info:
        check_request({"model": "m", "input": "x", "frobnicate": 1}, strict=True)
    assert info.value.message == "Unknown parameter: 'frobnicate'."
    assert info.value.param == "frobnicate" and info.value.code == "unknown_parameter"
    assert info.value.to_error()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("temperature", "hot", "Invalid type for 'temperature': expected a number, but got string instead."),
    ("stream", "yes", "Invalid type for 'stream': expected a boolean, but got string instead."),
    ("input", 3, "Invalid type for 'input': expected a string or an array, but got integer instead."),
    ("tools", {}, "Invalid type for 'tools': expected an array, but got object instead."),
    ("max_output_tokens", 1.5, "Invalid type for 'max_output_tokens': expected an integer, but got number instead."),
    ("conversation", 1, "Invalid type for 'conversation': expected a string or an object, but got integer instead."),
    ("store", 1, "Invalid type for 'store': expected a boolean, but got integer instead."),
])
def test_check_request_and_translation_give_the_same_message(field: str, value: Any, expected: str) -> None:
    body = {"model": "m", "input": "x", field: value}
    for call in (check_request, responses_to_chat_request):
        with pytest.raises(InvalidRequest) as info:
            call(body)
        assert (info.value.message, info.value.param, info.value.code) == (expected, field, "invalid_type")


@pytest.mark.parametrize(("body", "param"), [
    ({"metadata": {"k": 1}}, "metadata.k"),
    ({"include": ["a", 2]}, "include[1]"),
    ({"truncation": "sometimes"}, "truncation"),
    ({"metadata": {str(i): "v" for i in range(17)}}, "metadata"),
])
def test_check_request_checks_values_inside_fields(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        check_request({"model": "m", "input": "x", **body})
    assert info.value.param == param


def test_check_request_needs_an_object_and_a_model() -> None:
    with pytest.raises(InvalidRequest):
        check_request([])  # type: ignore[arg-type]
    for body in ({"input": "x"}, {"model": "", "input": "x"}, {"model": None}):
        with pytest.raises(InvalidRequest) as info:
            check_request(body)
        assert (info.value.param, info.value.code) == ("model", "missing_required_parameter")
    assert check_request({"model": "m"}) == []  # input may still come from previous_response_id
