"""LangChain's ChatOpenAI (a chat-only framework class) through the reverse path in front of the
forward path: invoke, stream, tools and structured output. langchain-openai is not a project
dependency (docs/reverse.md says how to add it); without it this module is not collected."""

from __future__ import annotations

from typing import Any

import pytest

langchain_openai = pytest.importorskip("langchain_openai")


@pytest.fixture
def chat_model(make_bridge: Any, bridge_url: str) -> Any:
    reverse = make_bridge(upstream={"base_url": bridge_url, "api": "responses"})
    return langchain_openai.ChatOpenAI(model="fixture-scripted", base_url=reverse.url, api_key="x", max_retries=0,
                                       stream_usage=True)


def test_invoke_and_stream(chat_model: Any) -> None:
    message = chat_model.invoke("hello over there")
    assert message.content == "Echo: hello over there"
    assert message.usage_metadata["total_tokens"] > 0
    pieces = list(chat_model.stream("hello over there"))
    total = pieces[0]
    for piece in pieces[1:]:
        total += piece
    assert total.content == "Echo: hello over there"
    assert total.usage_metadata is not None and total.usage_metadata["total_tokens"] == message.usage_metadata["total_tokens"]


def test_tools_streamed_and_whole(chat_model: Any) -> None:
    def get_weather(city: str) -> str:
        """Weather for a city."""
        return "sunny"

    bound = chat_model.bind_tools([get_weather])
    prompt = '@call get_weather {"city": "Paris"}\n@call get_weather {"city": "Rome"}\nweather?'
    whole = bound.invoke(prompt)
    assert [(c["name"], c["args"]) for c in whole.tool_calls] == [("get_weather", {"city": "Paris"}),
                                                                   ("get_weather", {"city": "Rome"})]
    chunks = list(bound.stream(prompt))
    total = chunks[0]
    for chunk in chunks[1:]:
        total += chunk
    assert [(c["name"], c["args"]) for c in total.tool_calls] == [(c["name"], c["args"]) for c in whole.tool_calls]


def test_structured_output(chat_model: Any) -> None:
    schema = {"title": "city", "type": "object", "properties": {"city": {"type": "string"},
                                                                "population": {"type": "integer"}},
              "required": ["city", "population"], "additionalProperties": False}
    value = chat_model.with_structured_output(schema, method="json_schema", strict=True).invoke("Largest city?")
    assert set(value) == {"city", "population"} and isinstance(value["population"], int)
