"""Codex CLI, the real one from npm, completes turns through the bridge.

Codex is the most demanding Responses client we know: it streams always, sends `store: false` with
the whole history each time, asks for `reasoning.encrypted_content`, sends namespace tools, builds
its transcript only from `response.output_item.done`, and a turn without an item ends silently
empty with exit code 0. So each test asserts on what Codex *printed as its final answer*, and on
what the bridge sent to the chat backend, never just on the exit code.

The fixture chat backend is scripted by directive lines in the user's prompt (`@call`, `@reason`,
`@text`; see docs/architecture.md). Prerequisite: `npm ci --prefix tests/node`.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.clients_backend import chat_requests_with, message_text
from tests.support.clients_codex import CodexRun, run_codex
from translator.validate import assert_valid, format_violations, parse_sse

SHELL_TOOL = "exec_command"  # Codex 0.169.0's shell: a function tool taking {"cmd": "..."}


def assert_clean_turn(run: CodexRun) -> None:
    """Codex exited 0 and reported neither a stream error nor a failed turn."""
    assert run.returncode == 0, run.describe()
    assert not run.failures(), run.describe()
    assert any(event.get("type") == "turn.completed" for event in run.events), run.describe()


def test_plain_text_turn(
    bridge_url: str, tmp_path: Path, backend_requests: Callable[[], list[dict[str, Any]]]
) -> None:
    token = secrets.token_hex(6)
    answer = f"Plain answer {token} from the fixture backend."
    run = run_codex(bridge_url, f"Say the line.\n@text {answer}", tmp_path)

    assert_clean_turn(run)
    # Exactly the scripted text: an `Echo: …` answer would mean the directive never reached the backend.
    assert run.last_message.strip() == answer, run.describe()
    assert [item["text"] for item in run.items("agent_message")] == [answer], run.describe()

    requests = chat_requests_with(backend_requests(), token)
    assert len(requests) == 1, requests
    chat = requests[0]
    assert chat["stream"] is True
    # Codex's tools arrive as chat function tools, its shell among them.
    names = {tool["function"]["name"] for tool in chat.get("tools", []) if tool.get("type") == "function"}
    assert SHELL_TOOL in names, chat.get("tools")
    # Codex's system prompt comes as developer messages; the user's prompt is the last message.
    assert chat["messages"][-1]["role"] == "user"
    assert token in message_text(chat["messages"][-1])


def test_shell_tool_turn(
    bridge_url: str, tmp_path: Path, backend_requests: Callable[[], list[dict[str, Any]]]
) -> None:
    """The model calls Codex's shell, Codex runs it, sends the output back, and the answer arrives."""
    token = secrets.token_hex(6)
    # The printed marker never appears literally in the prompt, so finding it proves the command ran.
    marker = f"codex-marker-{token}"
    command = f"printf 'codex-%s-%s\\n' marker {token} | tee proof.txt"
    prompt = f"Run the marker command.\n@call {SHELL_TOOL} {json.dumps({'cmd': command})}"
    assert marker not in prompt

    run = run_codex(bridge_url, prompt, tmp_path)

    assert_clean_turn(run)
    commands = run.items("command_execution")
    assert len(commands) == 1, run.describe()
    assert commands[0]["exit_code"] == 0, run.describe()
    assert marker in commands[0]["aggregated_output"], run.describe()
    assert (run.workdir / "proof.txt").read_text().strip() == marker
    # The fixture backend answers "Tool results: <tool output>" once it sees the tool message.
    assert "Tool results:" in run.last_message, run.describe()
    assert marker in run.last_message, run.describe()

    # Two round trips through the bridge: the tool call, then the answer to its output.
    requests = chat_requests_with(backend_requests(), token)
    assert len(requests) == 2, [r["messages"][-2:] for r in requests]
    first, second = requests
    assert first["messages"][-1]["role"] == "user"
    # store is false: Codex resends the whole history, which the bridge turns back into chat messages.
    assistant = [m for m in second["messages"] if m["role"] == "assistant" and m.get("tool_calls")]
    assert len(assistant) == 1, second["messages"]
    call = assistant[0]["tool_calls"][0]
    assert call["function"]["name"] == SHELL_TOOL
    assert json.loads(call["function"]["arguments"])["cmd"] == command
    tool_messages = [m for m in second["messages"] if m["role"] == "tool"]
    assert len(tool_messages) == 1, second["messages"]
    assert tool_messages[0]["tool_call_id"] == call["id"]
    assert marker in message_text(tool_messages[0])


def test_reasoning_round_trip(
    bridge_url: str, tmp_path: Path, backend_requests: Callable[[], list[dict[str, Any]]]
) -> None:
    """A reasoning model's thoughts survive Codex's stateless loop.

    Codex asks for `reasoning.encrypted_content` and sends reasoning items back verbatim on the next
    request; the bridge must unpack what it packed there and hand it back to the backend (DeepSeek
    and vLLM require the reasoning of a tool-calling turn on the following request).
    """
    token = secrets.token_hex(6)
    thought = f"I should run the command first {token}."
    marker = f"reasoned-{token}"
    command = f"printf 'reasoned-%s\\n' {token}"
    prompt = f"Think, then run it.\n@reason {thought}\n@call {SHELL_TOOL} {json.dumps({'cmd': command})}"

    run = run_codex(bridge_url, prompt, tmp_path)

    assert_clean_turn(run)
    assert marker in run.last_message, run.describe()
    reasoning_items = run.items("reasoning")
    assert reasoning_items, run.describe()
    assert any(token in item.get("text", "") for item in reasoning_items), run.describe()

    requests = chat_requests_with(backend_requests(), token)
    assert len(requests) == 2, [r["messages"][-2:] for r in requests]
    assistant = [m for m in requests[1]["messages"] if m["role"] == "assistant" and m.get("tool_calls")]
    assert len(assistant) == 1, requests[1]["messages"]
    # The default profile replays reasoning as DeepSeek's `reasoning_content`.
    assert assistant[0].get("reasoning_content") == thought, assistant[0]


def test_namespace_tool_call(
    bridge_url: str, tmp_path: Path, backend_requests: Callable[[], list[dict[str, Any]]]
) -> None:
    """A call to a tool inside one of Codex's namespace tools reaches Codex's handler.

    Chat has no namespaces, so the bridge flattens `multi_agent_v1` + `close_agent` into one chat
    function name; the call must come back as `{"name": "close_agent", "namespace": "multi_agent_v1"}`
    or Codex answers `unsupported call: …` without running anything. `close_agent` on an id that is
    not a UUID fails fast inside Codex's handler, which is harmless and proves the dispatch worked.
    """
    token = secrets.token_hex(6)
    chat_name = "multi_agent_v1__close_agent"
    prompt = f"Close agent {token}.\n@call {chat_name} {json.dumps({'target': f'no-such-agent-{token}'})}"

    run = run_codex(bridge_url, prompt, tmp_path)

    assert_clean_turn(run)
    assert "unsupported call" not in run.last_message, run.describe()
    assert f"invalid agent id no-such-agent-{token}" in run.last_message, run.describe()

    requests = chat_requests_with(backend_requests(), token)
    assert len(requests) == 2
    offered = {tool["function"]["name"] for tool in requests[0]["tools"] if tool.get("type") == "function"}
    assert chat_name in offered, sorted(offered)
    echoed = [m for m in requests[1]["messages"] if m["role"] == "assistant" and m.get("tool_calls")]
    assert [call["function"]["name"] for call in echoed[0]["tool_calls"]] == [chat_name]


def test_bridge_api_key(
    make_bridge: Callable[..., Any], tmp_path: Path, backend_requests: Callable[[], list[dict[str, Any]]]
) -> None:
    """Codex's `env_key` is the bridge's `--api-key`; a wrong one is a clear 401, never a backend call."""
    key = "sk-bridge-" + secrets.token_hex(8)
    bridge = make_bridge(api_keys=(key,))
    token = secrets.token_hex(6)
    answer = f"Authorised {token}."

    refused = run_codex(bridge.url, f"@text {answer}", tmp_path / "wrong", api_key="sk-wrong-key-0000")
    assert refused.returncode != 0, refused.describe()
    failure = " ".join(str(event) for event in refused.failures())
    assert "401" in failure, refused.describe()
    assert key not in refused.stdout + refused.stderr  # the secret never echoes back
    assert chat_requests_with(backend_requests(), token) == []

    accepted = run_codex(bridge.url, f"@text {answer}", tmp_path / "right", api_key=key)
    assert_clean_turn(accepted)
    assert accepted.last_message.strip() == answer, accepted.describe()


def test_backend_error_mid_stream(bridge_url: str, tmp_path: Path) -> None:
    """A backend that fails after the stream started: Codex gets `response.failed` with the backend's
    message and fails the turn (non-zero exit), instead of hanging or reporting success."""
    run = run_codex(bridge_url, "Say something long.", tmp_path, model="chaos:midstream-error", timeout=60)

    assert run.returncode != 0, run.describe()
    failed = [event for event in run.events if event.get("type") == "turn.failed"]
    assert len(failed) == 1, run.describe()
    assert "the model crashed mid-stream" in failed[0]["error"]["message"], run.describe()


def recorded_codex_request() -> tuple[dict[str, Any], dict[str, str]]:
    """The request Codex 0.169.0 really sent (tests/support/data/codex_request.json): body and headers."""
    recorded = json.loads((Path(__file__).resolve().parents[1] / "support" / "data" / "codex_request.json").read_text(encoding="utf-8"))
    headers = {k: v for k, v in recorded.pop("_headers").items() if k != "authorization"}
    recorded.pop("_comment", None)
    return recorded, headers


def first_turn_variant(body: dict[str, Any], prompt: str) -> dict[str, Any]:
    """The recorded request cut back to its first turn, with another user prompt."""
    items = [item for item in body["input"] if item.get("type") == "message"]
    items[-1] = {**items[-1], "content": [{"type": "input_text", "text": prompt}]}
    return {**body, "input": items}


@pytest.mark.parametrize("variant", ["tool_follow_up", "reasoning_and_call"])
def test_bridge_stream_for_codex_request(bridge_url: str, variant: str) -> None:
    """What the bridge streams for Codex's real request obeys the event grammar, and every output item
    is delivered whole in `response.output_item.done` (the only place Codex reads items from)."""
    body, headers = recorded_codex_request()
    if variant == "reasoning_and_call":
        call = json.dumps({"cmd": "echo hi"})
        body = first_turn_variant(body, f"Think.\n@reason Consider it.\n@call {SHELL_TOOL} {call}")
    with httpx.Client(timeout=30) as client:
        response = client.post(f"{bridge_url}/responses", json=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    raw = response.content
    events, framing = parse_sse(raw)
    assert not framing, format_violations(framing)
    assert_valid(events, body, raw=raw)

    completed = [event for event in events if event["type"] == "response.completed"]
    assert len(completed) == 1
    output = completed[0]["response"]["output"]
    done_items = [event["item"] for event in events if event["type"] == "response.output_item.done"]
    assert done_items == output
    kinds = [item["type"] for item in output]
    if variant == "tool_follow_up":
        assert kinds == ["message"]
        assert output[0]["content"][0]["text"].startswith("Tool results:")
    else:
        assert kinds == ["reasoning", "function_call"]
        # Codex asked for reasoning.encrypted_content: without it the reasoning cannot come back.
        assert output[0]["encrypted_content"]
        assert output[1]["name"] == SHELL_TOOL and json.loads(output[1]["arguments"]) == {"cmd": "echo hi"}
