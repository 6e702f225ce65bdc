"""The OpenAI Agents SDK runs an agent with a function tool to its final output through the bridge.

The SDK drives the Responses API the way an agent framework does: a tool loop over several
requests, streamed or not, optionally chained with `previous_response_id` (then only the new items
are sent and the bridge must rebuild the conversation from its store). The fixture chat backend is
scripted by `@call NAME {json}` in the prompt and answers `Tool results: …` once the tool's output
comes back. Tracing is off: nothing may leave loopback.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

# Tracing off before the SDK is imported, so no exporter is ever configured.
os.environ["OPENAI_AGENTS_DISABLE_TRACING"] = "1"

from agents import (
    Agent,
    OpenAIResponsesModel,
    RunConfig,
    Runner,
    function_tool,
    set_tracing_disabled,
)
from openai import AsyncOpenAI
from pydantic import BaseModel

from tests.support.clients_backend import chat_requests_with, message_text

set_tracing_disabled(True)

MODEL = "fixture-agent-model"
T = TypeVar("T")


class LedgerTool:
    """A function tool with an observable side effect, so a test can prove the tool really ran."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def result_for(self, key: str) -> str:
        """Derived from the key but never equal to anything in the prompt."""
        return f"ledger-entry-{key[::-1]}"

    def tool(self) -> Any:
        @function_tool
        def lookup_ledger(key: str) -> str:
            """Look up the ledger entry stored under a key."""
            self.calls.append(key)
            return self.result_for(key)

        return lookup_ledger


@pytest.fixture
def ledger() -> LedgerTool:
    return LedgerTool()


def drive(bridge_url: str, scenario: Callable[[AsyncOpenAI], Awaitable[T]], timeout: float = 90) -> T:
    """Run `scenario` with a client bound to its own event loop, closed before the loop ends."""

    async def main() -> T:
        # max_retries=0: a bridge failure must fail the test, not be retried away.
        async with AsyncOpenAI(
            base_url=bridge_url, api_key="sk-agents-test", max_retries=0, timeout=60
        ) as client:
            return await asyncio.wait_for(scenario(client), timeout)

    return asyncio.run(main())


def make_agent(client: AsyncOpenAI, ledger: LedgerTool) -> Agent[Any]:
    return Agent(
        name="ledger clerk",
        instructions="Use the ledger tool when asked, then report what it returned.",
        model=OpenAIResponsesModel(model=MODEL, openai_client=client),
        tools=[ledger.tool()],
    )


def run_config() -> RunConfig:
    return RunConfig(tracing_disabled=True)


def call_prompt(key: str) -> str:
    return f"What is in the ledger under {key}?\n@call lookup_ledger {json.dumps({'key': key})}"


def test_agent_runs_tool_to_final_output(
    bridge_url: str, ledger: LedgerTool, backend_requests: Callable[[], list[dict[str, Any]]]
) -> None:
    key = secrets.token_hex(6)

    async def scenario(client: AsyncOpenAI) -> Any:
        return await Runner.run(make_agent(client, ledger), call_prompt(key), run_config=run_config())

    result = drive(bridge_url, scenario)

    assert ledger.calls == [key]
    assert isinstance(result.final_output, str)
    assert result.final_output.startswith("Tool results:"), result.final_output
    assert ledger.result_for(key) in result.final_output
    assert len(result.raw_responses) == 2

    requests = chat_requests_with(backend_requests(), key)
    assert len(requests) == 2
    tool_messages = [m for m in requests[1]["messages"] if m["role"] == "tool"]
    assert [message_text(m) for m in tool_messages] == [ledger.result_for(key)]
    # The agent's instructions reach the backend as a system message.
    assert requests[0]["messages"][0]["role"] == "system"
    assert "ledger tool" in message_text(requests[0]["messages"][0])


def test_agent_streamed_run(bridge_url: str, ledger: LedgerTool) -> None:
    key = secrets.token_hex(6)

    async def scenario(client: AsyncOpenAI) -> tuple[Any, list[str], list[str], str]:
        streamed = Runner.run_streamed(make_agent(client, ledger), call_prompt(key), run_config=run_config())
        raw_types: list[str] = []
        item_names: list[str] = []
        deltas: list[str] = []
        async for event in streamed.stream_events():
            if event.type == "raw_response_event":
                raw_types.append(event.data.type)
                if event.data.type == "response.output_text.delta":
                    deltas.append(event.data.delta)
            elif event.type == "run_item_stream_event":
                item_names.append(event.name)
        return streamed, raw_types, item_names, "".join(deltas)

    streamed, raw_types, item_names, streamed_text = drive(bridge_url, scenario)

    assert ledger.calls == [key]
    assert ledger.result_for(key) in streamed.final_output
    assert item_names.count("tool_called") == 1
    assert item_names.count("tool_output") == 1
    assert "message_output_created" in item_names
    # Two streamed responses, each ended by its terminal event, text arriving as deltas.
    assert raw_types.count("response.created") == 2
    assert raw_types.count("response.completed") == 2
    assert "response.function_call_arguments.delta" in raw_types
    # The deltas add up to the final answer (the SDK builds its output from the done events).
    assert streamed_text == streamed.final_output


def test_agent_chained_with_previous_response_id(
    bridge_url: str, ledger: LedgerTool, backend_requests: Callable[[], list[dict[str, Any]]]
) -> None:
    """With response chaining the SDK sends only new items; the bridge rebuilds the rest from its store."""
    key = secrets.token_hex(6)
    follow_up = f"Repeat it.\n@text Still {key}."

    async def scenario(client: AsyncOpenAI) -> tuple[Any, Any]:
        agent = make_agent(client, ledger)
        first = await Runner.run(
            agent, call_prompt(key), run_config=run_config(), auto_previous_response_id=True
        )
        second = await Runner.run(
            agent, follow_up, run_config=run_config(), previous_response_id=first.last_response_id
        )
        return first, second

    first, second = drive(bridge_url, scenario)

    assert ledger.result_for(key) in first.final_output
    assert first.last_response_id
    assert second.final_output == f"Still {key}."
    assert ledger.calls == [key]  # one tool call in all

    requests = chat_requests_with(backend_requests(), key)
    assert len(requests) == 3
    # The tool-result request was sent as previous_response_id + function_call_output only, yet the
    # backend saw the whole conversation: the user's question, the call, and its output.
    tool_round = requests[1]["messages"]
    assert any(m["role"] == "user" and key in message_text(m) for m in tool_round), tool_round
    assert any(m["role"] == "assistant" and m.get("tool_calls") for m in tool_round), tool_round
    assert [message_text(m) for m in tool_round if m["role"] == "tool"] == [ledger.result_for(key)]
    # The follow-up chained on the final answer carries everything before it.
    last = requests[2]["messages"]
    assert [message_text(m) for m in last if m["role"] == "tool"] == [ledger.result_for(key)]
    assert any(m["role"] == "assistant" and ledger.result_for(key) in message_text(m) for m in last), last
    assert last[-1]["role"] == "user" and follow_up in message_text(last[-1])


class LedgerSummary(BaseModel):
    """The structured answer an agent with `output_type` must produce."""

    account: str
    balance: int
    settled: bool


def test_agent_structured_output(
    bridge_url: str, backend_requests: Callable[[], list[dict[str, Any]]]
) -> None:
    """`output_type` becomes `text.format` json_schema; the bridge maps it to chat `response_format`
    and the SDK parses the answer into the model (the fixture backend answers a schema instance)."""
    token = secrets.token_hex(6)

    async def scenario(client: AsyncOpenAI) -> Any:
        agent = Agent(
            name="summariser",
            instructions="Summarise the ledger.",
            model=OpenAIResponsesModel(model=MODEL, openai_client=client),
            output_type=LedgerSummary,
        )
        return await Runner.run(agent, f"Summarise account {token}.", run_config=run_config())

    result = drive(bridge_url, scenario)

    assert isinstance(result.final_output, LedgerSummary)
    requests = chat_requests_with(backend_requests(), token)
    assert len(requests) == 1
    response_format = requests[0].get("response_format")
    assert response_format and response_format["type"] == "json_schema", requests[0]
    schema = response_format["json_schema"]["schema"]
    assert set(schema["properties"]) == {"account", "balance", "settled"}
