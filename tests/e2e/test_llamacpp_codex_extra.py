"""The real Codex CLI over the bridge's WebSocket mode, in front of a real llama.cpp `llama-server`
(build b11434, the tiny Qwen3 model of tests/support/llamacpp/, whose answers are fixed:
`exec_command` with `touch llama.txt` when Codex's tools are offered and no tool result is in the
prompt, "Here is what the tool returned" once one is).

With `supports_websockets = true` Codex opens `ws://…/v1/responses` and sends each request as a
`response.create` message; it falls back to HTTP for the session when the socket fails, and the turn
would then still pass. So, as in tests/e2e/test_codex_websocket.py, the bridge's ASGI boundary is
recorded: the turn passes only if it went over the socket with no HTTP request at all, and the tool
output went back as a `previous_response_id` continuation on a bridge with no store (only the
connection's memory could hold the conversation llama.cpp needs to see the call).

Prerequisites: the llama.cpp build (skipped without it on a developer machine, failed under CI) and
`npm ci --prefix tests/node`.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import bridge_config
from tests.e2e.test_codex_websocket import CONFIG, TransportRecorder
from tests.e2e.test_llamacpp import profile_options
from tests.support.clients_codex import codex_binary, codex_env
from tests.support.llamacpp import behaviour
from tests.support.llamacpp.launcher import LlamaServer, require_build, run_llama_server
from tests.support.servers import RunningServer, run_app

API_KEY = "sk-codex-llama-ws"
MODEL = behaviour.MODEL


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    build = require_build()
    with run_llama_server(build, tmp_path_factory.mktemp("llama-server")) as server:
        yield server


@pytest.fixture
def recorded_bridge(llama: LlamaServer) -> Iterator[tuple[TransportRecorder, RunningServer]]:
    from server.app import create_app

    options, _unknown = profile_options("llamacpp")
    config = bridge_config(
        llama.url,
        upstream={"name": "llamacpp", "profile": "llamacpp", "options": options},
        api_keys=(API_KEY,),
        store="none",
    )
    recorder = TransportRecorder(create_app(config))
    with run_app(recorder) as running:
        yield recorder, running


def run_codex_ws(base_url: str, prompt: str, tmp_path: Path, timeout: float = 300.0) -> tuple[int, str, list[dict[str, Any]], str]:
    """One `codex exec` turn with the WebSocket provider config of tests/e2e/test_codex_websocket.py,
    on the tiny model's name; returns exit code, output, events and the last message."""
    codex_home, home, workdir = tmp_path / "codex-home", tmp_path / "home", tmp_path / "work"
    for directory in (codex_home, home, workdir):
        directory.mkdir(parents=True, exist_ok=True)
    config = CONFIG.replace('model = "fixture-scripted"', f'model = "{MODEL}"', 1)
    assert f'model = "{MODEL}"' in config
    (codex_home / "config.toml").write_text(config.format(base_url=base_url), encoding="utf-8")
    last_message = tmp_path / "last-message.txt"
    command = [str(codex_binary()), "exec", "--json", "--ephemeral", "--strict-config", "--skip-git-repo-check",
               "--sandbox", "danger-full-access", "--cd", str(workdir), "--output-last-message", str(last_message),
               prompt]  # fmt: skip
    done = subprocess.run(command, cwd=workdir, env=codex_env(home, codex_home, base_url, API_KEY),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, check=False)  # fmt: skip
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    text = last_message.read_text(encoding="utf-8") if last_message.exists() else ""
    return done.returncode, done.stdout[-6000:] + done.stderr[-4000:], events, text


def test_codex_shell_turn_over_the_websocket_on_llama(
    recorded_bridge: tuple[TransportRecorder, RunningServer], tmp_path: Path
) -> None:
    recorder, bridge = recorded_bridge
    returncode, output, events, last_message = run_codex_ws(bridge.url + "/v1", "Create the file, please.", tmp_path)

    assert returncode == 0, output
    assert not [e for e in events if e.get("type") in ("turn.failed", "error")], output
    assert any(e.get("type") == "turn.completed" for e in events), output
    commands = [e["item"] for e in events
                if e.get("type") == "item.completed" and e["item"]["type"] == "command_execution"]  # fmt: skip
    assert len(commands) == 1, output
    assert behaviour.SHELL_COMMAND in commands[0]["command"] and commands[0]["exit_code"] == 0, output
    assert (tmp_path / "work" / behaviour.SHELL_FILE).is_file(), output  # Codex really ran llama's call
    # llama.cpp answers this only with the tool result in its prompt
    assert last_message.strip() == behaviour.AFTER_TOOL, output

    # It went over the socket: Codex's handshake, its messages, and no HTTP request at all.
    assert recorder.http_posts == [], recorder.http_posts
    assert recorder.handshakes, "Codex never opened the WebSocket"
    assert all(h.get("openai-beta") == "responses_websockets=2026-02-06" for h in recorder.handshakes)
    assert all(h.get("authorization") == f"Bearer {API_KEY}" for h in recorder.handshakes)
    creates = [m for m in recorder.messages if m.get("type") == "response.create"]
    assert len(creates) >= 2, [m.get("type") for m in recorder.messages]
    assert creates[0].get("generate") is False, creates[0].keys()  # the warm-up, no backend call
    assert creates[1].get("previous_response_id") == recorder.completed_ids[0]
    follow = [m for m in creates if m.get("previous_response_id")]
    outputs = [i for i in follow[-1]["input"] if i.get("type") == "function_call_output"]
    assert len(outputs) == 1, follow[-1]["input"]
    assert not any(i.get("type") == "message" and i.get("role") == "developer" for i in follow[-1]["input"]), (
        "a continuation resends only the new items, not Codex's system prompt"
    )
