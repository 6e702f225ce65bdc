"""Stream checks for translator tests, with an oracle independent of the translator's own Response.

`rebuild(events)` reconstructs what a client learns from the stream's *deltas and item events only*
(text joined from ``output_text.delta``, arguments from ``function_call_arguments.delta``, reasoning
from its deltas, the items and their statuses from ``output_item.added``/``done``); it never reads a
lifecycle or terminal event's ``response``. `digest(output)` puts a Response's ``output`` in the same
form, so the two can be compared, and so can a value written by hand or derived from the input chunks.

`check_stream` asserts, for one stream:
- the conformance kit finds no violation, every event is an openai SDK type, the terminal Response
  validates;
- the terminal's output says what the deltas said (`rebuild(events) == digest(terminal output)`);
- when `expected` is given (by hand, or `expected_from_answer` of the input), the deltas say exactly
  that, and the terminal status / incomplete details / `parallel_tool_calls` are the expected ones;
- the openai SDK's accumulator (`conformance.sdk.sdk_accumulate`) does not raise on the stream and its
  final Response agrees with the oracle.

The SDK check alone would be a tautology: the SDK's final Response *is* the terminal event's, so it
cannot notice deltas that contradict it. tests/translator/test_stream_check.py proves each check can fail.
"""

from __future__ import annotations

from typing import Any

from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from conformance import sdk_accumulate, validate_events, validate_response
from translator import ChatStreamTranslator

__all__ = ["check_stream", "digest", "expected_from_answer", "rebuild", "run_stream"]

_EVENT = TypeAdapter(ResponseStreamEvent)
_RESPONSE = TypeAdapter(Response)
#: Open Responses' raw-reasoning event names are not in the SDK union (the SDK passes them through).
_NOT_IN_SDK = {"response.reasoning.delta", "response.reasoning.done"}
_TERMINAL = {"response.completed": "completed", "response.incomplete": "incomplete", "response.failed": "failed"}
#: delta event → (field of the oracle item it appends to, the index key naming the part, or None)
_DELTAS = {
    "response.output_text.delta": ("parts", "content_index"),
    "response.refusal.delta": ("parts", "content_index"),
    "response.function_call_arguments.delta": ("arguments", None),
    "response.custom_tool_call_input.delta": ("input", None),
    "response.reasoning_summary_text.delta": ("summary", "summary_index"),
    "response.reasoning_text.delta": ("text", "content_index"),
    "response.reasoning.delta": ("text", "content_index"),
}
_PART_KIND = {"response.output_text.delta": "output_text", "response.refusal.delta": "refusal"}


def run_stream(request: dict[str, Any], chunks: list[dict[str, Any]], done_seen: bool = True,
               **options: Any) -> tuple[list[dict[str, Any]], ChatStreamTranslator]:
    """Drive a translator the way the server does: start, each chunk, finish."""
    tr = ChatStreamTranslator(request, **options)
    events = tr.start()
    for chunk in chunks:
        events += tr.feed(chunk)
    events += tr.finish(done_seen=done_seen)
    return events, tr


def _blank(item: dict[str, Any]) -> dict[str, Any]:
    kind = item.get("type")
    out: dict[str, Any] = {"type": kind, "status": "incomplete"}
    if kind == "message":
        out["parts"] = []
    elif kind == "function_call":
        out.update(call_id=item.get("call_id"), name=item.get("name"), arguments="")
    elif kind == "custom_tool_call":
        out.update(call_id=item.get("call_id"), name=item.get("name"), input="")
    elif kind == "reasoning":
        out.update(summary=[], text=[])
    return out


def _grow(parts: list[Any], index: int, empty: Any) -> None:
    while len(parts) <= index:
        parts.append(empty() if callable(empty) else empty)


def rebuild(events: list[dict[str, Any]]) -> dict[str, Any]:
    """{"status", "output"} from the deltas and item events alone (see the module docstring).

    An item never closed by ``output_item.done`` is ``incomplete``; ``status`` is the terminal
    event's *type* (its payload is not read), or None for a stream without one.
    """
    items: dict[int, dict[str, Any]] = {}
    status = None
    for event in events:
        kind = event["type"]
        if kind == "response.output_item.added":
            items[event["output_index"]] = _blank(event["item"])
        elif kind == "response.output_item.done":
            items[event["output_index"]]["status"] = event["item"].get("status", "completed")
        elif kind == "response.content_part.added" and event["part"].get("type") in ("output_text", "refusal"):
            parts = items[event["output_index"]]["parts"]
            part_type = event["part"]["type"]
            _grow(parts, event["content_index"], lambda part_type=part_type: [part_type, ""])
        elif kind == "response.content_part.added" and event["part"].get("type") == "reasoning_text":
            _grow(items[event["output_index"]]["text"], event["content_index"], "")
        elif kind == "response.reasoning_summary_part.added":
            _grow(items[event["output_index"]]["summary"], event["summary_index"], "")
        elif kind in _DELTAS:
            field, index_key = _DELTAS[kind]
            item = items[event["output_index"]]
            if index_key is None:
                item[field] += event["delta"]
            elif field == "parts":
                _grow(item["parts"], event[index_key], lambda kind=kind: [_PART_KIND[kind], ""])
                item["parts"][event[index_key]][1] += event["delta"]
            else:
                _grow(item[field], event[index_key], "")
                item[field][event[index_key]] += event["delta"]
        elif kind in _TERMINAL:
            status = _TERMINAL[kind]
    output = [items[i] for i in sorted(items)]
    for item in output:
        if "parts" in item:
            item["parts"] = [tuple(p) for p in item["parts"]]
    return {"status": status, "output": output}


def digest(output: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A Response's ``output`` in the oracle's form (what the deltas of each item carry)."""
    out: list[dict[str, Any]] = []
    for item in output:
        kind = item.get("type")
        entry: dict[str, Any] = {"type": kind, "status": item.get("status", "completed")}
        if kind == "message":
            entry["parts"] = [(p["type"], p.get("text", p.get("refusal", ""))) for p in item.get("content") or []]
        elif kind == "function_call":
            entry.update(call_id=item.get("call_id"), name=item.get("name"), arguments=item.get("arguments"))
        elif kind == "custom_tool_call":
            entry.update(call_id=item.get("call_id"), name=item.get("name"), input=item.get("input"))
        elif kind == "reasoning":
            entry["summary"] = [p["text"] for p in item.get("summary") or []]
            entry["text"] = [p["text"] for p in item.get("content") or [] if p.get("type") == "reasoning_text"]
        out.append(entry)
    return out


def _text_item(kind: str, text: str, status: str) -> dict[str, Any]:
    return {"type": "message", "status": status, "parts": [(kind, text)]}


def expected_from_answer(message: dict[str, Any], finish: str, *, reasoning_mode: str = "summary",
                         parallel_tool_calls: bool = True) -> dict[str, Any]:
    """What a stream of this chat answer must say, derived from the answer (not from any translator).

    The rules are the documented mapping (docs/wire.md §3.1, rules 4, 5 and 8): reasoning first (as
    the summary in ``summary`` mode, as reasoning text otherwise), then the message text, then the
    calls in order;
    ``length`` → incomplete ``max_output_tokens``, ``content_filter`` → incomplete ``content_filter``,
    any other finish reason → completed. Each item is closed when the next one begins, so when the
    answer is cut (incomplete) only the last item is ``incomplete``. Only for answers without
    ``<think>`` tags in the content.
    """
    status, details = {"length": ("incomplete", {"reason": "max_output_tokens"}),
                       "content_filter": ("incomplete", {"reason": "content_filter"})}.get(finish, ("completed", None))
    item_status = "completed"
    output: list[dict[str, Any]] = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if reasoning:
        summary, text = ([reasoning], []) if reasoning_mode == "summary" else ([], [reasoning])
        output.append({"type": "reasoning", "status": item_status, "summary": summary, "text": text})
    if (message.get("content") or "").strip():  # content of whitespace only is no message
        output.append(_text_item("output_text", message["content"], item_status))
    if message.get("refusal"):
        output.append(_text_item("refusal", message["refusal"], item_status))
    for call in message.get("tool_calls") or []:
        output.append({"type": "function_call", "status": item_status, "call_id": call["id"],
                       "name": call["function"]["name"], "arguments": call["function"]["arguments"]})
    if output and status == "incomplete":
        output[-1]["status"] = "incomplete"
    return {"status": status, "incomplete_details": details, "parallel_tool_calls": parallel_tool_calls,
            "output": output}


def check_stream(events: list[dict[str, Any]], request: dict[str, Any] | None = None, *,
                 profile: str = "openai", sdk: bool = True, expected: dict[str, Any] | None = None) -> Any:
    """Assert the checks of the module docstring; returns the SDK's final Response (or None)."""
    violations = validate_events(events, request, profile=profile)
    assert not violations, "\n".join(str(v) for v in violations)
    for event in events:
        if event["type"] in _NOT_IN_SDK or (event["type"] == "error" and "message" not in event):
            continue  # OR-only shapes (raw reasoning names, nested error event) are not SDK types
        _EVENT.validate_python(event)
    terminal = events[-1]["response"]
    problems = validate_response(terminal, profile=profile)
    assert not problems, problems
    _RESPONSE.validate_python(terminal)

    seen = rebuild(events)
    assert seen["output"] == digest(terminal["output"]), "the terminal output contradicts the deltas"
    if expected is not None:
        assert seen["output"] == expected["output"], "the deltas do not say what the answer said"
        for key in ("status", "incomplete_details", "parallel_tool_calls"):
            if key in expected:
                assert terminal[key] == expected[key], (key, terminal[key], expected[key])
        if "status" in expected:
            assert seen["status"] == expected["status"]
    if not sdk:
        return None
    final = sdk_accumulate(events)  # raises on a stream the SDK cannot follow
    if events[-1]["type"] == "response.completed":
        assert final is not None
        assert digest(final.model_dump(exclude_none=True)["output"]) == seen["output"]
    return final
