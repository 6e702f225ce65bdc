"""The Agents SDK on a conversation, through the bridge, in front of a real llama.cpp `llama-server`
(build b11434, the tiny Qwen3 model of tests/support/llamacpp/; its answers are fixed per situation,
tests/support/llamacpp/behaviour.py).

A tool-using agent runs two turns on one `OpenAIConversationsSession` (the SDK reads the history from
the conversation's items and adds each run's items to it), with the bridge on a SQLite store in the
test's directory and restarted between the turns. The model makes the two turns tell each other
apart: with tools offered and no tool result in its prompt it calls `get_weather`; once a tool result
is anywhere in the prompt it answers "Here is what the tool returned" without calling. So the second
turn answering at once, with no call, proves that llama.cpp's prompt held the first turn's call and
output, read back from the store by a bridge that never served the first turn; and a second turn on a
fresh conversation (the control) calls the tool again.

The same with `conversation_id=` (the bridge prepends the stored items itself and appends each
response's). Tracing is off; nothing leaves loopback. Skipped without a build (developer machine),
failed under CI (tests/support/llamacpp/launcher.py).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ["OPENAI_AGENTS_DISABLE_TRACING"] = "1"

from agents import Agent, OpenAIResponsesModel, RunConfig, Runner, function_tool, set_tracing_disabled
from agents.memory import OpenAIConversationsSession
from openai import AsyncOpenAI

from tests.conftest import BridgeHandle, start_bridge
from tests.e2e.test_llamacpp import llama_config
from tests.support.llamacpp import behaviour
from tests.support.llamacpp.launcher import LlamaServer

set_tracing_disabled(True)

MODEL = behaviour.MODEL
KEY = "sk-llama-conversations-01"


@pytest.fixture
def bridge_on(llama: LlamaServer) -> Iterator[Callable[[str], BridgeHandle]]:
    """Start a bridge in front of llama-server (the `llamacpp` profile) on the given store."""
    started: list[BridgeHandle] = []

    def start(store: str) -> BridgeHandle:
        handle = start_bridge(llama_config(llama.url, api_keys=(KEY,), store=store))
        started.append(handle)
        return handle

    try:
        yield start
    finally:
        for handle in reversed(started):
            handle.stop()


class Weather:
    """The agent's tool, recording each call."""

    def __init__(self) -> None:
        self.cities: list[str] = []

    def tool(self) -> Any:
        @function_tool
        def get_weather(city: str) -> str:
            """Current weather for a city."""
            self.cities.append(city)
            return f"Sunny in {city}, 21 C"

        return get_weather


def agent_for(client: AsyncOpenAI, weather: Weather) -> Agent[Any]:
    return Agent(
        name="weather",
        instructions="Answer weather questions with the tool.",
        model=OpenAIResponsesModel(model=MODEL, openai_client=client),
        tools=[weather.tool()],
    )


def run(url: str, scenario: Callable[[AsyncOpenAI], Any]) -> Any:
    async def main() -> Any:
        async with AsyncOpenAI(base_url=url, api_key=KEY, max_retries=0, timeout=120) as client:
            return await asyncio.wait_for(scenario(client), 240)

    return asyncio.run(main())


def kinds(items: list[Any]) -> list[str]:
    return [item.get("type", "message") if isinstance(item, dict) else item.type for item in items]


def test_session_turns_survive_a_bridge_restart(bridge_on: Callable[[str], BridgeHandle], tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path}/bridge.db"
    weather = Weather()
    first_bridge = bridge_on(store)

    async def first_turn(client: AsyncOpenAI) -> tuple[str, Any]:
        session = OpenAIConversationsSession(openai_client=client)
        result = await Runner.run(agent_for(client, weather), "What is the weather in Paris?", session=session,
                                  run_config=RunConfig(tracing_disabled=True))  # fmt: skip
        return session.session_id, result

    conversation_id, first = run(first_bridge.url, first_turn)
    assert weather.cities == ["Paris"]  # the model called the tool with its argument, and it ran
    assert first.final_output == behaviour.AFTER_TOOL
    assert {"tool_call_item", "tool_call_output_item"} <= {item.type for item in first.new_items}
    first_bridge.stop()

    second_bridge = bridge_on(store)

    async def second_turn(client: AsyncOpenAI) -> tuple[Any, list[Any]]:
        session = OpenAIConversationsSession(conversation_id=conversation_id, openai_client=client)
        result = await Runner.run(agent_for(client, weather), "And tomorrow?", session=session,
                                  run_config=RunConfig(tracing_disabled=True))  # fmt: skip
        return result, await session.get_items()

    second, items = run(second_bridge.url, second_turn)
    # no second call: the tool result of turn one was in llama.cpp's prompt
    assert weather.cities == ["Paris"]
    assert second.final_output == behaviour.AFTER_TOOL
    assert [item.type for item in second.new_items] == ["reasoning_item", "message_output_item"]
    # the session holds both turns (each answer after llama.cpp's reasoning item)
    assert kinds(items) == [
        "message", "reasoning", "function_call", "function_call_output", "reasoning", "message",
        "message", "reasoning", "message",
    ]  # fmt: skip
    assert [item["role"] for item in items if kinds([item]) == ["message"]] == ["user", "assistant", "user", "assistant"]

    # the control: the same second question on a fresh conversation calls the tool again
    async def fresh(client: AsyncOpenAI) -> Any:
        session = OpenAIConversationsSession(openai_client=client)
        return await Runner.run(agent_for(client, weather), "And tomorrow?", session=session,
                                run_config=RunConfig(tracing_disabled=True))  # fmt: skip

    control = run(second_bridge.url, fresh)
    assert weather.cities == ["Paris", "Paris"]
    assert control.final_output == behaviour.AFTER_TOOL


def test_conversation_id_turns_survive_a_bridge_restart(
    bridge_on: Callable[[str], BridgeHandle], tmp_path: Path
) -> None:
    store = f"sqlite:///{tmp_path}/bridge.db"
    weather = Weather()
    first_bridge = bridge_on(store)

    async def first_turn(client: AsyncOpenAI) -> tuple[str, Any]:
        conversation = await client.conversations.create()
        result = await Runner.run(agent_for(client, weather), "What is the weather in Paris?",
                                  conversation_id=conversation.id, run_config=RunConfig(tracing_disabled=True))  # fmt: skip
        return conversation.id, result

    conversation_id, first = run(first_bridge.url, first_turn)
    assert weather.cities == ["Paris"]
    assert first.final_output == behaviour.AFTER_TOOL
    first_bridge.stop()

    second_bridge = bridge_on(store)

    async def second_turn(client: AsyncOpenAI) -> tuple[Any, list[Any], Any]:
        result = await Runner.run(agent_for(client, weather), "And tomorrow?", conversation_id=conversation_id,
                                  run_config=RunConfig(tracing_disabled=True))  # fmt: skip
        page = await client.conversations.items.list(conversation_id, order="asc", limit=100)
        return result, page.data, await client.responses.retrieve(result.last_response_id)

    second, items, stored = run(second_bridge.url, second_turn)
    assert weather.cities == ["Paris"]
    assert second.final_output == behaviour.AFTER_TOOL
    assert stored.conversation is not None and stored.conversation.id == conversation_id
    # the conversation holds both turns, llama.cpp's reasoning items among them
    assert [kind for kind in kinds(items) if kind != "reasoning"] == [
        "message", "function_call", "function_call_output", "message", "message", "message"
    ]  # fmt: skip
    calls = [item for item in items if item.type == "function_call"]
    assert [(call.name, call.arguments.replace(" ", "")) for call in calls] == [("get_weather", '{"city":"Paris"}')]
    answers = [item for item in items if item.type == "message" and item.role == "assistant"]
    assert [item.content[0].text for item in answers] == [behaviour.AFTER_TOOL, behaviour.AFTER_TOOL]
