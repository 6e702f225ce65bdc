"""The event-grammar validator: canonical streams pass, minimally broken copies fail with the right rule.

The canonical streams are built from docs/wire.md §1.5 (a)-(e). Every broken copy changes one thing, and the
test asserts both the rule name and the index of the event at fault, so a validator that reports the
wrong event (or nothing) fails. A cross-check feeds the same streams to the openai SDK's own stream
accumulator (`ResponseStreamState`) and, once, to a real SDK client over HTTP: what the validator accepts
the SDK must accept, and the malformed streams that make the SDK raise (docs/wire.md §1.7) must be rejected.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import openai
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from conformance import (
    RULES,
    Violation,
    assert_valid,
    parse_sse,
    validate_events,
    validate_response,
    validate_sse,
)
from conformance.sdk import sdk_accumulate, sdk_accumulator_problem
from tests.support.servers import run_app

# ----------------------------------------------------------------------------------------------
# canonical streams (docs/wire.md §1.5)

RESP_ID = "resp_test"
USAGE = {
    "input_tokens": 5,
    "output_tokens": 7,
    "total_tokens": 12,
    "input_tokens_details": {"cached_tokens": 0},
    "output_tokens_details": {"reasoning_tokens": 0},
}
WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    "strict": False,
}


def response(status: str = "in_progress", output: list | None = None, **overrides: Any) -> dict:
    """A Response object with every field Open Responses requires (docs/wire.md §1.3)."""
    body = {
        "id": RESP_ID,
        "object": "response",
        "created_at": 1700000000,
        "completed_at": None,
        "status": status,
        "incomplete_details": None,
        "model": "test-model",
        "previous_response_id": None,
        "instructions": None,
        "output": output or [],
        "error": None,
        "tools": [],
        "tool_choice": "auto",
        "truncation": "disabled",
        "parallel_tool_calls": True,
        "text": {"format": {"type": "text"}},
        "top_p": 1.0,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "top_logprobs": 0,
        "temperature": 1.0,
        "reasoning": None,
        "usage": None,
        "max_output_tokens": None,
        "max_tool_calls": None,
        "store": False,
        "background": False,
        "service_tier": "default",
        "safety_identifier": None,
        "prompt_cache_key": None,
        "metadata": {},
    }
    if status in ("completed", "incomplete"):
        body.update(completed_at=1700000001, usage=USAGE)
    body.update(overrides)
    return body


def numbered(events: list[dict]) -> list[dict]:
    """Set sequence_number 0,1,2,… (after a test removed or inserted events)."""
    for position, event in enumerate(events):
        event["sequence_number"] = position
    return events


def prefix(**response_overrides: Any) -> list[dict]:
    return [
        {"type": "response.created", "response": response(**response_overrides)},
        {"type": "response.in_progress", "response": response(**response_overrides)},
    ]


def message_events(
    index: int, chunks: list[str], *, status: str = "completed", item_id: str = "msg_1"
) -> tuple[list, dict]:
    """(a): one message item with one output_text part; returns (events, done item)."""
    text = "".join(chunks)
    added = {"id": item_id, "type": "message", "status": "in_progress", "role": "assistant", "content": []}
    empty = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    full = {**empty, "text": text}
    done = {**added, "status": status, "content": [full]}
    where = {"item_id": item_id, "output_index": index, "content_index": 0}
    events = [
        {"type": "response.output_item.added", "output_index": index, "item": added},
        {"type": "response.content_part.added", **where, "part": empty},
        *({"type": "response.output_text.delta", **where, "delta": c, "logprobs": []} for c in chunks),
        {"type": "response.output_text.done", **where, "text": text, "logprobs": []},
        {"type": "response.content_part.done", **where, "part": full},
        {"type": "response.output_item.done", "output_index": index, "item": done},
    ]
    return events, done


def call_events(index: int, name: str, chunks: list[str], *, suffix: str = "A") -> tuple[list, dict]:
    """(c): one function call; item id fc_X, call id call_X."""
    args = "".join(chunks)
    added = {
        "id": f"fc_{suffix}",
        "type": "function_call",
        "status": "in_progress",
        "call_id": f"call_{suffix}",
        "name": name,
        "arguments": "",
    }
    done = {**added, "status": "completed", "arguments": args}
    where = {"item_id": f"fc_{suffix}", "output_index": index}
    events = [
        {"type": "response.output_item.added", "output_index": index, "item": added},
        *({"type": "response.function_call_arguments.delta", **where, "delta": c} for c in chunks),
        {"type": "response.function_call_arguments.done", **where, "arguments": args},
        {"type": "response.output_item.done", "output_index": index, "item": done},
    ]
    return events, done


def reasoning_events(index: int, chunks: list[str], mode: str) -> tuple[list, dict]:
    """(b): a reasoning item as a summary (mode "summary") or raw content ("reasoning_text"/"openresponses")."""
    text = "".join(chunks)
    added = {"id": "rs_1", "type": "reasoning", "status": "in_progress", "summary": []}
    if mode == "summary":
        where = {"item_id": "rs_1", "output_index": index, "summary_index": 0}
        part = {"type": "summary_text", "text": ""}
        done = {**added, "status": "completed", "summary": [{"type": "summary_text", "text": text}]}
        body = [
            {"type": "response.reasoning_summary_part.added", **where, "part": part},
            *({"type": "response.reasoning_summary_text.delta", **where, "delta": c} for c in chunks),
            {"type": "response.reasoning_summary_text.done", **where, "text": text},
            {"type": "response.reasoning_summary_part.done", **where, "part": {**part, "text": text}},
        ]
    else:
        name = "response.reasoning_text" if mode == "reasoning_text" else "response.reasoning"
        added = {**added, "content": []}
        where = {"item_id": "rs_1", "output_index": index, "content_index": 0}
        part = {"type": "reasoning_text", "text": ""}
        done = {**added, "status": "completed", "content": [{"type": "reasoning_text", "text": text}]}
        body = [
            {"type": "response.content_part.added", **where, "part": part},
            *({"type": f"{name}.delta", **where, "delta": c} for c in chunks),
            {"type": f"{name}.done", **where, "text": text},
            {"type": "response.content_part.done", **where, "part": {**part, "text": text}},
        ]
    events = [
        {"type": "response.output_item.added", "output_index": index, "item": added},
        *body,
        {"type": "response.output_item.done", "output_index": index, "item": done},
    ]
    return events, done


def text_stream(chunks: tuple[str, ...] = ("Hel", "lo ", "world")) -> list[dict]:
    """(a) plain text."""
    events, done = message_events(0, list(chunks))
    terminal = {"type": "response.completed", "response": response("completed", [done])}
    return numbered([*prefix(), *events, terminal])


def reasoning_stream(mode: str = "summary") -> list[dict]:
    """(b) reasoning at output_index 0, then the message at 1."""
    r_events, r_done = reasoning_events(0, ["Think", "ing."], mode)
    m_events, m_done = message_events(1, ["Answer"])
    terminal = {"type": "response.completed", "response": response("completed", [r_done, m_done])}
    return numbered([*prefix(), *r_events, *m_events, terminal])


def calls_stream(calls: int = 1, *, text_first: bool = False) -> list[dict]:
    """(c) one or several function calls (each closed before the next), optionally after text."""
    events: list[dict] = []
    output: list[dict] = []
    if text_first:
        m_events, m_done = message_events(0, ["Let me check."])
        events += m_events
        output.append(m_done)
    for n in range(calls):
        c_events, c_done = call_events(
            len(output), "get_weather", ['{"city":', f'"C{n}"}}'], suffix="AB"[n % 2] + str(n)
        )
        events += c_events
        output.append(c_done)
    tools = {"tools": [WEATHER_TOOL]}
    terminal = {"type": "response.completed", "response": response("completed", output, **tools)}
    return numbered([*prefix(**tools), *events, terminal])


def truncated_stream() -> list[dict]:
    """(d) finish_reason length: the item and the response are incomplete."""
    events, done = message_events(0, ["Once upon", " a time"], status="incomplete")
    final = response("incomplete", [done], incomplete_details={"reason": "max_output_tokens"})
    return numbered([*prefix(), *events, {"type": "response.incomplete", "response": final}])


ERROR_SHAPES: dict[str, dict] = {
    "none": {},
    "openai": {"code": "server_error", "message": "upstream died", "param": None},
    "openresponses": {
        "error": {"type": "server_error", "code": "server_error", "message": "upstream died", "param": None}
    },
}
ERROR_SHAPES["both"] = {**ERROR_SHAPES["openai"], **ERROR_SHAPES["openresponses"]}


def failed_stream(error_shape: str = "openai") -> list[dict]:
    """(e) failure mid-stream: the message is left open and listed as incomplete in response.failed."""
    events, _ = message_events(0, ["Partial"])
    open_part = events[:3]  # added, content_part.added, one delta
    partial = {
        "id": "msg_1",
        "type": "message",
        "status": "incomplete",
        "role": "assistant",
        "content": [{"type": "output_text", "text": "Partial", "annotations": [], "logprobs": []}],
    }
    error = {"code": "server_error", "message": "upstream died"}
    tail: list[dict] = []
    if error_shape != "none":
        tail.append({"type": "error", **ERROR_SHAPES[error_shape]})
    tail.append({"type": "response.failed", "response": response("failed", [partial], error=error)})
    return numbered([*prefix(), *open_part, *tail])


def custom_tool_stream() -> list[dict]:
    """A custom (freeform) tool call: OpenAI-only (docs/wire.md §1.4)."""
    added = {
        "id": "ctc_1",
        "type": "custom_tool_call",
        "status": "in_progress",
        "call_id": "call_C",
        "name": "sh",
        "input": "",
    }
    done = {**added, "status": "completed", "input": "ls -la"}
    where = {"item_id": "ctc_1", "output_index": 0}
    tools = {"tools": [{"type": "custom", "name": "sh", "description": None, "format": {"type": "text"}}]}
    events = [
        *prefix(**tools),
        {"type": "response.output_item.added", "output_index": 0, "item": added},
        {"type": "response.custom_tool_call_input.delta", **where, "delta": "ls "},
        {"type": "response.custom_tool_call_input.delta", **where, "delta": "-la"},
        {"type": "response.custom_tool_call_input.done", **where, "input": "ls -la"},
        {"type": "response.output_item.done", "output_index": 0, "item": done},
        {"type": "response.completed", "response": response("completed", [done], **tools)},
    ]
    return numbered(events)


VALID: dict[str, Callable[[], list[dict]]] = {
    "text": text_stream,
    "text-one-delta": lambda: text_stream(("whole answer",)),
    "reasoning-summary": lambda: reasoning_stream("summary"),
    "reasoning-text": lambda: reasoning_stream("reasoning_text"),
    "reasoning-openresponses": lambda: reasoning_stream("openresponses"),
    "one-call": calls_stream,
    "parallel-calls": lambda: calls_stream(2),
    "text-then-call": lambda: calls_stream(1, text_first=True),
    "truncated": truncated_stream,
    "failed-openai-error": lambda: failed_stream("openai"),
    "failed-no-error-event": lambda: failed_stream("none"),
    "failed-both-error-shapes": lambda: failed_stream("both"),
    "custom-tool": custom_tool_stream,
}


def build(name: str) -> list[dict]:
    """A fresh copy of a canonical stream with no shared dicts (the builders reuse them between events)."""
    return orjson.loads(orjson.dumps(VALID[name]()))


# streams that pass the stricter Open Responses profile too
OR_VALID = (
    "text",
    "reasoning-summary",
    "reasoning-openresponses",
    "one-call",
    "parallel-calls",
    "text-then-call",
    "truncated",
    "failed-no-error-event",
    "failed-both-error-shapes",
)


def encode(events: list[dict], *, done: bool = True) -> bytes:
    """The SSE body a conforming server writes (docs/wire.md §1.1)."""
    frames = [b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n" for e in events]
    return b"".join(frames) + (b"data: [DONE]\n\n" if done else b"")


# ----------------------------------------------------------------------------------------------
# canonical streams pass


@pytest.mark.parametrize("name", sorted(VALID))
def test_canonical_stream_passes(name: str) -> None:
    events = build(name)
    assert validate_events(events) == []
    assert validate_sse(encode(events)) == []


@pytest.mark.parametrize("name", OR_VALID)
def test_canonical_stream_passes_open_responses_profile(name: str) -> None:
    assert validate_events(build(name), profile="openresponses") == []


def test_request_echo_passes_when_fields_match() -> None:
    request = {
        "model": "test-model",
        "input": "hi",
        "tools": [WEATHER_TOOL],
        "tool_choice": "auto",
        "temperature": 1.0,
    }
    assert validate_events(calls_stream(), request) == []


def test_assert_valid_lists_every_violation() -> None:
    events = text_stream()
    del events[3]  # content_part.added
    with pytest.raises(AssertionError) as info:
        assert_valid(events)
    assert "sequence-number" in str(info.value)
    assert "content-index" in str(info.value)
    assert_valid(text_stream(), raw=encode(text_stream()))


def test_violation_str_and_dict() -> None:
    v = Violation(3, "item-id", "bad id")
    assert str(v) == "[event 3] item-id: bad id"
    assert str(Violation(None, "terminal", "none")) == "terminal: none"
    assert v.to_dict() == {"index": 3, "rule": "item-id", "message": "bad id"}


def test_unknown_profile_is_an_error() -> None:
    with pytest.raises(ValueError, match="profile"):
        validate_events(text_stream(), profile="strict")


# ----------------------------------------------------------------------------------------------
# minimally broken copies: (stream, mutation) → (rule, index)


def find(events: list[dict], event_type: str, nth: int = 0) -> int:
    """Index of the nth event of a type."""
    positions = [i for i, e in enumerate(events) if e.get("type") == event_type]
    return positions[nth]


def terminal_response(events: list[dict]) -> dict:
    return events[-1]["response"]


Mutation = Callable[[list[dict]], Any]


def delete(event_type: str, nth: int = 0) -> Mutation:
    def mutate(events: list[dict]) -> None:
        del events[find(events, event_type, nth)]
        numbered(events)

    return mutate


def set_field(event_type: str, path: str, value: Any, nth: int = 0) -> Mutation:
    """Set a dotted path inside the nth event of a type (a missing sentinel deletes the key)."""

    def mutate(events: list[dict]) -> None:
        target = events[find(events, event_type, nth)]
        *parents, last = path.split(".")
        for key in parents:
            target = target[int(key)] if isinstance(target, list) else target[key]
        if value is MISSING:
            del target[last]
        else:
            target[last] = value

    return mutate


MISSING = object()


def insert_before(event_type: str, new_event: dict, nth: int = 0) -> Mutation:
    def mutate(events: list[dict]) -> None:
        events.insert(find(events, event_type, nth), copy.deepcopy(new_event))
        numbered(events)

    return mutate


def chain(*mutations: Mutation) -> Mutation:
    def mutate(events: list[dict]) -> None:
        for m in mutations:
            m(events)

    return mutate


def _reorder_output(events: list[dict]) -> None:
    terminal_response(events)["output"].reverse()


def _terminal_output_empty(events: list[dict]) -> None:
    terminal_response(events)["output"] = []


def _drop_item_done(events: list[dict]) -> None:
    """A call never finished: its output_item.done is missing and it is not in the final output."""
    del events[find(events, "response.output_item.done", 1)]
    terminal_response(events)["output"].pop()
    numbered(events)


def _add_after_incomplete(events: list[dict]) -> None:
    """A second item added after the truncated (incomplete) one."""
    extra, done = call_events(1, "f", ["{}"])
    terminal = events.pop()
    terminal["response"]["output"].append(done)
    events.extend([*extra, terminal])
    numbered(events)


def _completed_with_incomplete_item(events: list[dict]) -> None:
    for event in events:
        if event["type"] == "response.output_item.done":
            event["item"]["status"] = "incomplete"
    terminal_response(events)["output"][0]["status"] = "incomplete"


def _event_after_terminal(events: list[dict]) -> None:
    events.append({"type": "response.in_progress", "response": response()})
    numbered(events)


def _second_terminal(events: list[dict]) -> None:
    events.append(copy.deepcopy(events[-1]))
    numbered(events)


def _error_without_failed(events: list[dict]) -> None:
    """An error event and then response.completed (the stream claims success after an error)."""
    events.insert(len(events) - 1, {"type": "error", **ERROR_SHAPES["openai"]})
    numbered(events)


def _sequence_from_one(events: list[dict]) -> None:
    for event in events:
        event["sequence_number"] += 1


def _delta_after_item_done(events: list[dict]) -> None:
    delta = copy.deepcopy(events[find(events, "response.output_text.delta")])
    events.insert(len(events) - 1, delta)
    numbered(events)


def _text_delta_to_call(events: list[dict]) -> None:
    position = find(events, "response.function_call_arguments.delta")
    events[position] = {
        "type": "response.output_text.delta",
        "item_id": "fc_A0",
        "output_index": 0,
        "content_index": 0,
        "delta": "x",
        "logprobs": [],
        "sequence_number": position,
    }


def _failed_open_item_completed(events: list[dict]) -> None:
    terminal_response(events)["output"][0]["status"] = "completed"


# (stream name, mutation, expected rule, expected index: int, None for stream-level, or "terminal" = last)
BROKEN: dict[str, tuple[str, Mutation, str, int | str | None]] = {
    "first event is in_progress": ("text", delete("response.created"), "first-event", 0),
    "created with status completed": (
        "text",
        set_field("response.created", "response.status", "completed"),
        "lifecycle-status",
        0,
    ),
    "created with output": (
        "text",
        set_field("response.created", "response.output", [{"x": 1}]),
        "lifecycle-status",
        0,
    ),
    "sequence gap": (
        "text",
        set_field("response.output_text.delta", "sequence_number", 9),
        "sequence-number",
        4,
    ),
    "sequence from 1": ("text", _sequence_from_one, "sequence-number", 0),
    "sequence float": (
        "text",
        set_field("response.output_text.delta", "sequence_number", 4.0),
        "sequence-number",
        4,
    ),
    "delta without logprobs": (
        "text",
        set_field("response.output_text.delta", "logprobs", MISSING),
        "event-fields",
        4,
    ),
    "output_index as string": (
        "text",
        set_field("response.output_text.delta", "output_index", "0"),
        "event-fields",
        4,
    ),
    "unknown event type": (
        "text",
        insert_before("response.completed", {"type": "response.thinking", "x": 1}),
        "event-type",
        10,
    ),
    "response id changes": (
        "text",
        set_field("response.in_progress", "response.id", "resp_other"),
        "response-id",
        1,
    ),
    "delta before item added": ("one-call", delete("response.output_item.added"), "item-not-added", 2),
    "duplicate output_index": (
        "parallel-calls",
        set_field("response.output_item.added", "output_index", 0, nth=1),
        "output-index",
        7,
    ),
    "output_index gap": (
        "parallel-calls",
        set_field("response.output_item.added", "output_index", 2, nth=1),
        "output-index",
        7,
    ),
    "delta before content_part.added": ("text", delete("response.content_part.added"), "content-index", 3),
    "content_index 1 first": (
        "text",
        set_field("response.content_part.added", "content_index", 1),
        "content-index",
        3,
    ),
    "wrong item_id": ("text", set_field("response.output_text.delta", "item_id", "msg_other"), "item-id", 4),
    "text done differs": (
        "text",
        set_field("response.output_text.done", "text", "Hello world!"),
        "delta-sum",
        7,
    ),
    "part done differs": (
        "text",
        set_field("response.content_part.done", "part.text", "Hello"),
        "delta-sum",
        8,
    ),
    "item done text differs": (
        "text",
        set_field("response.output_item.done", "item.content.0.text", "Hi"),
        "delta-sum",
        9,
    ),
    "arguments done differs": (
        "one-call",
        set_field("response.function_call_arguments.done", "arguments", "{}"),
        "delta-sum",
        5,
    ),
    "done call arguments differ": (
        "one-call",
        set_field("response.output_item.done", "item.arguments", "{}"),
        "delta-sum",
        6,
    ),
    "summary text differs": (
        "reasoning-summary",
        set_field("response.reasoning_summary_text.done", "text", "x"),
        "delta-sum",
        6,
    ),
    "text done missing": ("text", delete("response.output_text.done"), "unclosed-part", 7),
    "content_part.done missing": ("text", delete("response.content_part.done"), "unclosed-part", 8),
    "message id changes": (
        "text",
        set_field("response.output_item.done", "item.id", "msg_2"),
        "item-identity",
        9,
    ),
    "call_id changes": (
        "one-call",
        set_field("response.output_item.done", "item.call_id", "call_Z"),
        "item-identity",
        6,
    ),
    "done item in_progress": (
        "one-call",
        set_field("response.output_item.done", "item.status", "in_progress"),
        "item-status",
        6,
    ),
    "added item completed": (
        "one-call",
        set_field("response.output_item.added", "item.status", "completed"),
        "item-status",
        2,
    ),
    "delta after item done": ("text", _delta_after_item_done, "after-done", 10),
    "no in_progress": ("text", delete("response.in_progress"), "in-progress", 1),
    "in_progress after output": (
        "text",
        chain(
            delete("response.in_progress"),
            insert_before(
                "response.content_part.added", {"type": "response.in_progress", "response": response()}
            ),
        ),
        "in-progress",
        2,
    ),
    "no terminal event": ("text", delete("response.completed"), "terminal", None),
    "event after terminal": ("text", _event_after_terminal, "terminal", "terminal"),
    "two terminal events": ("text", _second_terminal, "terminal", "terminal"),
    "completed with status incomplete": (
        "text",
        set_field("response.completed", "response.status", "incomplete"),
        "terminal-status",
        10,
    ),
    "completed with empty output": ("text", _terminal_output_empty, "terminal-output", 10),
    "completed output reordered": ("text-then-call", _reorder_output, "terminal-output", "terminal"),
    "completed output text differs": (
        "text",
        set_field("response.completed", "response.output.0.content.0.text", "x"),
        "terminal-output",
        10,
    ),
    "completed with unfinished item": ("parallel-calls", _drop_item_done, "unfinished-item", "terminal"),
    "failed output item not incomplete": (
        "failed-openai-error",
        _failed_open_item_completed,
        "terminal-output",
        "terminal",
    ),
    "item added after incomplete item": ("truncated", _add_after_incomplete, "incomplete-item", 9),
    "incomplete item in completed": ("text", _completed_with_incomplete_item, "incomplete-item", 10),
    "error then completed": ("text", _error_without_failed, "error-event", 10),
    "error event without message": (
        "failed-openai-error",
        set_field("error", "message", MISSING),
        "error-event",
        5,
    ),
    "text delta aimed at a call": ("one-call", _text_delta_to_call, "item-type-mismatch", 3),
    "part typed text": (
        "text",
        set_field("response.content_part.added", "part.type", "text"),
        "item-type",
        3,
    ),
    "response missing truncation": (
        "text",
        set_field("response.completed", "response.truncation", MISSING),
        "response-field",
        10,
    ),
    "created_at float": (
        "text",
        set_field("response.completed", "response.created_at", 1700000000.5),
        "response-type",
        10,
    ),
    "temperature null": (
        "text",
        set_field("response.created", "response.temperature", None),
        "response-type",
        0,
    ),
    "chat-style usage": (
        "text",
        set_field(
            "response.completed",
            "response.usage",
            {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
        ),
        "usage",
        10,
    ),
    "failed without error": (
        "failed-no-error-event",
        set_field("response.failed", "response.error", None),
        "response-status",
        5,
    ),
    "output_text without annotations": (
        "text",
        chain(
            set_field("response.output_item.done", "item.content.0.annotations", MISSING),
            set_field("response.completed", "response.output.0.content.0.annotations", MISSING),
        ),
        "item-field",
        9,
    ),
    "function_call without id": (
        "one-call",
        chain(
            set_field("response.output_item.done", "item.id", MISSING),
            set_field("response.completed", "response.output.0.id", MISSING),
        ),
        "item-field",
        6,
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_stream_is_reported(case: str) -> None:
    stream_name, mutate, rule, expected_index = BROKEN[case]
    events = build(stream_name)
    assert validate_events(events) == [], "the base stream must be valid for the case to mean anything"
    mutate(events)
    violations = validate_events(events)
    index = len(events) - 1 if expected_index == "terminal" else expected_index
    assert any(v.rule == rule and v.index == index for v in violations), (
        f"expected {rule} at {index}, got:\n" + "\n".join(map(str, violations))
    )
    assert rule in RULES


def test_every_reported_rule_is_documented() -> None:
    seen = set()
    for stream_name, mutate, _, _ in BROKEN.values():
        events = build(stream_name)
        mutate(events)
        seen |= {v.rule for v in validate_events(events)}
    assert seen <= set(RULES)


def test_event_with_missing_fields_does_not_blame_the_text() -> None:
    """Deltas without content_index (a common router bug) are reported as such, not as a text mismatch."""
    events = build("text")
    for event in events:
        if event["type"] == "response.output_text.delta":
            del event["content_index"]
    violations = validate_events(events)
    assert {(v.rule, v.index) for v in violations} == {
        ("event-fields", 4),
        ("event-fields", 5),
        ("event-fields", 6),
    }


def test_terminal_without_a_response_is_still_the_terminal() -> None:
    events = build("text")
    del events[-1]["response"]
    assert [(v.rule, v.index) for v in validate_events(events)] == [("event-fields", 10)]


def test_request_echo_mismatch() -> None:
    request = {
        "model": "test-model",
        "input": "hi",
        "temperature": 0.2,
        "tools": [WEATHER_TOOL],
        "tool_choice": "required",
    }
    violations = validate_events(text_stream(), request)
    echo = {v.message.split(":")[0] for v in violations if v.rule == "echo" and v.index == 10}
    assert {"temperature", "tool_choice", "tools sent but not echoed"} <= echo


def test_model_snapshot_name_is_an_echo() -> None:
    events = text_stream()
    assert validate_events(events, {"model": "test"}) == []  # test-model is a snapshot of "test"
    assert [v.rule for v in validate_events(events, {"model": "other"})] == ["echo"]


# ----------------------------------------------------------------------------------------------
# the Open Responses profile


@pytest.mark.parametrize(
    ("stream_name", "rule"),
    [
        ("reasoning-text", "or-event-name"),  # response.reasoning_text.* is response.reasoning.* in OR
        ("custom-tool", "or-item-type"),
        ("custom-tool", "or-tools"),
        ("custom-tool", "or-event-name"),
        ("failed-openai-error", "error-event"),  # OR needs the nested error object
    ],
)
def test_open_responses_profile_is_stricter(stream_name: str, rule: str) -> None:
    events = build(stream_name)
    assert validate_events(events) == []
    assert rule in {v.rule for v in validate_events(events, profile="openresponses")}


def test_open_responses_tools_need_description_parameters_strict() -> None:
    events = build("one-call")
    for event in events:
        if "response" in event:
            del event["response"]["tools"][0]["strict"]
    assert validate_events(events) == []
    violations = validate_events(events, profile="openresponses")
    assert {v.index for v in violations if v.rule == "or-tools"} == set(range(len(events))) - set(range(2, 7))


def test_reasoning_effort_values_differ_by_profile() -> None:
    body = response("completed", reasoning={"effort": "minimal", "summary": None})
    assert validate_response(body) == []
    assert [v.rule for v in validate_response(body, profile="openresponses")] == ["response-type"]


# ----------------------------------------------------------------------------------------------
# validate_response on its own (non-streaming bodies)


def test_valid_response_body() -> None:
    assert validate_response(terminal_response(calls_stream(2, text_first=True))) == []


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        ({"completed_at": 1.5}, "response-type"),
        ({"top_p": None}, "response-type"),
        ({"service_tier": None}, "response-type"),
        ({"store": "no"}, "response-type"),
        ({"truncation": "none"}, "response-type"),
        ({"text": {"format": {"type": "xml"}}}, "response-type"),
        ({"text": {"format": {"type": "json_schema", "schema": {}}}}, "response-type"),  # no name
        ({"error": {"message": "no code"}}, "response-type"),
        ({"usage": {"input_tokens": 1, "output_tokens": 1, "total_tokens": 2}}, "usage"),  # no details
        ({"status": "done"}, "response-status"),
        ({"status": "incomplete"}, "response-status"),  # without incomplete_details
        ({"tool_choice": "sometimes"}, "response-type"),
        (
            {
                "output": [
                    {
                        "type": "message",
                        "id": "m",
                        "status": "completed",
                        "role": "assistant",
                        "content": [{"type": "text", "text": "x"}],
                    }
                ]
            },
            "item-type",
        ),
        ({"output": [{"type": "reasoning", "id": "r"}]}, "item-field"),  # no summary
        ({"output": [{"type": "shout"}]}, "item-type"),
    ],
)
def test_response_constraint(change: dict, rule: str) -> None:
    body = {**response("completed"), **change}
    violations = validate_response(body)
    assert rule in {v.rule for v in violations}, violations
    assert all(v.index is None for v in violations)


def test_response_missing_fields_are_listed() -> None:
    body = response("completed")
    for key in ("completed_at", "top_logprobs", "prompt_cache_key"):
        del body[key]
    del body["object"], body["metadata"]  # the only two Open Responses lets you leave out
    [violation] = validate_response(body)
    assert violation.rule == "response-field"
    assert all(k in violation.message for k in ("completed_at", "top_logprobs", "prompt_cache_key"))


def test_response_that_is_not_an_object() -> None:
    assert [v.rule for v in validate_response(["not", "a", "response"])] == ["response-type"]


# ----------------------------------------------------------------------------------------------
# SSE framing (docs/wire.md §1.1)


def test_parse_sse_returns_events_and_ignores_comments() -> None:
    events = text_stream()
    raw = b": keepalive\n\n" + encode(events)
    parsed, violations = parse_sse(raw)
    assert violations == []
    assert parsed == events


@pytest.mark.parametrize(
    ("rewrite", "rule", "index"),
    [
        (
            lambda raw: raw.replace(b"event: response.in_progress\n", b"event: response.progress\n"),
            "sse-event-name",
            1,
        ),
        (lambda raw: raw.replace(b"event: response.in_progress\n", b""), "sse-event-name", 1),
        (
            lambda raw: raw.replace(
                b"event: response.in_progress\n", b"event: response.in_progress\nid: 1\n"
            ),
            "sse-id",
            1,
        ),
        (
            lambda raw: raw.replace(
                b'data: {"type":"response.in_progress",', b'data: {"type":"response.in_progress",\ndata: '
            ),
            "sse-data-lines",
            1,
        ),
        (lambda raw: raw.replace(b"\n", b"\r\n"), "sse-line-endings", None),
        (lambda raw: raw.replace(b"data: [DONE]\n\n", b""), "sse-done", None),
        (lambda raw: raw + b"event: response.completed\ndata: {}\n\n", "sse-done", 11),
        (lambda raw: raw.replace(b'data: {"type":"response.in_progress"', b"data: {oops"), "sse-json", 1),
        (lambda raw: raw[:-1], "sse-framing", None),
    ],
)
def test_sse_framing_violation(rewrite: Callable[[bytes], bytes], rule: str, index: int | None) -> None:
    raw = encode(text_stream())
    assert validate_sse(raw) == []
    violations = validate_sse(rewrite(raw))
    assert any(v.rule == rule and v.index == index for v in violations), violations


def test_done_can_be_optional() -> None:
    """OpenAI's API does not send [DONE]; a frame after it is wrong either way."""
    raw = encode(text_stream(), done=False)
    assert [v.rule for v in validate_sse(raw)] == ["sse-done"]
    assert validate_sse(raw, require_done=False) == []
    after = encode(text_stream()) + b'event: response.completed\ndata: {"type":"response.completed"}\n\n'
    assert [v.rule for v in validate_sse(after, require_done=False)] == ["sse-done"]


def test_crlf_stream_is_still_decoded() -> None:
    """Framing violations do not stop the grammar check: the events are decoded like the SDK would."""
    events, violations = parse_sse(encode(text_stream()).replace(b"\n", b"\r\n"))
    assert [v.rule for v in violations] == ["sse-line-endings"]
    assert validate_events(events) == []


# ----------------------------------------------------------------------------------------------
# cross-check with the openai SDK's own stream accumulator (docs/wire.md §1.7)


def without_parsed(value: Any) -> Any:
    """The SDK's parsed output adds parsed/parsed_arguments keys; drop them to compare with the wire items."""
    if isinstance(value, dict):
        return {k: without_parsed(v) for k, v in value.items() if k not in ("parsed", "parsed_arguments")}
    if isinstance(value, list):
        return [without_parsed(v) for v in value]
    return value


@pytest.mark.parametrize("name", sorted(VALID))
def test_sdk_accepts_what_the_validator_accepts(name: str) -> None:
    events = build(name)
    assert validate_events(events) == []
    completed = sdk_accumulate(events)
    if events[-1]["type"] == "response.completed":
        assert completed is not None
        assert [item.type for item in completed.output] == [
            i["type"] for i in terminal_response(events)["output"]
        ]
    else:
        assert completed is None


def _chat_after_terminal_id_change(events: list[dict]) -> None:
    events[-1]["response"]["id"] = "resp_other"


# malformed streams that make the SDK raise (docs/wire.md §1.7) and the rule the validator reports
SDK_RAISES: dict[str, tuple[str, Mutation, str]] = {
    "first event not created": ("text", delete("response.created"), "first-event"),
    "lifecycle id changes": ("text", _chat_after_terminal_id_change, "response-id"),
    "content before item": ("one-call", delete("response.output_item.added"), "item-not-added"),
    "delta without content part": ("text", delete("response.content_part.added"), "content-index"),
    "text delta aimed at a call": ("one-call", _text_delta_to_call, "item-type-mismatch"),
    "duplicate output index": (
        "parallel-calls",
        set_field("response.output_item.added", "output_index", 0, nth=1),
        "output-index",
    ),
    "identity changed": ("text", set_field("response.output_item.done", "item.id", "msg_2"), "item-identity"),
    "call identity changed": (
        "one-call",
        set_field("response.output_item.done", "item.call_id", "call_Z"),
        "item-identity",
    ),
    "completed with unfinished items": ("parallel-calls", _drop_item_done, "unfinished-item"),
}


@pytest.mark.parametrize("case", sorted(SDK_RAISES))
def test_streams_the_sdk_rejects_are_rejected(case: str) -> None:
    stream_name, mutate, rule = SDK_RAISES[case]
    events = build(stream_name)
    mutate(events)
    with pytest.raises((RuntimeError, IndexError, AssertionError)):
        sdk_accumulate(events)
    assert rule in {v.rule for v in validate_events(events)}


@pytest.mark.parametrize("case", sorted(SDK_RAISES))
def test_sdk_accumulator_rule_names_the_event_the_sdk_raised_on(case: str) -> None:
    """The kit's sdk-accumulator rule (what `check` reports) sees the same failures as the SDK itself."""
    stream_name, mutate, _ = SDK_RAISES[case]
    events = build(stream_name)
    assert sdk_accumulator_problem(events) is None
    mutate(events)
    problem = sdk_accumulator_problem(events)
    assert problem is not None
    assert problem.rule == "sdk-accumulator"
    assert f"openai {openai.__version__} ResponseStreamState raises" in problem.message
    # the event at fault: feeding the events before it raises nothing, adding it raises
    assert problem.index is not None
    sdk_accumulate(events[: problem.index])
    with pytest.raises((RuntimeError, IndexError, AssertionError)):
        sdk_accumulate(events[: problem.index + 1])


def test_sdk_accumulator_leaves_the_events_as_they_were() -> None:
    events = build("text")
    before = copy.deepcopy(events)
    assert sdk_accumulate(events) is not None
    assert events == before


def test_translator_validate_is_a_re_export_of_the_kit() -> None:
    """The old import path keeps working for one release and says it moved."""
    import importlib
    import sys
    import warnings

    import conformance

    sys.modules.pop("translator.validate", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = importlib.import_module("translator.validate")
    assert any(issubclass(w.category, DeprecationWarning) and "conformance" in str(w.message) for w in caught)
    for name in old.__all__:
        assert getattr(old, name) is getattr(conformance, name), name


@settings(max_examples=60, deadline=None)
@given(
    chunks=st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=6),
    calls=st.integers(min_value=0, max_value=3),
    text_first=st.booleans(),
)
def test_generated_streams_agree_with_the_sdk(chunks: list[str], calls: int, text_first: bool) -> None:
    """Any text chunking and number of calls: valid for the validator, and the SDK rebuilds the same text."""
    events = text_stream(tuple(chunks)) if calls == 0 else calls_stream(calls, text_first=text_first)
    assert validate_events(events) == []
    assert validate_sse(encode(events)) == []
    completed = sdk_accumulate(events)
    if calls == 0:
        assert completed.output[0].content[0].text == "".join(chunks)
    else:
        assert [o.type for o in completed.output].count("function_call") == calls


# ----------------------------------------------------------------------------------------------
# end to end: a real SDK client reading the SSE bytes from a real server


@pytest.fixture(scope="module")
def replay_url() -> Iterator[str]:
    """A Responses endpoint that streams the canonical stream named by the request's model."""

    async def responses(request: Request) -> Response:
        body = await request.json()
        events = VALID[body["model"]]()
        return Response(encode(events), media_type="text/event-stream")

    with run_app(Starlette(routes=[Route("/v1/responses", responses, methods=["POST"])])) as running:
        yield running.url + "/v1"


@pytest.mark.parametrize(
    "name", ["text", "reasoning-summary", "parallel-calls", "text-then-call", "custom-tool"]
)
def test_real_sdk_client_reads_valid_streams(replay_url: str, name: str) -> None:
    client = openai.OpenAI(base_url=replay_url, api_key="x", max_retries=0)
    with client.responses.stream(model=name, input="hi") as stream:
        seen = [event.type for event in stream]
        final = stream.get_final_response()
    assert seen == [e["type"] for e in build(name)]
    assert [without_parsed(item.to_dict()) for item in final.output] == terminal_response(build(name))[
        "output"
    ]


def test_real_sdk_client_on_failed_streams(replay_url: str) -> None:
    """Flat error events are yielded; the nested (both) shape makes the SDK raise APIError (docs/wire.md §1.8)."""
    client = openai.OpenAI(base_url=replay_url, api_key="x", max_retries=0)
    with client.responses.stream(model="failed-openai-error", input="hi") as stream:
        assert [e.type for e in stream][-2:] == ["error", "response.failed"]
    with (
        pytest.raises(openai.APIError, match="upstream died"),
        client.responses.stream(model="failed-both-error-shapes", input="hi") as stream,
    ):
        list(stream)


# ----------------------------------------------------------------------------------------------
# robustness: check runs the validator on whatever a server sends; it must report, never crash

JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 3),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=4),
    st.builds(list),
    st.builds(dict),
    st.builds(lambda: [{"type": "output_text"}]),
    st.builds(lambda: {"type": "message"}),
)  # builds: a fresh object per draw, since the test mutates what it inserts


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key/index path inside a JSON value."""
    out = []
    if isinstance(value, dict):
        for key, inner in value.items():
            out.append((*prefix, key))
            out += _paths(inner, (*prefix, key))
    elif isinstance(value, list):
        for position, inner in enumerate(value):
            out.append((*prefix, position))
            out += _paths(inner, (*prefix, position))
    return out


@settings(max_examples=300, deadline=None)
@given(
    name=st.sampled_from(sorted(VALID)),
    data=st.data(),
    profile=st.sampled_from(["openai", "openresponses"]),
)
def test_corrupted_streams_are_reported_not_crashed_on(name: str, data: st.DataObject, profile: str) -> None:
    events = build(name)
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(_paths(events)))
        *parents, last = path
        target: Any = events
        for key in parents:
            target = target[key]
        if data.draw(st.booleans()) and isinstance(target, dict):
            del target[last]
        else:
            target[last] = data.draw(JUNK)
    violations = validate_events(events, {"model": "test-model", "input": "x"}, profile=profile)
    assert all(isinstance(v, Violation) and v.rule in RULES for v in violations)
    assert all(v.index is None or 0 <= v.index < len(events) for v in violations)
    raw = b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events)
    _parsed, framing = parse_sse(raw)
    assert all(v.rule in RULES for v in framing)


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(junk=st.dictionaries(st.sampled_from(["id", "status", "output", "usage", "tools", "text", "error",
                                              "reasoning", "tool_choice", "created_at"]), JSON))  # fmt: skip
def test_junk_responses_are_reported_not_crashed_on(junk: dict) -> None:
    body = {**response("completed"), **junk}
    for profile in ("openai", "openresponses"):
        violations = validate_response(body, profile=profile, request={"model": "m", "tools": [WEATHER_TOOL]})
        assert all(v.rule in RULES for v in violations)


@settings(max_examples=200, deadline=None)
@given(
    raw=st.binary(max_size=200)
    | st.lists(JSON, max_size=5).map(lambda xs: b"".join(b"data: " + orjson.dumps(x) + b"\n\n" for x in xs))
)
def test_junk_sse_is_reported_not_crashed_on(raw: bytes) -> None:
    events, violations = parse_sse(raw)
    assert all(isinstance(e, dict) for e in events)
    assert all(v.rule in RULES for v in violations)
    assert all(v.rule in RULES for v in validate_events(events))


def test_the_kit_imports_nothing_of_the_bridge() -> None:
    """The kit judges any Responses producer: loading every module of it loads nothing of server/ (the
    translator's pure event catalogue is the one list of event names, shared on purpose)."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import pkgutil, sys, importlib, conformance\n"
        "for m in pkgutil.iter_modules(conformance.__path__): importlib.import_module('conformance.' + m.name)\n"
        "print(' '.join(sorted(n for n in sys.modules if n.split('.')[0] == 'server')))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert proc.stdout.strip() == ""
