"""Two translations in front of a real llama.cpp `llama-server` (build b11434, the tiny Qwen3 model of
tests/support/llamacpp/): the openai SDK's `chat.completions.create` → the bridge's reverse path
(`api = "responses"`) → the bridge's forward path (`/v1/responses`, the `llamacpp` profile) →
llama-server's `/v1/chat/completions`. The answer must equal llama-server's own answer to the same
chat request: content, reasoning, tool calls (name and arguments), finish reason and usage.

tests/e2e/test_chat_two_translations.py does the same against the fixture backend; here the backend's
chat template, reasoning split, tool-call parser and token counts are llama.cpp's own, so equal usage
means the prompt llama.cpp rendered after two translations was token for token the direct one.
Call ids are llama.cpp's random ones per answer: compared for shape and stability within one answer.

Skipped without a build (developer machine), failed under CI (tests/support/llamacpp/launcher.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.conftest import BridgeHandle, bridge_config, start_bridge
from tests.e2e.test_llamacpp import llama_config
from tests.support.llamacpp import behaviour
from tests.support.llamacpp.launcher import LlamaServer

MODEL = behaviour.MODEL

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Local time in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
SCHEMA = {
    "type": "json_schema",
    "json_schema": {
        "name": "city",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
            "required": ["city", "population"],
            "additionalProperties": False,
        },
    },
}
TOOL_TURN = [
    {"role": "user", "content": "What is the weather in Paris?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_a1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
        ],
    },
    {"role": "tool", "tool_call_id": "call_a1", "content": "Sunny, 21 C"},
]

CASES: dict[str, dict[str, Any]] = {
    "text": {"messages": [{"role": "user", "content": "Hi there"}]},
    "system-text": {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]},
    "tool-call": {"messages": [{"role": "user", "content": "What is the weather in Paris?"}], "tools": [WEATHER]},
    "two-tools": {"messages": [{"role": "user", "content": "What time is it in Paris?"}], "tools": [TIME, WEATHER]},
    "tool-result": {"messages": TOOL_TURN, "tools": [WEATHER]},
    "required-after-result": {"messages": TOOL_TURN, "tools": [WEATHER], "tool_choice": "required"},
    "structured": {"messages": [{"role": "user", "content": "The largest city of France, as JSON."}],
                   "response_format": SCHEMA},
    "max-tokens": {"messages": [{"role": "user", "content": "Hi there"}], "max_tokens": 16},
}  # fmt: skip

EXPECTED_FINISH = {
    "text": "stop",
    "system-text": "stop",
    "tool-call": "tool_calls",
    "two-tools": "tool_calls",
    "tool-result": "stop",
    "required-after-result": "tool_calls",
    "structured": "stop",
    "max-tokens": "length",
}


@pytest.fixture(scope="module")
def forward(llama: LlamaServer) -> Iterator[BridgeHandle]:
    handle = start_bridge(llama_config(llama.url))
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture(scope="module")
def reverse(forward: BridgeHandle) -> Iterator[BridgeHandle]:
    handle = start_bridge(bridge_config(forward.url, upstream={"name": "bridge", "api": "responses"}))
    try:
        yield handle
    finally:
        handle.stop()


def sdk(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key="x", max_retries=0, timeout=120)


def answer(client: openai.OpenAI, stream: bool, **request: Any) -> dict[str, Any]:
    """Content, reasoning, tool calls, finish reason and usage, streamed or not, as the SDK gives them."""
    if not stream:
        completion = client.chat.completions.create(model=MODEL, **request)
        [choice] = completion.choices
        message = choice.message
        calls = [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls or []]
        return {
            "content": message.content or None,
            "reasoning": (message.model_extra or {}).get("reasoning_content") or None,
            "calls": calls,
            "finish": choice.finish_reason,
            "usage": _usage(completion.usage),
        }
    content: list[str] = []
    reasoning: list[str] = []
    calls: dict[int, list[str]] = {}
    finishes: list[str] = []
    usage = None
    chunks = client.chat.completions.create(
        model=MODEL, stream=True, stream_options={"include_usage": True}, **request
    )
    for chunk in chunks:
        if chunk.usage is not None:
            assert usage is None, "two usage chunks"
            usage = _usage(chunk.usage)
        for choice in chunk.choices:
            delta = choice.delta
            content.append(delta.content or "")
            reasoning.append((delta.model_extra or {}).get("reasoning_content") or "")
            for call in delta.tool_calls or []:
                slot = calls.setdefault(call.index, ["", "", ""])
                if call.id:
                    assert not slot[0] or slot[0] == call.id, "a call's id changed mid-stream"
                    slot[0] = call.id
                if call.function and call.function.name:
                    slot[1] = call.function.name
                slot[2] += (call.function.arguments or "") if call.function else ""
            if choice.finish_reason:
                finishes.append(choice.finish_reason)
    assert len(finishes) == 1, f"finish reasons: {finishes}"
    return {
        "content": "".join(content) or None,
        "reasoning": "".join(reasoning) or None,
        "calls": [tuple(calls[i]) for i in sorted(calls)],
        "finish": finishes[0],
        "usage": usage,
    }


def _usage(usage: Any) -> dict[str, Any] | None:
    if usage is None:
        return None
    completion_details = usage.completion_tokens_details
    prompt_details = usage.prompt_tokens_details
    return {
        "prompt": usage.prompt_tokens,
        "completion": usage.completion_tokens,
        "total": usage.total_tokens,
        "reasoning": None if completion_details is None else completion_details.reasoning_tokens,
        "cached": None if prompt_details is None else prompt_details.cached_tokens,
    }


def _counts(usage: dict[str, Any] | None) -> dict[str, Any] | None:
    """The counts that must be equal. Two details are not, for reasons outside the translation:

    * `cached_tokens` is how much of the prompt llama.cpp's slot still held from the request before,
      which is a fact of the server's state (the direct request and the translated one run at
      different moments): it must be a count within the prompt, no more;
    * `completion_tokens_details`: llama-server sends none; the bridge's Responses usage always has
      `output_tokens_details.reasoning_tokens` (the openai SDK types it as a required int), 0 when
      the backend gave none, so after two translations it is exactly 0.
    """
    if usage is None:
        return None
    return {k: usage[k] for k in ("prompt", "completion", "total")}


def _comparable(result: dict[str, Any]) -> dict[str, Any]:
    for call_id, _name, _args in result["calls"]:
        assert isinstance(call_id, str) and len(call_id) > 5, result["calls"]
    return {
        **result,
        "calls": [(name, json.loads(args)) for _id, name, args in result["calls"]],
        "usage": _counts(result["usage"]),
    }


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("case", list(CASES))
def test_two_translations_equal_llama_servers_answer(
    llama: LlamaServer, reverse: BridgeHandle, case: str, stream: bool
) -> None:
    direct = answer(sdk(llama.url), stream, **CASES[case])
    through = answer(sdk(reverse.url), stream, **CASES[case])
    assert _comparable(through) == _comparable(direct)
    assert direct["usage"]["reasoning"] is None  # llama-server reports no completion_tokens_details
    assert through["usage"]["reasoning"] == 0  # the bridge's required int, 0 as llama.cpp gave none
    for usage in (direct["usage"], through["usage"]):
        assert usage["cached"] is None or 0 <= usage["cached"] <= usage["prompt"]
    # the case says what it is meant to say (a greeting, a call, the after-tool text, a cut answer)
    assert direct["finish"] == EXPECTED_FINISH[case]
    assert direct["usage"] is not None and direct["usage"]["prompt"] > 0
    assert (direct["reasoning"] or "").strip() == behaviour.REASONING


def test_the_cases_mean_what_they_say(llama: LlamaServer) -> None:
    """The model's fixed answers, straight from llama-server: so the equality above compares a
    greeting, a Paris call, the after-tool text and a cut greeting, not two empty answers."""
    client = sdk(llama.url)
    assert answer(client, False, **CASES["text"])["content"] == behaviour.GREETING
    [(_, name, args)] = answer(client, False, **CASES["tool-call"])["calls"]
    assert (name, json.loads(args)) == ("get_weather", behaviour.WEATHER_ARGUMENTS)
    assert answer(client, False, **CASES["tool-result"])["content"] == behaviour.AFTER_TOOL
    cut = answer(client, False, **CASES["max-tokens"])
    assert cut["content"] and behaviour.GREETING.startswith(cut["content"]) and cut["content"] != behaviour.GREETING
    assert cut["usage"]["completion"] == 16


def test_reasoning_replays_through_both_translations(llama: LlamaServer, reverse: BridgeHandle) -> None:
    """The assistant turn's `reasoning_content` goes back through both translations: llama.cpp's Qwen3
    template renders it into the prompt, so the replayed turn costs the same prompt tokens as the same
    turn sent to llama-server directly."""
    through = sdk(reverse.url)
    first = through.chat.completions.create(model=MODEL, tools=[WEATHER], messages=CASES["tool-call"]["messages"])
    message = first.choices[0].message.model_dump(exclude_none=True)
    assert (message.get("reasoning_content") or "").strip() == behaviour.REASONING
    call = message["tool_calls"][0]
    follow_up = [*CASES["tool-call"]["messages"], message, {"role": "tool", "tool_call_id": call["id"], "content": "Sunny"}]
    replayed = answer(through, False, tools=[WEATHER], messages=follow_up)
    direct = answer(sdk(llama.url), False, tools=[WEATHER], messages=follow_up)
    assert replayed["content"] == behaviour.AFTER_TOOL
    assert _comparable(replayed) == _comparable(direct)
