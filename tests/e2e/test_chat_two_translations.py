"""End to end through two translations: the real openai SDK's `chat.completions.create` → the
bridge's reverse path (`api = "responses"`) → the bridge's own forward path (`/v1/responses`) → the
fixture chat backend. The answer must equal the fixture backend's direct answer: content, tool
calls, finish reason and usage (call ids are random per answer in the scripted backend, so they are
compared for shape, and for staying the same within one answer)."""

from __future__ import annotations

from typing import Any

import openai
import pytest

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city.",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                           "required": ["city"]}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
SCHEMA = {"type": "json_schema", "json_schema": {"name": "city", "strict": True, "schema": {
    "type": "object", "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
    "required": ["city", "population"], "additionalProperties": False}}}
TOOL_TURN = [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_a1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
    {"role": "tool", "tool_call_id": "call_a1", "content": '{"temperature_c": 18}'},
]

CASES: dict[str, dict[str, Any]] = {
    "text": {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello over there"}]},
    "parallel-tools": {"messages": [{"role": "user", "content": '@call get_weather {"city": "Paris"}\n'
                                                               '@call get_time {"tz": "UTC"}\nboth please'}],
                       "tools": [WEATHER, TIME]},
    "reasoning": {"messages": [{"role": "user", "content": "@reason think first\n@text Done thinking."}]},
    "structured": {"messages": [{"role": "user", "content": "Largest city of France?"}], "response_format": SCHEMA},
    "tool-result": {"messages": TOOL_TURN, "tools": [WEATHER]},
    "max-tokens": {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 50, "temperature": 0.0},
}


@pytest.fixture
def reverse_url(make_bridge: Any, bridge_url: str) -> str:
    return make_bridge(upstream={"base_url": bridge_url, "api": "responses"}).url


def answer(client: openai.OpenAI, stream: bool, **request: Any) -> dict[str, Any]:
    """Content, reasoning, tool calls, finish reason and usage, streamed or not, as the SDK gives them."""
    if not stream:
        completion = client.chat.completions.create(model="fixture-scripted", **request)
        choice = completion.choices[0]
        message = choice.message
        calls = [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls or []]
        return {"content": message.content, "reasoning": (message.model_extra or {}).get("reasoning_content"),
                "calls": calls, "finish": choice.finish_reason, "usage": _usage(completion.usage)}
    content: list[str] = []
    reasoning: list[str] = []
    calls: dict[int, list[str]] = {}
    finish = usage = None
    for chunk in client.chat.completions.create(model="fixture-scripted", stream=True,
                                                stream_options={"include_usage": True}, **request):
        if chunk.usage is not None:
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
            finish = choice.finish_reason or finish
    return {"content": "".join(content) or None, "reasoning": "".join(reasoning) or None,
            "calls": [tuple(calls[i]) for i in sorted(calls)], "finish": finish, "usage": usage}


def _usage(usage: Any) -> tuple[int, int, int] | None:
    return None if usage is None else (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens)


def _comparable(result: dict[str, Any]) -> dict[str, Any]:
    for call_id, _name, _args in result["calls"]:
        assert call_id.startswith("call_") and len(call_id) > 5
    return {**result, "calls": [(name, args) for _id, name, args in result["calls"]]}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("case", list(CASES))
def test_two_translations_equal_the_direct_answer(backend_url: str, reverse_url: str, case: str, stream: bool) -> None:
    direct = answer(openai.OpenAI(base_url=backend_url, api_key="x", max_retries=0), stream, **CASES[case])
    through = answer(openai.OpenAI(base_url=reverse_url, api_key="x", max_retries=0), stream, **CASES[case])
    assert _comparable(through) == _comparable(direct)
    assert direct["finish"] in ("stop", "tool_calls") and direct["usage"] is not None  # the case says something


def test_parse_helper_gets_structured_output(reverse_url: str) -> None:
    client = openai.OpenAI(base_url=reverse_url, api_key="x", max_retries=0)
    completion = client.chat.completions.create(model="fixture-scripted", response_format=SCHEMA,
                                                messages=CASES["structured"]["messages"])
    import json

    value = json.loads(completion.choices[0].message.content or "")
    assert set(value) == {"city", "population"} and isinstance(value["population"], int)


def test_reasoning_replays_to_the_backend(reverse_url: str, backend_requests: Any, clear_backend_requests: Any) -> None:
    """DeepSeek-style replay through both translations: the assistant turn's reasoning_content
    reaches the chat backend on the next request."""
    client = openai.OpenAI(base_url=reverse_url, api_key="x", max_retries=0)
    first = client.chat.completions.create(model="fixture-scripted", tools=[WEATHER], messages=[
        {"role": "user", "content": '@reason I should look it up\n@call get_weather {"city": "Oslo"}'}])
    message = first.choices[0].message.model_dump(exclude_none=True)
    assert message["reasoning_content"] == "I should look it up"
    call = message["tool_calls"][0]
    clear_backend_requests()
    client.chat.completions.create(model="fixture-scripted", tools=[WEATHER], messages=[
        {"role": "user", "content": "weather in Oslo?"}, message,
        {"role": "tool", "tool_call_id": call["id"], "content": "cold"}])
    sent = backend_requests()[-1]["messages"]
    assistant = next(m for m in sent if m["role"] == "assistant")
    assert assistant["reasoning_content"] == "I should look it up"
    assert assistant["tool_calls"][0]["id"] == call["id"]


def test_sdk_parse_with_a_pydantic_model(reverse_url: str, backend_url: str) -> None:
    """`chat.completions.parse` (strict json_schema from a pydantic model) gives the same parsed value
    through both translations as straight from the backend."""
    from pydantic import BaseModel

    class City(BaseModel):
        city: str
        population: int

    messages = [{"role": "user", "content": "Largest city of France?"}]
    direct = openai.OpenAI(base_url=backend_url, api_key="x", max_retries=0).chat.completions.parse(
        model="fixture-scripted", messages=messages, response_format=City)
    through = openai.OpenAI(base_url=reverse_url, api_key="x", max_retries=0).chat.completions.parse(
        model="fixture-scripted", messages=messages, response_format=City)
    assert through.choices[0].message.parsed == direct.choices[0].message.parsed
    assert isinstance(through.choices[0].message.parsed, City)
