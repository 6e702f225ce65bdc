"""Hypothesis properties of the reverse direction.

* chat request → Responses request → chat request gives the chat request back (messages, tools,
  tool_choice, limits, sampling, structured output, reasoning effort, logprobs).
* A Response, streamed as events with random splits and with optional events left out (added
  events, part events, sequence numbers, output indexes, the deltas or their tail), gives chat
  chunks that add up to the Response's content, reasoning, tool calls, finish reason and usage.
* Any mangling of a stream (events dropped, repeated, swapped, junk added) never raises, always
  ends, and the chunks always obey the chunk grammar.
"""

from __future__ import annotations

import itertools
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conformance.chat import accumulate_chunks, validate_chat_stream
from translator import ResponsesStreamTranslator, chat_to_responses_request, responses_to_chat_request

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
words = st.text(alphabet=st.sampled_from(list("ab yz\n\"é🙂{}")), min_size=1, max_size=10)
NAMES = ["get_weather", "search", "lookup"]


# ----------------------------------------------------------------------------- requests


@st.composite
def chat_requests(draw: st.DrawFn) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    if draw(st.booleans()):
        messages.append({"role": draw(st.sampled_from(["system", "developer"])), "content": draw(words)})
    n = 0
    for _ in range(draw(st.integers(1, 3))):
        messages.append({"role": "user", "content": draw(words)})
        if draw(st.booleans()):
            calls = []
            for _ in range(draw(st.integers(1, 2))):
                calls.append({"id": f"call_{n}", "type": "function", "function": {
                    "name": draw(st.sampled_from(NAMES)), "arguments": orjson.dumps({"q": draw(words)}).decode()}})
                n += 1
            turn: dict[str, Any] = {"role": "assistant", "content": draw(st.one_of(st.none(), words)), "tool_calls": calls}
            if draw(st.booleans()):
                turn["reasoning_content"] = draw(words)
            messages.append(turn)
            messages += [{"role": "tool", "tool_call_id": c["id"], "content": draw(words)} for c in calls]
        final: dict[str, Any] = {"role": "assistant", "content": draw(words)}
        if draw(st.booleans()):
            final["reasoning_content"] = draw(words)
        messages.append(final)
    messages.append({"role": "user", "content": draw(words)})
    request: dict[str, Any] = {"model": "m", "messages": messages}
    if draw(st.booleans()):
        request["tools"] = [{"type": "function", "function": {"name": name, "description": draw(words),
                                                              "parameters": {"type": "object", "properties": {}}}}
                            for name in NAMES]
        request["tool_choice"] = draw(st.sampled_from(
            ["auto", "required", "none", {"type": "function", "function": {"name": "search"}}]))
        if draw(st.booleans()):
            request["parallel_tool_calls"] = draw(st.booleans())
    if draw(st.booleans()):
        request["max_completion_tokens"] = draw(st.integers(1, 10_000))
    for name in ("temperature", "top_p"):
        if draw(st.booleans()):
            request[name] = draw(st.floats(0, 2, allow_nan=False))
    if draw(st.booleans()):
        request["response_format"] = {"type": "json_schema", "json_schema": {
            "name": "answer", "schema": {"type": "object", "properties": {"a": {"type": "string"}}}, "strict": True}}
    if draw(st.booleans()):
        request["reasoning_effort"] = draw(st.sampled_from(["low", "medium", "high"]))
    if draw(st.booleans()):
        request["logprobs"] = True
        request["top_logprobs"] = draw(st.integers(0, 5))
    return request


@SETTINGS
@given(chat_requests())
def test_chat_request_round_trip(request: dict[str, Any]) -> None:
    responses_request = chat_to_responses_request(request)
    # the Responses request survives the wire unchanged
    back = responses_to_chat_request(orjson.loads(orjson.dumps(responses_request)), developer_role="developer",
                                     max_tokens_field="max_completion_tokens", stream_usage=False)
    for key, value in request.items():
        if key == "tools":
            assert [{"type": t["type"], "function": {k: t["function"][k] for k in ("name", "description", "parameters")}}
                    for t in back["tools"]] == value
        elif key == "tool_choice" and value == "none" and "tools" not in back:
            continue
        else:
            assert back[key] == value, key
    assert responses_request["store"] is False


def test_round_trip_fails_when_a_field_is_lost() -> None:
    """The property above can fail: a request whose system message the translation drops does not come back."""
    request = {"model": "m", "messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "q"}]}
    broken = chat_to_responses_request(request)
    broken["input"] = broken["input"][1:]
    assert responses_to_chat_request(broken)["messages"] != request["messages"]


# ----------------------------------------------------------------------------- streams


@st.composite
def responses(draw: st.DrawFn) -> dict[str, Any]:
    output: list[dict[str, Any]] = []
    if draw(st.booleans()):
        text = draw(words)
        raw = draw(st.booleans())
        output.append({"id": "rs_p_0", "type": "reasoning", "status": "completed",
                       "summary": [] if raw else [{"type": "summary_text", "text": text}],
                       **({"content": [{"type": "reasoning_text", "text": text}]} if raw else {})})
    if draw(st.booleans()) or not output:
        output.append({"id": f"msg_p_{len(output)}", "type": "message", "role": "assistant", "status": "completed",
                       "content": [{"type": "output_text", "text": draw(words), "annotations": []}]})
    for k in range(draw(st.integers(0, 3))):
        output.append({"id": f"fc_p_{len(output)}", "type": "function_call", "status": "completed",
                       "call_id": f"call_p{k}", "name": draw(st.sampled_from(NAMES)),
                       "arguments": orjson.dumps({"q": draw(words)}).decode()})
    status = draw(st.sampled_from(["completed", "completed", "incomplete"]))
    usage = {"input_tokens": draw(st.integers(0, 999)), "output_tokens": draw(st.integers(0, 999)),
             "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}
    usage["total_tokens"] = usage["input_tokens"] + usage["output_tokens"]
    return {"id": "resp_p", "object": "response", "created_at": 1, "model": "m", "status": status, "output": output,
            "usage": usage, "incomplete_details": {"reason": draw(st.sampled_from(["max_output_tokens", "content_filter"]))}
            if status == "incomplete" else None}


def _pieces(draw: st.DrawFn, text: str) -> list[str]:
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(text) - 1)), max_size=4))) if len(text) > 1 else []
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds) if b > a]


@st.composite
def event_streams(draw: st.DrawFn) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A Response and a stream of it with random splits and optional events left out."""
    response = draw(responses())
    keep = {name: draw(st.booleans()) for name in ("added", "parts", "done_text", "item_done", "index", "seq",
                                                      "lifecycle")}
    # which optional events a server leaves out is a property of the server, so the same for every item
    events: list[dict[str, Any]] = []
    if keep["lifecycle"]:
        events.append({"type": "response.created", "response": {**response, "status": "in_progress", "output": []}})

    def add(event: dict[str, Any], index: int) -> None:
        if keep["index"] or "item_id" not in event:
            event["output_index"] = index
        events.append(event)

    for index, item in enumerate(response["output"]):
        if keep["added"]:
            add({"type": "response.output_item.added", "item": {**item, "status": "in_progress"}}, index)
        if item["type"] == "message":
            text, dtype, done = item["content"][0]["text"], "response.output_text.delta", "response.output_text.done"
            key = "text"
        elif item["type"] == "function_call":
            text, dtype, done = item["arguments"], "response.function_call_arguments.delta", \
                "response.function_call_arguments.done"
            key = "arguments"
        else:
            raw = bool(item.get("content"))
            text = (item["content"] if raw else item["summary"])[0]["text"]
            dtype = "response.reasoning_text.delta" if raw else "response.reasoning_summary_text.delta"
            done, key = None, "text"
        pieces = _pieces(draw, text)
        sent = draw(st.integers(0, len(pieces)))  # the deltas, or only their head (the rest comes with done)
        if keep["parts"] and item["type"] == "message":
            add({"type": "response.content_part.added", "item_id": item["id"], "content_index": 0,
                 "part": {"type": "output_text", "text": ""}}, index)
        for piece in pieces[:sent]:
            add({"type": dtype, "item_id": item["id"], "delta": piece}, index)
        if done and keep["done_text"]:
            add({"type": done, "item_id": item["id"], key: text}, index)
        if keep["item_done"]:
            add({"type": "response.output_item.done", "item": item}, index)
    events.append({"type": "response.incomplete" if response["status"] == "incomplete" else "response.completed",
                   "response": response})
    if keep["seq"]:
        for n, event in enumerate(events):
            event["sequence_number"] = n
    return response, events


def _expected(response: dict[str, Any]) -> dict[str, Any]:
    content = "".join(p["text"] for i in response["output"] if i["type"] == "message" for p in i["content"])
    reasoning = "".join((i.get("content") or i["summary"])[0]["text"] for i in response["output"] if i["type"] == "reasoning")
    calls = [{"id": i["call_id"], "name": i["name"], "arguments": i["arguments"]}
             for i in response["output"] if i["type"] == "function_call"]
    if response["status"] == "incomplete":
        finish = "content_filter" if response["incomplete_details"]["reason"] == "content_filter" else "length"
    else:
        finish = "tool_calls" if calls else "stop"
    return {"content": content, "reasoning_content": reasoning, "tool_calls": calls, "finish_reason": finish}


def _run(events: list[dict[str, Any]], request: dict[str, Any]) -> tuple[list[dict[str, Any]], ResponsesStreamTranslator]:
    tr = ResponsesStreamTranslator(request)
    chunks: list[dict[str, Any]] = []
    for event in events:
        chunks += tr.feed(event)
    chunks += tr.finish()
    return chunks, tr


def _sse(chunks: list[dict[str, Any]]) -> bytes:
    return b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"


@SETTINGS
@given(event_streams())
def test_stream_adds_up_to_the_response(case: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
    response, events = case
    request = {"model": "m", "stream": True, "stream_options": {"include_usage": True}}
    chunks, tr = _run(events, request)
    got = accumulate_chunks(chunks)
    expected = _expected(response)
    for key, value in expected.items():
        assert got[key] == value, key
    assert got["usage"]["prompt_tokens"] == response["usage"]["input_tokens"]
    assert got["usage"]["total_tokens"] == response["usage"]["total_tokens"]
    assert validate_chat_stream(_sse(chunks), request) == []
    # the translator's own completion says the same
    message = tr.completion["choices"][0]["message"]
    assert (message["content"] or "") == expected["content"]
    assert [c["function"]["arguments"] for c in message.get("tool_calls", [])] == \
        [c["arguments"] for c in expected["tool_calls"]]


junk = st.one_of(st.none(), st.integers(-2, 3), st.text(max_size=4), st.lists(st.integers(), max_size=2),
                 st.dictionaries(st.sampled_from(["type", "text", "id"]), st.text(max_size=3), max_size=2))


@SETTINGS
@given(event_streams(), st.data())
def test_mangled_streams_never_crash_and_always_end(case: tuple[dict[str, Any], list[dict[str, Any]]],
                                                      data: st.DataObject) -> None:
    _response, events = case
    events = list(events)
    for _ in range(data.draw(st.integers(0, 4))):
        op = data.draw(st.sampled_from(["drop", "repeat", "swap", "junk", "field"]))
        if not events:
            break
        i = data.draw(st.integers(0, len(events) - 1))
        if op == "drop":
            events.pop(i)
        elif op == "repeat":
            events.insert(i, events[i])
        elif op == "swap" and i + 1 < len(events):
            events[i], events[i + 1] = events[i + 1], events[i]
        elif op == "junk":
            events.insert(i, data.draw(junk))
        elif isinstance(events[i], dict):
            events[i] = {**events[i], data.draw(st.sampled_from(["delta", "output_index", "item", "response",
                                                                 "item_id", "arguments"])): data.draw(junk)}
    request = {"model": "m", "stream_options": {"include_usage": data.draw(st.booleans())}}
    chunks, tr = _run(events, request)
    assert tr.finished
    last = chunks[-1]
    assert "error" in last or last["choices"] == [] or last["choices"][0]["finish_reason"] is not None
    assert validate_chat_stream(_sse(chunks), request) == []
