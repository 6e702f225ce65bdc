"""The real openai SDK against the real bridge in front of the fixture backend."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import openai
import pytest

from tests.conftest import BridgeHandle

WEATHER_TOOL = {
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


@pytest.fixture
def client(bridge_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=bridge_url, api_key="x", max_retries=0, timeout=60)


def test_create_non_streaming(client: openai.OpenAI) -> None:
    response = client.responses.create(model="fixture-scripted", input="Hello bridge")
    assert response.status == "completed"
    assert response.output_text == "Echo: Hello bridge"
    assert response.id.startswith("resp_")
    assert response.usage is not None and response.usage.output_tokens > 0
    assert response.model == "fixture-scripted"


def test_create_streaming(client: openai.OpenAI) -> None:
    events = list(client.responses.create(model="fixture-scripted", input="@text streamed words", stream=True))
    types = [e.type for e in events]
    assert types[0] == "response.created"
    assert types[-1] == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "streamed words"
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_stream_helper_final_response(client: openai.OpenAI) -> None:
    with client.responses.stream(model="fixture-scripted", input="@text helper works") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == "helper works"
    assert final.output_text == "helper works"
    assert final.status == "completed"


def test_streamed_and_whole_answers_agree(client: openai.OpenAI) -> None:
    whole = client.responses.create(model="fixture-scripted", input="@text same either way")
    with client.responses.stream(model="fixture-scripted", input="@text same either way") as stream:
        streamed = stream.get_final_response()
    assert whole.output_text == streamed.output_text
    assert [o.type for o in whole.output] == [o.type for o in streamed.output]


@pytest.mark.parametrize("stream", [False, True])
def test_function_tool_loop(client: openai.OpenAI, stream: bool) -> None:
    prompt = 'What is the weather in Paris?\n@call get_weather {"city": "Paris"}'
    history: list[Any] = [{"role": "user", "content": prompt}]
    if stream:
        with client.responses.stream(model="fixture-scripted", input=history, tools=[WEATHER_TOOL]) as s:
            first = s.get_final_response()
    else:
        first = client.responses.create(model="fixture-scripted", input=history, tools=[WEATHER_TOOL])
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1
    call = calls[0]
    assert call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Paris"}
    assert call.call_id
    # stateless: send the whole history back with the tool's output
    history += [item.model_dump(exclude_none=True) for item in first.output]
    history.append({"type": "function_call_output", "call_id": call.call_id, "output": "18°C and sunny"})
    second = client.responses.create(model="fixture-scripted", input=history, tools=[WEATHER_TOOL], stream=False)
    assert second.status == "completed"
    assert "18°C and sunny" in second.output_text


def test_structured_output_json_schema(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "temperature": {"type": "number"}},
        "required": ["city", "temperature"],
        "additionalProperties": False,
    }
    response = client.responses.create(
        model="fixture-scripted",
        input="Weather report as JSON",
        text={"format": {"type": "json_schema", "name": "report", "schema": schema, "strict": True}},
    )
    data = json.loads(response.output_text)
    assert set(data) == {"city", "temperature"}
    assert isinstance(data["city"], str)
    assert isinstance(data["temperature"], (int, float))
    assert response.text.format.type == "json_schema"


def test_sdk_parse_with_pydantic_model(client: openai.OpenAI) -> None:
    from pydantic import BaseModel

    class Report(BaseModel):
        city: str
        sunny: bool

    parsed = client.responses.parse(model="fixture-scripted", input="report", text_format=Report)
    assert isinstance(parsed.output_parsed, Report)


def test_failed_stream_surfaces_in_sdk(client: openai.OpenAI) -> None:
    """A backend dying mid-stream reaches the SDK as an error, never a silently empty answer."""
    with pytest.raises((openai.APIError, RuntimeError)), client.responses.stream(
        model="chaos:cut", input="hi"
    ) as stream:
        for _ in stream:
            pass
        stream.get_final_response()


def test_previous_response_id_with_memory_store(make_bridge: Callable[..., BridgeHandle]) -> None:
    pytest.importorskip("server.store", reason="storage module not present")
    handle = make_bridge(store="memory")
    client = openai.OpenAI(base_url=handle.url, api_key="x", max_retries=0)
    first = client.responses.create(model="fixture-scripted", input="@text first answer")
    second = client.responses.create(model="fixture-scripted", input="and again", previous_response_id=first.id)
    assert second.output_text == "Echo: and again"
    assert second.previous_response_id == first.id


def test_previous_response_id_without_store_is_404(make_bridge: Callable[..., BridgeHandle]) -> None:
    handle = make_bridge(store="none")
    client = openai.OpenAI(base_url=handle.url, api_key="x", max_retries=0)
    with pytest.raises(openai.NotFoundError) as info:
        client.responses.create(model="fixture-scripted", input="hi", previous_response_id="resp_missing")
    assert info.value.code == "previous_response_not_found"
