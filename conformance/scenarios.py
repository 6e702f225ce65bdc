"""The `check` scenarios as data: requests that need no particular model answer, and what must come back.

Each :class:`Scenario` builds its request from the model name and may check the final Response (an
``expect`` function returning what is wrong, empty when fine). Add one by appending to
:data:`SCENARIOS`; the runner (:mod:`conformance.check`) validates every body and stream with the
kit's rules on top. Expectations read untrusted bodies: they report junk, never raise. Imports nothing
of the kit.
"""

from __future__ import annotations

import base64
import json
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["ANSWER_SCHEMA", "CHAT_SCENARIOS", "CHAT_WEATHER_TOOL", "SCENARIOS", "TOOL_PROMPT", "WEATHER_TOOL", "Scenario",
           "select_chat_scenarios", "select_scenarios"]


def _tiny_png() -> str:
    """A 1x1 red PNG as a data URL, built here so it is certainly a valid image."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)  # 1x1, 8-bit RGB
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00"))
    png += chunk(b"IEND", b"")
    return "data:image/png;base64," + base64.b64encode(png).decode()


WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather for a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}
# the directive line makes the project's scripted fixture backend call the tool; real models read the question
TOOL_PROMPT = '@call get_weather {"city": "Paris"}\nWhat is the weather in Paris? Use the get_weather tool.'
ANSWER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
    "required": ["city", "population"],
    "additionalProperties": False,
}


def _text(model: str) -> dict:
    return {"model": model, "input": "Say hello in one short sentence."}


def _instructions(model: str) -> dict:
    return {
        "model": model,
        "instructions": "You are a terse assistant. Answer in one sentence.",
        "input": "Hi!",
    }


def _multi_turn(model: str) -> dict:
    return {
        "model": model,
        "input": [
            {"role": "user", "content": "My name is Ada."},
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Nice to meet you, Ada.", "annotations": []}],
            },
            {"role": "user", "content": [{"type": "input_text", "text": "What is my name?"}]},
        ],
    }


def _tool_call(model: str) -> dict:
    return {"model": model, "input": TOOL_PROMPT, "tools": [WEATHER_TOOL], "tool_choice": "required"}


def _tool_output(model: str) -> dict:
    return {
        "model": model,
        "tools": [WEATHER_TOOL],
        "input": [
            {"role": "user", "content": "What is the weather in Paris?"},
            {
                "type": "function_call",
                "call_id": "call_check_1",
                "name": "get_weather",
                "arguments": '{"city": "Paris"}',
            },
            {"type": "function_call_output", "call_id": "call_check_1", "output": '{"temperature_c": 18}'},
        ],
    }


def _image(model: str) -> dict:
    return {
        "model": model,
        "input": [
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What colour is this image?"},
                    {"type": "input_image", "image_url": _tiny_png(), "detail": "low"},
                ],
            }
        ],
    }


def _structured(model: str) -> dict:
    return {
        "model": model,
        "input": "Give the largest city of France and its population as JSON.",
        "text": {"format": {"type": "json_schema", "name": "city", "schema": ANSWER_SCHEMA, "strict": True}},
    }


def _bad_request(model: str) -> dict:
    return {"model": model, "input": 42}  # input must be a string or a list of items


# checks of the final response: return what is wrong (empty = fine)


def _list(value: Any) -> list:
    """A list field of an untrusted body, or [] (the validator reports wrong types; expectations skip them)."""
    return value if isinstance(value, list) else []


def _output_text(response: dict) -> str:
    return "".join(
        part["text"]
        for item in _list(response.get("output"))
        if isinstance(item, dict) and item.get("type") == "message"
        for part in _list(item.get("content"))
        if isinstance(part, dict) and part.get("type") == "output_text" and isinstance(part.get("text"), str)
    )


def _expect_text(response: dict) -> list[str]:
    problems = [] if _output_text(response).strip() else ["the response has no output_text"]
    if response.get("status") != "completed":
        problems.append(f"status is {response.get('status')!r}, expected 'completed'")
    return problems


def _expect_tool_call(response: dict) -> list[str]:
    calls = [
        i for i in _list(response.get("output")) if isinstance(i, dict) and i.get("type") == "function_call"
    ]
    if not calls:
        return ["tool_choice 'required' but the output has no function_call"]
    problems = []
    for call in calls:
        if call.get("name") != "get_weather":
            problems.append(f"function_call names {call.get('name')!r}, not a declared tool")
        arguments = call.get("arguments")
        try:
            if not isinstance(arguments, str) or not isinstance(json.loads(arguments), dict):
                problems.append("function_call arguments are not a JSON object")
        except ValueError:
            problems.append(f"function_call arguments are not JSON: {call.get('arguments')!r}")
    if response.get("status") != "completed":
        problems.append(
            f"status is {response.get('status')!r}; a response ending in tool calls is 'completed'"
        )
    return problems


def _expect_json(response: dict) -> list[str]:
    problems = _expect_text(response)
    text = _output_text(response)
    try:
        value = json.loads(text)
    except ValueError:
        return [*problems, f"structured output is not JSON: {text[:80]!r}"]
    if not isinstance(value, dict):
        return [*problems, "structured output is not a JSON object"]
    missing = [k for k in ANSWER_SCHEMA["required"] if k not in value]
    if missing:
        problems.append(f"structured output lacks required key(s) {missing}")
    return problems


@dataclass(frozen=True)
class Scenario:
    """One request sent to the endpoint and what must come back.

    ``expect_status`` "ok" means a 200 with a valid Response (or stream); "client-error" means a 4xx in
    OpenAI's error envelope, with ``param`` named when ``expect_param`` is set.
    """

    name: str
    description: str
    build: Callable[[str], dict]
    stream: bool = False
    expect: Callable[[dict], list[str]] | None = None
    expect_status: str = "ok"
    expect_param: bool = False
    unknown_model: bool = False
    # a 200 with a valid Response is "skip", not "fail": a catch-all endpoint (one backend for any model
    # name) has no unknown model, and the check cannot tell it from one that ignores the model field
    skip_if_accepted: bool = False


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("text", "plain text, not streamed", _text, expect=_expect_text),
    Scenario("text-stream", "plain text, streamed", _text, stream=True, expect=_expect_text),
    Scenario("instructions", "system prompt via instructions", _instructions, expect=_expect_text),
    Scenario(
        "instructions-stream", "system prompt via instructions, streamed", _instructions, True, _expect_text
    ),
    Scenario("multi-turn", "input list with an assistant turn", _multi_turn, expect=_expect_text),
    Scenario("tool-call", "function tool, tool_choice required", _tool_call, expect=_expect_tool_call),
    Scenario(
        "tool-call-stream",
        "function tool, tool_choice required, streamed",
        _tool_call,
        True,
        _expect_tool_call,
    ),
    Scenario(
        "tool-output", "function_call + function_call_output round trip", _tool_output, expect=_expect_text
    ),
    Scenario("tool-output-stream", "tool output round trip, streamed", _tool_output, True, _expect_text),
    Scenario("image-input", "inline PNG data URL", _image, expect=_expect_text),
    Scenario("structured-output", "text.format json_schema", _structured, expect=_expect_json),
    Scenario("structured-output-stream", "json_schema, streamed", _structured, True, _expect_json),
    Scenario(
        "bad-request",
        "input of the wrong type",
        _bad_request,
        expect_status="client-error",
        expect_param=True,
    ),
    Scenario(
        "unknown-model",
        "a model the endpoint does not serve",
        _text,
        expect_status="client-error",
        unknown_model=True,
        skip_if_accepted=True,
    ),
)


def select_scenarios(names: Sequence[str] | None, skip: Sequence[str] | None) -> list[Scenario]:
    """The scenarios to run, in catalogue order; unknown names raise ValueError."""
    known = {s.name for s in SCENARIOS}
    unknown = [n for n in [*(names or ()), *(skip or ())] if n not in known]
    if unknown:
        raise ValueError(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    chosen = [s for s in SCENARIOS if not names or s.name in names]
    return [s for s in chosen if s.name not in (skip or ())]


# --------------------------------------------------------------------------------------------------
# the same scenarios for a /v1/chat/completions endpoint (`check --api chat`)
#
# Chat expectations read the answer as `conformance.chat.accumulate_chunks` gives it, whether it
# came streamed or whole: {"content", "reasoning_content", "tool_calls": [{id, name, arguments}],
# "finish_reason", "usage", "error"}.

CHAT_WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {k: WEATHER_TOOL[k] for k in ("name", "description", "parameters", "strict")},
}


def _chat_text(model: str) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "Say hello in one short sentence."}]}


def _chat_usage(model: str) -> dict:
    return {**_chat_text(model), "stream_options": {"include_usage": True}}


def _chat_instructions(model: str) -> dict:
    return {"model": model, "messages": [
        {"role": "system", "content": "You are a terse assistant. Answer in one sentence."},
        {"role": "user", "content": "Hi!"}]}


def _chat_multi_turn(model: str) -> dict:
    return {"model": model, "messages": [
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "Nice to meet you, Ada."},
        {"role": "user", "content": [{"type": "text", "text": "What is my name?"}]}]}


def _chat_tool_call(model: str) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": TOOL_PROMPT}], "tools": [CHAT_WEATHER_TOOL],
            "tool_choice": "required"}


def _chat_tool_output(model: str) -> dict:
    return {"model": model, "tools": [CHAT_WEATHER_TOOL], "messages": [
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_check_1", "type": "function", "function": {
            "name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_check_1", "content": '{"temperature_c": 18}'}]}


def _chat_image(model: str) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What colour is this image?"},
        {"type": "image_url", "image_url": {"url": _tiny_png(), "detail": "low"}}]}]}


def _chat_structured(model: str) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "Give the largest city of France and its "
                                                                     "population as JSON."}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "city", "schema": ANSWER_SCHEMA,
                                                                       "strict": True}}}


def _chat_bad_request(model: str) -> dict:
    return {"model": model, "messages": 42}  # messages must be an array


def _chat_expect_text(answer: dict) -> list[str]:
    problems = [] if isinstance(answer.get("content"), str) and answer["content"].strip() else ["the answer has no content"]
    if answer.get("finish_reason") != "stop":
        problems.append(f"finish_reason is {answer.get('finish_reason')!r}, expected 'stop'")
    return problems


def _chat_expect_usage(answer: dict) -> list[str]:
    usage = answer.get("usage")
    problems = _chat_expect_text(answer)
    if not isinstance(usage, dict):
        problems.append("stream_options.include_usage asked for usage; none came")
    return problems


def _chat_expect_tool_call(answer: dict) -> list[str]:
    calls = _list(answer.get("tool_calls"))
    if not calls:
        return ["tool_choice 'required' but the answer has no tool call"]
    problems = []
    for call in calls:
        if not isinstance(call, dict):
            continue
        if call.get("name") != "get_weather":
            problems.append(f"the tool call names {call.get('name')!r}, not a declared tool")
        try:
            if not isinstance(json.loads(call.get("arguments") or ""), dict):
                problems.append("tool call arguments are not a JSON object")
        except ValueError:
            problems.append(f"tool call arguments are not JSON: {call.get('arguments')!r}")
    if answer.get("finish_reason") != "tool_calls":
        problems.append(f"finish_reason is {answer.get('finish_reason')!r}, expected 'tool_calls'")
    return problems


def _chat_expect_json(answer: dict) -> list[str]:
    problems = _chat_expect_text(answer)
    text = answer.get("content") or ""
    try:
        value = json.loads(text)
    except ValueError:
        return [*problems, f"structured output is not JSON: {text[:80]!r}"]
    if not isinstance(value, dict):
        return [*problems, "structured output is not a JSON object"]
    missing = [k for k in ANSWER_SCHEMA["required"] if k not in value]
    return [*problems, f"structured output lacks required key(s) {missing}"] if missing else problems


CHAT_SCENARIOS: tuple[Scenario, ...] = (
    Scenario("text", "plain text, not streamed", _chat_text, expect=_chat_expect_text),
    Scenario("text-stream", "plain text, streamed (no usage asked: none may come)", _chat_text, True, _chat_expect_text),
    Scenario("usage-stream", "streamed with stream_options.include_usage", _chat_usage, True, _chat_expect_usage),
    Scenario("instructions", "system message", _chat_instructions, expect=_chat_expect_text),
    Scenario("instructions-stream", "system message, streamed", _chat_instructions, True, _chat_expect_text),
    Scenario("multi-turn", "messages with an assistant turn", _chat_multi_turn, expect=_chat_expect_text),
    Scenario("tool-call", "function tool, tool_choice required", _chat_tool_call, expect=_chat_expect_tool_call),
    Scenario("tool-call-stream", "function tool, tool_choice required, streamed", _chat_tool_call, True,
             _chat_expect_tool_call),
    Scenario("tool-output", "assistant tool_calls + tool message round trip", _chat_tool_output,
             expect=_chat_expect_text),
    Scenario("tool-output-stream", "tool output round trip, streamed", _chat_tool_output, True, _chat_expect_text),
    Scenario("image-input", "inline PNG data URL", _chat_image, expect=_chat_expect_text),
    Scenario("structured-output", "response_format json_schema", _chat_structured, expect=_chat_expect_json),
    Scenario("structured-output-stream", "json_schema, streamed", _chat_structured, True, _chat_expect_json),
    Scenario("bad-request", "messages of the wrong type", _chat_bad_request, expect_status="client-error",
             expect_param=True),
    Scenario("unknown-model", "a model the endpoint does not serve", _chat_text, expect_status="client-error",
             unknown_model=True, skip_if_accepted=True),
)


def select_chat_scenarios(names: Sequence[str] | None, skip: Sequence[str] | None) -> list[Scenario]:
    """`select_scenarios` over the chat catalogue."""
    known = {s.name for s in CHAT_SCENARIOS}
    unknown = [n for n in [*(names or ()), *(skip or ())] if n not in known]
    if unknown:
        raise ValueError(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    chosen = [s for s in CHAT_SCENARIOS if not names or s.name in names]
    return [s for s in chosen if s.name not in (skip or ())]
