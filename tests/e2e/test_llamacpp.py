"""The bridge in front of a real llama.cpp `llama-server` (build b11434), with real clients.

The backend is the real server running a tiny hand-wired Qwen3 model (tests/support/llamacpp/), so
what reaches the bridge is llama.cpp's own chat template rendering, reasoning extraction, tool-call
parsing and grammar, and its own error bodies; the model's answers are fixed per situation
(tests/support/llamacpp/behaviour.py), so every test can assert exact text. The bridge uses the
`llamacpp` profile (server/profiles/llamacpp.toml), as an operator would.

Without a build the tests are skipped, except under CI, where `.ci/run` builds it and a missing build
fails them.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from pydantic import BaseModel

from conformance import check
from tests.conftest import BridgeHandle, bridge_config, start_bridge
from tests.support.clients_codex import run_codex
from tests.support.llamacpp import behaviour
from tests.support.llamacpp.launcher import LlamaServer
from translator.options import TranslatorOptions

os.environ["OPENAI_AGENTS_DISABLE_TRACING"] = "1"

from agents import Agent, OpenAIResponsesModel, RunConfig, Runner, function_tool, set_tracing_disabled
from openai import AsyncOpenAI

set_tracing_disabled(True)

MODEL = behaviour.MODEL


def _tool(name: str, parameter: str, description: str) -> dict[str, Any]:
    return {
        "type": "function",
        "name": name,
        "description": description,
        "parameters": {
            "type": "object",
            "properties": {parameter: {"type": "string"}},
            "required": [parameter],
            "additionalProperties": False,
        },
        "strict": True,
    }


WEATHER_TOOL = _tool("get_weather", "city", "Current weather for a city.")
TIME_TOOL = _tool("get_time", "city", "Local time in a city.")


def llama_config(base_url: str, **overrides: Any) -> Any:
    """A `BridgeConfig` with one upstream, `llamacpp` at `base_url`, on the `llamacpp` profile."""
    options, _unknown = profile_options("llamacpp")
    return bridge_config(base_url, upstream={"name": "llamacpp", "profile": "llamacpp", "options": options}, **overrides)


def profile_options(name: str) -> tuple[dict[str, Any], list[str]]:
    """The profile's options this translator knows, and the names it does not know yet.

    A profile may name options that a translator change still to be merged introduces; the bridge
    refuses unknown options at start-up, so they are set aside here (the tests of those options then
    fail on their own assertions, which is what they should do until the option exists).
    """
    from server.config_file import load_profile

    known = {f.name for f in dataclasses.fields(TranslatorOptions)}
    options = dict(load_profile(name).options)
    unknown = sorted(set(options) - known)
    return {k: v for k, v in options.items() if k in known}, unknown


@pytest.fixture(scope="module")
def bridge(llama: LlamaServer) -> Iterator[BridgeHandle]:
    handle = start_bridge(llama_config(llama.url))
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture
def client(bridge: BridgeHandle) -> openai.OpenAI:
    return openai.OpenAI(base_url=bridge.url, api_key="x", max_retries=0, timeout=120)


def reasoning_text(response: Any) -> str:
    """All reasoning the response carries (summary or content parts)."""
    texts: list[str] = []
    for item in response.output:
        if item.type != "reasoning":
            continue
        for part in [*(item.summary or []), *(getattr(item, "content", None) or [])]:
            texts.append(part.text)
    return "".join(texts)


def function_calls(response: Any) -> list[Any]:
    return [item for item in response.output if item.type == "function_call"]


# ----------------------------------------------------------------------------------------------
# the openai SDK


def test_create_text_with_reasoning(client: openai.OpenAI) -> None:
    response = client.responses.create(model=MODEL, input="Hi there")
    assert response.status == "completed"
    assert response.output_text == behaviour.GREETING
    assert reasoning_text(response).strip() == behaviour.REASONING
    assert [item.type for item in response.output] == ["reasoning", "message"]
    assert response.usage is not None
    assert response.usage.output_tokens == behaviour.GENERATED_TOKENS
    assert response.usage.input_tokens > 0


def test_stream_events(client: openai.OpenAI) -> None:
    events = list(client.responses.create(model=MODEL, input="Hi there", stream=True))
    types = [e.type for e in events]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == behaviour.GREETING
    # llama.cpp streams one token per chunk: the text arrives in many deltas, not one
    assert types.count("response.output_text.delta") > 5
    assert any(t.startswith("response.reasoning") for t in types)
    final = events[-1].response
    assert final.output_text == behaviour.GREETING


def test_stream_helper(client: openai.OpenAI) -> None:
    with client.responses.stream(model=MODEL, input="Hi there") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == behaviour.GREETING
    assert final.output_text == behaviour.GREETING
    assert final.status == "completed"


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_function_tool_loop_with_previous_response_id(client: openai.OpenAI, stream: bool) -> None:
    def create(**kwargs: Any) -> Any:
        if not stream:
            return client.responses.create(model=MODEL, **kwargs)
        with client.responses.stream(model=MODEL, **kwargs) as s:
            return s.get_final_response()

    first = create(input="What is the weather in Paris?", tools=[WEATHER_TOOL])
    assert first.status == "completed"
    [call] = function_calls(first)
    assert call.name == "get_weather"
    assert json.loads(call.arguments) == behaviour.WEATHER_ARGUMENTS
    assert call.call_id
    assert first.output_text == ""  # the <tool_call> markup was parsed, none of it is text

    second = create(
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 21 C"}],
        tools=[WEATHER_TOOL],
    )
    assert second.status == "completed"
    assert function_calls(second) == []
    # the model answers this only when llama.cpp's prompt holds the tool result, so the bridge rebuilt
    # the conversation (call and output) from its store
    assert second.output_text == behaviour.AFTER_TOOL


def test_tool_choice_required_forces_a_call(client: openai.OpenAI) -> None:
    """After a tool result the model answers in text; `required` makes llama.cpp's grammar force a call."""
    first = client.responses.create(model=MODEL, input="What is the weather in Paris?", tools=[WEATHER_TOOL])
    [call] = function_calls(first)
    follow_up = [{"type": "function_call_output", "call_id": call.call_id, "output": "Sunny"}]
    free = client.responses.create(
        model=MODEL, previous_response_id=first.id, input=follow_up, tools=[WEATHER_TOOL]
    )
    assert function_calls(free) == [] and free.output_text == behaviour.AFTER_TOOL
    forced = client.responses.create(
        model=MODEL,
        previous_response_id=first.id,
        input=follow_up,
        tools=[WEATHER_TOOL],
        tool_choice="required",
    )
    calls = function_calls(forced)
    assert len(calls) == 1, forced.output
    assert calls[0].name == "get_weather"
    assert json.loads(calls[0].arguments) == behaviour.WEATHER_ARGUMENTS
    assert forced.status == "completed"


def test_named_tool_choice_calls_the_named_tool(client: openai.OpenAI) -> None:
    """llama-server reads only the strings auto/none/required and treats a named choice as auto, where
    this model calls get_weather; the profile's `named_tool_choice = "required"` sends only the named
    tool with `required`, so the call must be get_time."""
    response = client.responses.create(
        model=MODEL,
        input="What time is it in Paris?",
        tools=[WEATHER_TOOL, TIME_TOOL],
        tool_choice={"type": "function", "name": "get_time"},
    )
    calls = function_calls(response)
    assert [c.name for c in calls] == ["get_time"], [(c.name, c.arguments) for c in calls]
    assert json.loads(calls[0].arguments) == behaviour.WEATHER_ARGUMENTS


def test_named_tool_choice_control_without_it(client: openai.OpenAI) -> None:
    """The control for the test above: with both tools and `auto` this model calls get_weather."""
    response = client.responses.create(
        model=MODEL, input="What time is it in Paris?", tools=[WEATHER_TOOL, TIME_TOOL], tool_choice="auto"
    )
    assert [c.name for c in function_calls(response)] == ["get_weather"]


def test_tool_choice_none_gives_text_not_tool_markup(client: openai.OpenAI) -> None:
    """llama-server keeps the tools in the prompt for `none`, and this model then writes raw
    `<tool_call>` markup as text; the profile's `tool_choice_none = "drop_tools"` leaves the tools out,
    so the answer is the plain greeting."""
    response = client.responses.create(
        model=MODEL, input="Hi there", tools=[WEATHER_TOOL], tool_choice="none"
    )
    assert function_calls(response) == []
    assert "<tool_call>" not in response.output_text
    assert response.output_text == behaviour.GREETING


def test_max_output_tokens_gives_incomplete(client: openai.OpenAI) -> None:
    response = client.responses.create(model=MODEL, input="Hi there", max_output_tokens=16)
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    # llama.cpp counts the reasoning tokens in the limit: 6 of them, then 10 tokens of the greeting
    assert response.output_text
    assert behaviour.GREETING.startswith(response.output_text)
    assert response.output_text != behaviour.GREETING
    assert response.usage is not None and response.usage.output_tokens == 16


def test_max_output_tokens_streamed_ends_incomplete(client: openai.OpenAI) -> None:
    """Streamed, the same ends in `response.incomplete` (the SDK's stream helper accepts only
    `response.completed`, so the raw event stream is read)."""
    events = list(client.responses.create(model=MODEL, input="Hi there", max_output_tokens=16, stream=True))
    assert events[-1].type == "response.incomplete"
    final = events[-1].response
    assert final.status == "incomplete"
    assert final.incomplete_details is not None and final.incomplete_details.reason == "max_output_tokens"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text and behaviour.GREETING.startswith(text) and text != behaviour.GREETING


class City(BaseModel):
    city: str
    population: int


def test_json_schema_structured_output(client: openai.OpenAI) -> None:
    """llama.cpp turns the schema into a grammar; whatever the model prefers, the answer must parse."""
    parsed = client.responses.parse(
        model=MODEL, input="The largest city of France, as JSON.", text_format=City
    )
    assert parsed.status == "completed"
    assert isinstance(parsed.output_parsed, City)
    raw = json.loads(parsed.output_text)
    assert set(raw) == {"city", "population"}
    again = client.responses.parse(
        model=MODEL, input="The largest city of France, as JSON.", text_format=City
    )
    assert again.output_text == parsed.output_text  # greedy: the same answer every time


def test_json_schema_streamed(client: openai.OpenAI) -> None:
    schema = City.model_json_schema()
    schema["additionalProperties"] = False
    text_format = {"type": "json_schema", "name": "city", "schema": schema, "strict": True}
    with client.responses.stream(
        model=MODEL, input="France's largest city", text={"format": text_format}
    ) as s:
        final = s.get_final_response()
    assert final.status == "completed"
    City.model_validate_json(final.output_text)


CONTEXT_OVERFLOW_INPUT = "hello " * 20_000  # about 20,000 tokens, over the server's 16,384


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_context_overflow_is_context_length_exceeded(client: openai.OpenAI, stream: bool) -> None:
    """llama-server answers 400 `exceed_context_size_error`; clients (Codex among them) act on OpenAI's
    `context_length_exceeded` code, so the bridge must answer with that code and type."""
    with pytest.raises(openai.BadRequestError) as caught:
        if stream:
            with client.responses.stream(model=MODEL, input=CONTEXT_OVERFLOW_INPUT) as s:
                s.get_final_response()
        else:
            client.responses.create(model=MODEL, input=CONTEXT_OVERFLOW_INPUT)
    error = caught.value.body
    assert isinstance(error, dict), error
    assert caught.value.status_code == 400
    assert error.get("code") == "context_length_exceeded", error
    assert error.get("type") == "invalid_request_error", error
    assert error.get("message")


def test_context_overflow_raw_http_shape(bridge: BridgeHandle) -> None:
    """The same over raw HTTP: exactly OpenAI's envelope, nothing of llama.cpp's own fields."""
    answer = httpx.post(
        bridge.url + "/responses", json={"model": MODEL, "input": CONTEXT_OVERFLOW_INPUT}, timeout=120
    )
    assert answer.status_code == 400
    body = answer.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["code"] == "context_length_exceeded"
    assert body["error"]["type"] == "invalid_request_error"


# ----------------------------------------------------------------------------------------------
# the Agents SDK


def test_agents_sdk_tool_using_agent(bridge: BridgeHandle) -> None:
    cities: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """Current weather for a city."""
        cities.append(city)
        return f"Sunny in {city}"

    async def main() -> Any:
        async with AsyncOpenAI(base_url=bridge.url, api_key="sk-agents", max_retries=0, timeout=120) as api:
            agent = Agent(
                name="weather",
                instructions="Answer weather questions with the tool.",
                tools=[get_weather],
                model=OpenAIResponsesModel(model=MODEL, openai_client=api),
            )
            return await asyncio.wait_for(
                Runner.run(
                    agent, "What is the weather in Paris?", run_config=RunConfig(tracing_disabled=True)
                ),
                180,
            )

    result = asyncio.run(main())
    assert cities == ["Paris"]  # the tool really ran, with the model's argument
    assert result.final_output == behaviour.AFTER_TOOL
    kinds = [item.type for item in result.new_items]
    assert "tool_call_item" in kinds and "tool_call_output_item" in kinds


# ----------------------------------------------------------------------------------------------
# Codex CLI


def test_codex_exec_shell_turn(bridge: BridgeHandle, tmp_path: Path) -> None:
    run = run_codex(bridge.url, "Create the file, please.", tmp_path, model=MODEL, timeout=300)
    assert run.returncode == 0, run.describe()
    assert run.failures() == [], run.describe()
    assert any(event.get("type") == "turn.completed" for event in run.events), run.describe()
    commands = run.items("command_execution")
    assert len(commands) == 1, run.describe()
    assert behaviour.SHELL_COMMAND in commands[0]["command"], run.describe()
    assert commands[0]["exit_code"] == 0, run.describe()
    assert (run.workdir / behaviour.SHELL_FILE).is_file(), run.describe()  # Codex really ran it
    assert run.last_message.strip() == behaviour.AFTER_TOOL, run.describe()


# ----------------------------------------------------------------------------------------------
# the conformance check


def test_responses_bridge_check_passes(bridge: BridgeHandle) -> None:
    """`responses-bridge check` against the bridge in front of llama.cpp, every scenario (image-input
    included: the test server carries the tiny vision projector, tests/support/llamacpp/make_mmproj.py)."""
    parser = argparse.ArgumentParser()
    check.add_arguments(parser)
    out, err = io.StringIO(), io.StringIO()
    args = parser.parse_args(["--base-url", bridge.url, "--model", MODEL, "--json", "--timeout", "120"])
    code = check.run(args, out=out, err=err)
    report = json.loads(out.getvalue())
    failed = {s["name"]: s for s in report["scenarios"] if s["result"] not in ("pass", "skip")}
    passed = {s["name"] for s in report["scenarios"] if s["result"] == "pass"}
    assert code == 0 and not failed, json.dumps(failed, indent=1)[:6000] + err.getvalue()
    assert {"text-stream", "tool-call-stream", "tool-output", "structured-output", "image-input"} <= passed
