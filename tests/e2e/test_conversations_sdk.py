"""Real clients on conversations: the openai SDK's `client.conversations.*`, and the Agents SDK running
a tool-using agent over several turns on a conversation (`OpenAIConversationsSession`, and
`conversation_id=` where the bridge keeps the history), with the bridge restarted between turns on
the SQLite and the PostgreSQL store. The backend is the fixture chat backend (steered by `@call` /
`@text` in the prompt); tracing is off, nothing leaves loopback.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest

os.environ["OPENAI_AGENTS_DISABLE_TRACING"] = "1"

from agents import (
    Agent,
    ModelSettings,
    OpenAIResponsesModel,
    RunConfig,
    Runner,
    function_tool,
    set_tracing_disabled,
)
from agents.memory import OpenAIConversationsSession
from openai import AsyncOpenAI, OpenAI

from tests.server.test_store import pg_schema, postgres_url  # noqa: F401  (fixtures)
from tests.support.clients_backend import chat_requests_with, message_text

set_tracing_disabled(True)

MODEL = "fixture-scripted"
KEY = "sk-conversations-e2e-0001"


# ------------------------------------------------------------------------------------ openai SDK


def test_openai_sdk_conversations_calls(make_bridge: Callable[..., Any]) -> None:
    handle = make_bridge(api_keys=(KEY, "sk-other-key-0002"), store="memory")
    client = OpenAI(base_url=handle.url, api_key=KEY, max_retries=0)
    conv = client.conversations.create(
        metadata={"project": "bridge"}, items=[{"type": "message", "role": "user", "content": "first"}]
    )
    assert conv.object == "conversation" and conv.id.startswith("conv_") and conv.metadata == {"project": "bridge"}
    assert client.conversations.retrieve(conv.id).id == conv.id
    assert client.conversations.update(conv.id, metadata={"project": "renamed"}).metadata == {"project": "renamed"}

    added = client.conversations.items.create(
        conv.id, items=[{"type": "message", "role": "user", "content": f"note {i}"} for i in range(20)]
    )
    assert added.object == "list" and len(added.data) == 20
    # auto-paging walks `after=last_id` pages of 7 until has_more is false
    listed = list(client.conversations.items.list(conv.id, limit=7, order="asc"))
    assert len(listed) == 21
    assert [part.text for item in listed for part in item.content] == ["first"] + [f"note {i}" for i in range(20)]
    one = client.conversations.items.retrieve(listed[3].id, conversation_id=conv.id)
    assert one.id == listed[3].id and one.type == "message"
    after_delete = client.conversations.items.delete(listed[3].id, conversation_id=conv.id)
    assert after_delete.id == conv.id and after_delete.object == "conversation"
    assert len(list(client.conversations.items.list(conv.id, limit=100))) == 20

    response = client.responses.create(model=MODEL, input="@text answered", conversation=conv.id)
    assert response.output_text == "answered"
    assert response.conversation is not None and response.conversation.id == conv.id
    newest = client.conversations.items.list(conv.id, limit=2, order="desc").data
    assert newest[0].role == "assistant" and newest[0].content[0].text == "answered"
    assert newest[1].role == "user"

    with pytest.raises(openai.BadRequestError) as too_many:
        client.conversations.items.create(conv.id, items=[{"role": "user", "content": "x"}] * 21)
    assert too_many.value.code == "array_above_max_length"
    with pytest.raises(openai.BadRequestError) as both:
        client.responses.create(model=MODEL, input="x", conversation=conv.id, previous_response_id=response.id)
    assert both.value.code == "mutually_exclusive_parameters"
    other = OpenAI(base_url=handle.url, api_key="sk-other-key-0002", max_retries=0)
    with pytest.raises(openai.NotFoundError):
        other.conversations.retrieve(conv.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.create(model=MODEL, input="x", conversation=conv.id)

    deleted = client.conversations.delete(conv.id)
    assert deleted.deleted is True and deleted.object == "conversation.deleted"
    with pytest.raises(openai.NotFoundError):
        client.conversations.retrieve(conv.id)


def test_openai_sdk_streams_on_a_conversation(make_bridge: Callable[..., Any]) -> None:
    handle = make_bridge(store="memory")
    client = OpenAI(base_url=handle.url, api_key="x", max_retries=0)
    conv = client.conversations.create()
    with client.responses.stream(model=MODEL, input="@text streamed", conversation={"id": conv.id}) as stream:
        final = stream.get_final_response()
    assert final.output_text == "streamed" and final.conversation is not None and final.conversation.id == conv.id
    items = client.conversations.items.list(conv.id, order="asc").data
    assert [item.role for item in items] == ["user", "assistant"]


# ------------------------------------------------------------------------------------- Agents SDK


class Ledger:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def result_for(self, key: str) -> str:
        return f"ledger-entry-{key[::-1]}"

    def tool(self) -> Any:
        @function_tool
        def lookup_ledger(key: str) -> str:
            """Look up the ledger entry stored under a key."""
            self.calls.append(key)
            return self.result_for(key)

        return lookup_ledger


def agent_for(client: AsyncOpenAI, ledger: Ledger, **settings: Any) -> Agent[Any]:
    return Agent(
        name="ledger clerk",
        instructions="Use the ledger tool when asked, then report what it returned.",
        model=OpenAIResponsesModel(model=MODEL, openai_client=client),
        tools=[ledger.tool()],
        model_settings=ModelSettings(**settings),
    )


def run(url: str, scenario: Callable[[AsyncOpenAI], Any]) -> Any:
    async def main() -> Any:
        async with AsyncOpenAI(base_url=url, api_key=KEY, max_retries=0, timeout=60) as client:
            return await asyncio.wait_for(scenario(client), 90)

    return asyncio.run(main())


def ask(key: str) -> str:
    return f"What is in the ledger under {key}?\n@call lookup_ledger {json.dumps({'key': key})}"


@pytest.fixture(params=["sqlite", "postgresql"])
def durable_store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/bridge.db"
    return f"{request.getfixturevalue('postgres_url')}?schema={request.getfixturevalue('pg_schema')}"


def test_agents_session_survives_a_bridge_restart(
    make_bridge: Callable[..., Any], durable_store: str, backend_requests: Callable[[], list[dict[str, Any]]]
) -> None:
    """`OpenAIConversationsSession`: the SDK reads the history from the conversation's items and adds
    each run's items to it; the bridge restarts between the turns, on the same store."""
    key, ledger = secrets.token_hex(6), Ledger()
    first_bridge = make_bridge(api_keys=(KEY,), store=durable_store)

    async def first_turn(client: AsyncOpenAI) -> tuple[str, Any]:
        session = OpenAIConversationsSession(openai_client=client)
        result = await Runner.run(agent_for(client, ledger), ask(key), session=session,
                                  run_config=RunConfig(tracing_disabled=True))  # fmt: skip
        return session.session_id, result

    conversation_id, first = run(first_bridge.url, first_turn)
    assert ledger.calls == [key] and ledger.result_for(key) in first.final_output
    first_bridge.stop()

    second_bridge = make_bridge(api_keys=(KEY,), store=durable_store)
    follow_up = f"Repeat it.\n@text Still {key}."

    async def second_turn(client: AsyncOpenAI) -> tuple[Any, list[Any]]:
        session = OpenAIConversationsSession(conversation_id=conversation_id, openai_client=client)
        result = await Runner.run(agent_for(client, ledger), follow_up, session=session,
                                  run_config=RunConfig(tracing_disabled=True))  # fmt: skip
        return result, await session.get_items()

    second, items = run(second_bridge.url, second_turn)
    assert second.final_output == f"Still {key}."
    assert ledger.calls == [key]
    # The backend saw the first turn (question, tool call, tool output, answer) on the second one,
    # read back from the store by a bridge that never served the first turn.
    last = chat_requests_with(backend_requests(), key)[-1]["messages"]
    assert [message_text(m) for m in last if m["role"] == "tool"] == [ledger.result_for(key)]
    assert any(m["role"] == "assistant" and m.get("tool_calls") for m in last)
    assert message_text(last[-1]) == follow_up
    types = [item.get("type", "message") for item in items]
    assert types.count("function_call") == 1 and types.count("function_call_output") == 1
    assert [item["role"] for item in items if item.get("type", "message") == "message"] == [
        "user", "assistant", "user", "assistant"
    ]  # fmt: skip


def test_agents_conversation_id_survives_a_bridge_restart(
    make_bridge: Callable[..., Any], durable_store: str, backend_requests: Callable[[], list[dict[str, Any]]]
) -> None:
    """`conversation_id=`: the SDK sends only new items with `conversation`; the bridge prepends the
    stored items and appends each response's, so the tool loop and the next turn see everything."""
    key, ledger = secrets.token_hex(6), Ledger()
    first_bridge = make_bridge(api_keys=(KEY,), store=durable_store)

    async def first_turn(client: AsyncOpenAI) -> tuple[str, Any, Any]:
        conv = await client.conversations.create()
        result = await Runner.run(agent_for(client, ledger, truncation="auto"), ask(key), conversation_id=conv.id,
                                  run_config=RunConfig(tracing_disabled=True))  # fmt: skip
        return conv.id, result, await client.responses.retrieve(result.last_response_id)

    conversation_id, first, stored = run(first_bridge.url, first_turn)
    assert ledger.calls == [key] and ledger.result_for(key) in first.final_output
    assert stored.truncation == "auto" and stored.conversation.id == conversation_id
    first_bridge.stop()

    second_bridge = make_bridge(api_keys=(KEY,), store=durable_store)
    follow_up = f"And again.\n@text Again {key}."

    async def second_turn(client: AsyncOpenAI) -> tuple[Any, list[Any]]:
        result = await Runner.run(agent_for(client, ledger), follow_up, conversation_id=conversation_id,
                                  run_config=RunConfig(tracing_disabled=True))  # fmt: skip
        page = await client.conversations.items.list(conversation_id, order="asc", limit=100)
        return result, page.data

    second, items = run(second_bridge.url, second_turn)
    assert second.final_output == f"Again {key}."
    requests = chat_requests_with(backend_requests(), key)
    # the tool-output request of turn one was sent as the output alone, yet the backend saw the call
    tool_round = requests[-2]["messages"]
    assert any(m["role"] == "assistant" and m.get("tool_calls") for m in tool_round)
    last = requests[-1]["messages"]
    assert [message_text(m) for m in last if m["role"] == "tool"] == [ledger.result_for(key)]
    assert message_text(last[-1]) == follow_up
    kinds = [item.type for item in items]
    assert kinds == ["message", "function_call", "function_call_output", "message", "message", "message"]
    assert [item.role for item in items if item.type == "message"] == ["user", "assistant", "user", "assistant"]


# ------------------------------------------------------------- a restart inside the agent's tool loop


def serve_on_port(app: Any, port: int) -> Any:
    """The app under uvicorn on a given loopback port (a restarted bridge keeps its address)."""
    import socket
    import threading
    import time

    import uvicorn

    from tests.support.servers import RunningServer, _GracefulServer

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    port = int(sock.getsockname()[1])
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=5)  # fmt: skip
    server = _GracefulServer(config, app)
    thread = threading.Thread(target=lambda: server.run(sockets=[sock]), daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "bridge did not start"
        time.sleep(0.01)
    return RunningServer(app=app, host="127.0.0.1", port=port, server=server, thread=thread)


def test_agents_conversation_survives_a_restart_inside_the_tool_loop(
    backend_url: str, durable_store: str, backend_requests: Callable[[], list[dict[str, Any]]]
) -> None:
    """The bridge is stopped and a new one started on the same address and store while the agent's
    tool runs, between the response that called the tool and the request carrying its output: the
    new process finds the conversation (question and call) in the store and the run completes."""
    from server.app import create_app
    from tests.conftest import bridge_config

    key = secrets.token_hex(6)
    config = bridge_config(backend_url, api_keys=(KEY,), store=durable_store)
    first = serve_on_port(create_app(config), 0)
    port = first.port
    servers = [first]
    restarts: list[str] = []

    def restart() -> None:
        servers[-1].stop()
        servers.append(serve_on_port(create_app(config), port))

    @function_tool
    async def lookup_ledger(key: str) -> str:
        """Look up the ledger entry stored under a key."""
        await asyncio.to_thread(restart)
        restarts.append(key)
        return f"ledger-entry-{key[::-1]}"

    async def scenario(client: AsyncOpenAI) -> tuple[Any, Any]:
        agent = Agent(name="ledger clerk", instructions="Use the ledger tool.",
                      model=OpenAIResponsesModel(model=MODEL, openai_client=client), tools=[lookup_ledger])  # fmt: skip
        conv = await client.conversations.create()
        result = await Runner.run(agent, ask(key), conversation_id=conv.id, run_config=RunConfig(tracing_disabled=True))
        page = await client.conversations.items.list(conv.id, order="asc", limit=100)
        return result, page.data

    try:
        result, items = run(f"http://127.0.0.1:{port}/v1", scenario)
    finally:
        servers[-1].stop()
    assert restarts == [key] and len(servers) == 2
    assert result.final_output == f"Tool results: ledger-entry-{key[::-1]}"
    tool_round = chat_requests_with(backend_requests(), key)[-1]["messages"]
    assert any(m["role"] == "assistant" and m.get("tool_calls") for m in tool_round)  # read back by process two
    assert [item.type for item in items] == ["message", "function_call", "function_call_output", "message"]
