"""The real Codex CLI running a shell-tool turn over the bridge's WebSocket mode (docs/websocket.md).

With `supports_websockets = true` on its provider, Codex 0.169.0 opens `ws://…/v1/responses` and
sends each request as a `response.create` message; it falls back to HTTP for the session when the
socket fails, and the turn would then still pass. So the test records, at the bridge's ASGI
boundary, every WebSocket message Codex sent and every `POST /v1/responses`: the turn passes only
if it went over the socket, with no HTTP request at all, and continued by `previous_response_id`.

Prerequisite: `npm ci --prefix tests/node`.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tests.conftest import bridge_config
from tests.support.clients_backend import chat_requests_with, message_text
from tests.support.clients_codex import codex_binary, codex_config, codex_env
from tests.support.servers import RunningServer, run_app

SHELL_TOOL = "exec_command"
API_KEY = "sk-codex-ws"

class TransportRecorder:
    """In front of the bridge: the handshakes, the client's WebSocket messages, the HTTP POSTs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.handshakes: list[dict[str, str]] = []
        self.messages: list[dict[str, Any]] = []
        self.http_posts: list[str] = []
        self.completed_ids: list[str] = []  # of the response.completed events the bridge sent

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            self.http_posts.append(scope["path"])
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        self.handshakes.append({k.decode().lower(): v.decode() for k, v in scope["headers"]})

        async def recording() -> Message:
            message = await receive()
            if message["type"] == "websocket.receive" and message.get("text"):
                self.messages.append(orjson.loads(message["text"]))
            return message

        async def sending(message: Message) -> None:
            text = message.get("text") if message["type"] == "websocket.send" else None
            if text and text.startswith('{"type":"response.completed"'):
                self.completed_ids.append(orjson.loads(text)["response"]["id"])
            await send(message)

        await self.app(scope, recording, sending)


@pytest.fixture
def recorded_bridge(backend_url: str) -> Iterator[tuple[TransportRecorder, RunningServer]]:
    from server.app import create_app

    recorder = TransportRecorder(create_app(bridge_config(backend_url, api_keys=(API_KEY,), store="none")))
    with run_app(recorder) as running:
        yield recorder, running


def run_codex_ws(base_url: str, prompt: str, tmp_path: Path, timeout: float = 120.0) -> tuple[int, str, list[dict[str, Any]]]:
    codex_home, home, workdir = tmp_path / "codex-home", tmp_path / "home", tmp_path / "work"
    for directory in (codex_home, home, workdir):
        directory.mkdir(parents=True, exist_ok=True)
    (codex_home / "config.toml").write_text(codex_config(base_url, "fixture-scripted", websockets=True), encoding="utf-8")
    command = [str(codex_binary()), "exec", "--json", "--ephemeral", "--strict-config", "--skip-git-repo-check",
               "--sandbox", "danger-full-access", "--cd", str(workdir), prompt]  # fmt: skip
    done = subprocess.run(command, cwd=workdir, env=codex_env(home, codex_home, base_url, API_KEY),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, check=False)  # fmt: skip
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return done.returncode, done.stdout + done.stderr, events


def test_codex_runs_a_shell_turn_over_the_websocket(
    recorded_bridge: tuple[TransportRecorder, RunningServer], tmp_path: Path,
    backend_requests: Callable[[], list[dict[str, Any]]],
) -> None:  # fmt: skip
    recorder, bridge = recorded_bridge
    token = secrets.token_hex(6)
    marker = f"ws-marker-{token}"
    command = f"printf 'ws-%s-%s\\n' marker {token} | tee proof.txt"
    prompt = f"Run the marker command.\n@call {SHELL_TOOL} {json.dumps({'cmd': command})}"

    returncode, output, events = run_codex_ws(bridge.url + "/v1", prompt, tmp_path)

    assert returncode == 0, output[-6000:]
    assert not [e for e in events if e.get("type") in ("turn.failed", "error")], output[-6000:]
    commands = [e["item"] for e in events if e.get("type") == "item.completed" and e["item"]["type"] == "command_execution"]
    assert len(commands) == 1 and commands[0]["exit_code"] == 0, output[-6000:]
    assert (tmp_path / "work" / "proof.txt").read_text().strip() == marker
    answers = [e["item"]["text"] for e in events if e.get("type") == "item.completed" and e["item"]["type"] == "agent_message"]
    assert answers and marker in answers[-1] and answers[-1].startswith("Tool results:"), output[-6000:]

    # It went over the socket: Codex's handshake, its messages, and no HTTP request at all.
    assert recorder.http_posts == [], recorder.http_posts
    assert recorder.handshakes, "Codex never opened the WebSocket"
    assert all(h.get("openai-beta") == "responses_websockets=2026-02-06" for h in recorder.handshakes)
    assert all(h.get("authorization") == f"Bearer {API_KEY}" for h in recorder.handshakes)
    creates = [m for m in recorder.messages if m.get("type") == "response.create"]
    assert len(creates) >= 2, [m.get("type") for m in recorder.messages]
    # Codex warms up first (no backend call), then continues from the warm-up's id.
    assert creates[0].get("generate") is False, creates[0].keys()
    assert creates[1].get("previous_response_id") == recorder.completed_ids[0]
    # The tool output went back as a continuation: only the new items, on the connection's memory
    # (the bridge runs with no store, so nothing but the connection could have remembered).
    follow = [m for m in creates if m.get("previous_response_id")]
    assert follow, "Codex did not continue by previous_response_id"
    outputs = [i for i in follow[-1]["input"] if i.get("type") == "function_call_output"]
    assert len(outputs) == 1 and marker in json.dumps(outputs[0]), follow[-1]["input"]
    assert not any(i.get("type") == "message" and i.get("role") == "developer" for i in follow[-1]["input"]), (
        "a continuation resends only the new items, not Codex's system prompt"
    )

    # The backend saw the whole conversation both times (rebuilt by the bridge for the second).
    requests = chat_requests_with(backend_requests(), token)
    assert len(requests) == 2, [r["messages"][-2:] for r in requests]
    tool_messages = [m for m in requests[1]["messages"] if m["role"] == "tool"]
    assert len(tool_messages) == 1 and marker in message_text(tool_messages[0])
    assert requests[1]["messages"][0] == requests[0]["messages"][0], "the system prompt came from the memory"
