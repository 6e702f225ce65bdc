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
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from starlette.requests import Request
from starlette.responses import StreamingResponse

from tests.e2e.test_codex_websocket import TransportRecorder
from tests.e2e.test_compaction_codex import _TriggerWatch
from tests.e2e.test_llamacpp import llama_config
from tests.support.clients_codex import codex_binary, codex_config, codex_env
from tests.support.llamacpp import behaviour
from tests.support.llamacpp.launcher import LlamaServer
from tests.support.servers import RunningServer, run_app

API_KEY = "sk-codex-llama-ws"
MODEL = behaviour.MODEL


@pytest.fixture
def recorded_bridge(llama: LlamaServer) -> Iterator[tuple[TransportRecorder, RunningServer]]:
    from server.app import create_app

    config = llama_config(llama.url, api_keys=(API_KEY,), store="none")
    recorder = TransportRecorder(create_app(config))
    with run_app(recorder) as running:
        yield recorder, running


def run_codex_ws(base_url: str, prompt: str, tmp_path: Path, timeout: float = 300.0) -> tuple[int, str, list[dict[str, Any]], str]:
    """One `codex exec` turn with the WebSocket provider config of tests/e2e/test_codex_websocket.py,
    on the tiny model's name; returns exit code, output, events and the last message."""
    codex_home, home, workdir = tmp_path / "codex-home", tmp_path / "home", tmp_path / "work"
    for directory in (codex_home, home, workdir):
        directory.mkdir(parents=True, exist_ok=True)
    (codex_home / "config.toml").write_text(codex_config(base_url, MODEL, websockets=True), encoding="utf-8")
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


# ----------------------------------------------------------------------------------------------
# Codex's remote compaction (v2) over the WebSocket, against llama.cpp


class ChatRecorder:
    """A pass-through proxy in front of llama-server recording each chat request body the bridge
    sent, so the test can read what llama.cpp was asked (the summary request, the expanded summary)."""

    def __init__(self, upstream_root: str) -> None:
        self.upstream_root = upstream_root
        self.bodies: list[dict[str, Any]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        body = await request.body()
        if request.url.path.endswith("/chat/completions"):
            self.bodies.append(orjson.loads(body))
        client = httpx.AsyncClient(base_url=self.upstream_root, timeout=300)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        upstream = await client.send(
            client.build_request(request.method, request.url.path, content=body, headers=headers), stream=True
        )

        async def relay() -> AsyncIterator[bytes]:
            try:
                async for chunk in upstream.aiter_raw():
                    yield chunk
            finally:
                await upstream.aclose()
                await client.aclose()

        passed = {k: v for k, v in upstream.headers.items()
                  if k.lower() not in ("content-length", "transfer-encoding", "connection")}  # fmt: skip
        await StreamingResponse(relay(), status_code=upstream.status_code, headers=passed)(scope, receive, send)


def _last_text(body: dict[str, Any]) -> str:
    content = body["messages"][-1].get("content")
    return content if isinstance(content, str) else " ".join(p.get("text", "") for p in content or [])


def _all_text(body: dict[str, Any]) -> str:
    return "\n".join(
        m["content"] if isinstance(m.get("content"), str) else " ".join(p.get("text", "") for p in m.get("content") or [])
        for m in body["messages"]
    )


def test_codex_remote_compaction_round_trips_over_the_websocket_on_llama(llama: LlamaServer, tmp_path: Path) -> None:
    """Codex (provider named `OpenAI`, `model_auto_compact_token_limit = 300`, WebSocket) compacts
    after the first tool call: `compaction_trigger` last → the bridge asks llama.cpp for the summary
    and answers exactly one `compaction` item → Codex sends it back with the retained user messages
    → the bridge expands it into the summary message llama.cpp sees, and llama.cpp answers.

    The turn cannot complete with this model: compaction drops the tool output, and the tiny model
    calls `exec_command` whenever no tool result is in its prompt, so Codex runs the tool again and
    (its prompt alone being over the 300-token limit) compacts again, round after round. The test
    therefore watches two full rounds and then stops Codex: what it checks is that each round of the
    compaction protocol worked against the real backend (no `turn.failed`, no `error`, Codex
    accepted the item every time and ran the tool after each compaction)."""
    from server.app import create_app

    proxy = ChatRecorder(llama.root)
    with run_app(proxy) as recorded_llama:
        config = llama_config(recorded_llama.url + "/v1", store="memory")
        watch = _TriggerWatch(create_app(config))
        with run_app(watch) as bridge:
            base_url = bridge.url + "/v1"
            codex_home, home, work = tmp_path / "codex-home", tmp_path / "home", tmp_path / "work"
            for directory in (codex_home, home, work):
                directory.mkdir(parents=True)
            (codex_home / "config.toml").write_text(
                codex_config(base_url, MODEL, provider_name="OpenAI", websockets=True, auto_compact_token_limit=300),
                encoding="utf-8",
            )
            command = [str(codex_binary()), "exec", "--json", "--ephemeral", "--strict-config",
                       "--skip-git-repo-check", "--sandbox", "danger-full-access", "--cd", str(work),
                       "Create the file, please."]  # fmt: skip
            codex = subprocess.Popen(command, cwd=work, env=codex_env(home, codex_home, base_url, "sk-codex-test"),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)  # fmt: skip
            try:
                deadline = time.monotonic() + 240
                while watch.items_back["websocket"] < 2 and codex.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.2)
                # let the sample after the second compaction finish (its tool call runs) before stopping
                time.sleep(3)
            finally:
                codex.terminate()
                try:
                    stdout, stderr = codex.communicate(timeout=20)
                except subprocess.TimeoutExpired:
                    codex.kill()
                    stdout, stderr = codex.communicate(timeout=10)
    log = stdout[-6000:] + stderr[-3000:]
    events = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    assert watch.items_back["websocket"] >= 2, (watch.triggers, watch.items_back, log)
    assert watch.triggers["websocket"] >= 2 and watch.triggers["http"] == watch.items_back["http"] == 0, log
    assert not [e for e in events if e.get("type") in ("turn.failed", "error")], log
    commands = [e["item"] for e in events
                if e.get("type") == "item.completed" and e["item"]["type"] == "command_execution"]  # fmt: skip
    assert len(commands) >= 2 and all(c["exit_code"] == 0 for c in commands), log
    assert all(behaviour.SHELL_COMMAND in c["command"] for c in commands), log
    assert (work / behaviour.SHELL_FILE).is_file()

    # what llama.cpp was asked: the summary of the session so far (the tool call in its transcript)...
    summaries = [b for b in proxy.bodies if _last_text(b).startswith("Transcript of the session to compact")]
    assert len(summaries) >= 2, [_last_text(b)[:80] for b in proxy.bodies]
    assert behaviour.SHELL_COMMAND in _last_text(summaries[0])
    assert "tools" not in summaries[0]
    # ...and the sample after it: the summary in place of the history, with Codex's tools again
    after = proxy.bodies[proxy.bodies.index(summaries[0]) + 1]
    prompt = _all_text(after)
    assert "[Context compacted by responses-bridge]" in prompt, prompt[-3000:]
    assert f"<summary>\n{behaviour.GREETING}" in prompt, prompt[-3000:]
    assert not any(m["role"] == "tool" for m in after["messages"])  # the tool output was compacted away
    assert after.get("tools")
