"""The fast path of `ChatStreamTranslator.feed` changes nothing but speed.

Random chunk streams, built to hit every fast path (text, reasoning, arguments continuing the open
item) and every way out of it (a second choice, a choice index, logprobs, a finish reason, usage,
a new tool call, a name change, noise keys, garbage), are fed to one translator with the fast path
and one without; the events and the final Response must be identical.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any
from unittest import mock

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from translator import ChatStreamTranslator

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
OPTS = {"response_id": "resp_diff", "created_at": 1, "completed_at": 2}
REQ: dict[str, Any] = {
    "model": "m",
    "input": "q",
    "tools": [{"type": "function", "name": "f"}, {"type": "function", "name": "g"}, {"type": "custom", "name": "c"}],
}

words = st.sampled_from(["a", " b", "<think>", "</think>", "\n", "é🙂", '{"x": ', '"y"}', ""])
noise = st.dictionaries(st.sampled_from(["role", "refusal", "content", "reasoning_content", "reasoning"]),
                        st.sampled_from([None, "", "assistant"]), max_size=2)


@st.composite
def deltas(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["text", "text", "reasoning", "reasoning", "args", "args", "call", "refusal",
                                 "mixed", "custom"]))
    delta: dict[str, Any] = draw(noise)
    if kind == "text":
        delta["content"] = draw(words)
    elif kind == "reasoning":
        delta[draw(st.sampled_from(["reasoning_content", "reasoning"]))] = draw(words)
    elif kind == "args":
        tc: dict[str, Any] = {"function": {"arguments": draw(words)}}
        if draw(st.booleans()):
            tc["index"] = draw(st.integers(0, 2))
        if draw(st.integers(0, 5)) == 0:
            tc["id"] = draw(st.sampled_from(["call_a", "call_b"]))
        if draw(st.integers(0, 5)) == 0:
            tc["function"]["name"] = draw(st.sampled_from(["f", "g"]))
        if draw(st.integers(0, 8)) == 0:
            tc["extra_content"] = {"google": {"thought_signature": "sig"}}
        delta["tool_calls"] = [tc]
    elif kind == "call":
        index = draw(st.integers(0, 2))
        delta["tool_calls"] = [{"index": index, "id": f"call_{draw(st.integers(0, 3))}", "type": "function",
                                "function": {"name": draw(st.sampled_from(["f", "g", "c"])), "arguments": ""}}]
    elif kind == "refusal":
        delta["refusal"] = draw(words)
    elif kind == "custom":
        delta["tool_calls"] = [{"index": 3, "id": "call_c", "custom": {"name": "c", "input": draw(words)}}]
    else:
        delta["content"] = draw(words)
        delta["reasoning_content"] = draw(words)
    return delta


@st.composite
def chunks(draw: st.DrawFn) -> Any:
    roll = draw(st.integers(0, 19))
    if roll == 0:
        return draw(st.sampled_from([{}, {"choices": []}, {"choices": "x"}, [], "garbage", {"choices": [3]}]))
    choice: dict[str, Any] = {"delta": draw(deltas())}
    index = draw(st.sampled_from([None, 0, 0, 0, 1]))
    if index is not None:
        choice["index"] = index
    if draw(st.integers(0, 9)) == 0:
        choice["finish_reason"] = draw(st.sampled_from(["stop", "tool_calls", "length"]))
    if draw(st.integers(0, 9)) == 0:
        choice["logprobs"] = draw(st.sampled_from([None, {"content": [{"token": "a", "logprob": -0.1}]}]))
    chunk: dict[str, Any] = {"choices": [choice]}
    if draw(st.integers(0, 9)) == 0:
        chunk["choices"].append({"index": 1, "delta": {"content": "other choice"}})
    if draw(st.integers(0, 6)) == 0:
        chunk["usage"] = draw(st.sampled_from([{"prompt_tokens": 1, "completion_tokens": 2}, None, 5]))
    return chunk


def _run(chunk_list: list[Any], fast_path: bool, options: dict[str, Any]) -> bytes:
    # generated call ids are random (and end up inside encrypted_content too): number them instead
    counter = itertools.count()
    with mock.patch("translator.builders.random_hex", lambda nbytes=16: f"{next(counter):0{2 * nbytes}x}"):
        tr = ChatStreamTranslator(REQ, fast_path=fast_path, **OPTS, **options)
        events = tr.start()
        for chunk in copy.deepcopy(chunk_list):
            events += tr.feed(chunk)
        events += tr.finish()
    return orjson.dumps({"events": events, "response": tr.response})


@SETTINGS
@given(st.lists(chunks(), max_size=25),
       st.sampled_from(["summary", "reasoning_text", "openresponses"]), st.booleans())
def test_fast_path_and_general_path_give_identical_events(chunk_list: list[Any], mode: str, think: bool) -> None:
    options = {"reasoning_events": mode, "think_tags": think}
    assert _run(chunk_list, True, options) == _run(chunk_list, False, options)


def test_the_switch_really_turns_the_fast_path_off() -> None:
    """Guard for the property above: with the switch off, a continuing text chunk must not take the
    fast path (if the switch did nothing, the differential test would compare a path with itself)."""
    calls: list[str] = []

    class Spy(ChatStreamTranslator):
        def _feed_general(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
            calls.append("general")
            return super()._feed_general(chunk)

    text = {"choices": [{"index": 0, "delta": {"content": "x"}}]}
    for fast_path, expected in ((True, 1), (False, 3)):
        calls.clear()
        tr = Spy(REQ, fast_path=fast_path, **OPTS)
        for _ in range(3):
            tr.feed(copy.deepcopy(text))
        assert calls.count("general") == expected
